"""The Siamese distance network (step i of Banjac et al. 2021), its training and inference.

Both projections of a pair go through the same convolutional encoder; the estimated
distance between their orientations is the Euclidean distance between the two
embeddings, trained to regress ``d(q1, q2) = 2 arccos |<q1, q2>|`` (radians).  Because the
estimate is a distance between per-image embeddings, recovery embeds every image once
and gets any pair's distance for the cost of a subtraction.

For a map with a point group ``G`` (:class:`TrainingMap`'s ``symmetry``) the images at ``A`` and
``A g`` (``g`` in ``G``) are identical, so the target is the distance up to the group,
``min_g d(q1, q2 g)`` (:func:`tomolens.orient.symmetry.symmetric_distance`), with the group's
axes found on the map (:func:`tomolens.orient.symmetry.find_symmetry_frame`).

Training uses "batch-all" pairs: a batch holds ``batch_size`` projections of one map and
every pair among them (``B(B−1)/2``) contributes to the loss.  Projections come from the
simulator with viewing directions on one hemisphere (the paper's way round the mirror
ambiguity, see :mod:`tomolens.orient.rotations`), noise is added on the fly at a random
SNR, and every image is Fourier-resampled to the model's pixel size, centre-cropped or
padded to its input size and normalised to mean 0, standard deviation 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tomolens.jobs import Progress, relay
from tomolens.models.card import ModelCard
from tomolens.orient.project import simulate_projections
from tomolens.orient.rotations import geodesic_distance
from tomolens.orient.symmetry import (
    SYMMETRY_THRESHOLD,
    Symmetry,
    as_symmetry,
    expand_quats,
    find_symmetry_frame,
    symmetric_distance,
)

log = logging.getLogger(__name__)

ARCHITECTURE = "tomolens.orient.network:SiameseDistanceNet"


class SiameseDistanceNet(nn.Module):
    """Shared CNN encoder; ``forward(a, b)`` = ‖encode(a) − encode(b)‖ (radians).

    Parameters
    ----------
    input_size : int
        Side of the square input images, pixels (a multiple of 8).
    channels : sequence of int
        Channels of the four convolution blocks.
    embedding_dim : int
        Size of the embedding.
    """

    def __init__(self, input_size: int = 32, channels: Sequence[int] = (16, 32, 64, 128), embedding_dim: int = 32):
        super().__init__()
        if input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8; got {input_size}.")
        c1, c2, c3, c4 = channels
        self.input_size = input_size

        def block(cin, cout, k, pool):
            layers = [nn.Conv2d(cin, cout, k, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.features = nn.Sequential(
            *block(1, c1, 5, True), *block(c1, c2, 3, True), *block(c2, c3, 3, True), *block(c3, c4, 3, False)
        )
        side = input_size // 8
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c4 * side * side, 128), nn.ReLU(inplace=True), nn.Linear(128, embedding_dim)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of images (B, 1, S, S) or (B, S, S)."""
        if x.ndim == 3:
            x = x[:, None]
        return self.head(self.features(x))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.encode(a) - self.encode(b)).norm(dim=-1)


def resample_images(images: np.ndarray, pixel_size_A: float, target_pixel_A: float, size: int) -> np.ndarray:
    """Fourier-resample square images to ``target_pixel_A`` and centre-crop/pad to ``size``.

    Parameters
    ----------
    images : ndarray, shape (N, n, n)
    pixel_size_A, target_pixel_A : float
        Pixel sizes in Å.
    size : int
        Output side, pixels.

    Returns
    -------
    ndarray, float32, shape (N, size, size)
        Values keep their scale (a line integral stays comparable).
    """
    arr = np.asarray(images, dtype=np.float32)
    n = arr.shape[-1]
    n_new = max(2, int(round(n * pixel_size_A / target_pixel_A)))
    if n_new != n:
        spec = np.fft.fftshift(np.fft.fft2(arr), axes=(-2, -1))
        out_spec = np.zeros(arr.shape[:-2] + (n_new, n_new), np.complex64)
        k = min(n, n_new)
        a_in, a_out = n // 2 - k // 2, n_new // 2 - k // 2
        out_spec[..., a_out : a_out + k, a_out : a_out + k] = spec[..., a_in : a_in + k, a_in : a_in + k]
        arr = np.fft.ifft2(np.fft.ifftshift(out_spec, axes=(-2, -1))).real.astype(np.float32) * (n_new / n) ** 2
    out = np.zeros(arr.shape[:-2] + (size, size), np.float32)
    k = min(size, n_new)
    a_in, a_out = n_new // 2 - k // 2, size // 2 - k // 2
    out[..., a_out : a_out + k, a_out : a_out + k] = arr[..., a_in : a_in + k, a_in : a_in + k]
    return out


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-image zero mean, unit standard deviation (images (B, S, S))."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp(min=1e-6)
    return (x - mean) / std


@dataclass
class TrainingMap:
    """A map to train on: density (z, y, x), voxel size in Å, a name and its point group.

    ``symmetry`` is a group name (its axes are found on the map when training starts) or a
    :class:`tomolens.orient.symmetry.Symmetry` with its frame; ``"C1"``: none.
    """

    volume: np.ndarray
    voxel_size_A: float
    name: str
    symmetry: Symmetry | str = "C1"


@dataclass
class _Pool:
    images: torch.Tensor  # (P, S, S) clean, resampled
    quats: torch.Tensor  # (P, 4)
    signal_var: float
    name: str
    expanded: torch.Tensor  # (P, K, 4): every orientation times every element of the map's group
    symmetry: Symmetry


def map_symmetry(tmap: TrainingMap) -> Symmetry:
    """The training map's point group with its axes: as given, or found on the map for a bare name."""
    from tomolens.orient.project import pad_to_cube

    sym = as_symmetry(tmap.symmetry)
    if sym.name == "C1" or isinstance(tmap.symmetry, Symmetry):
        return sym
    found = find_symmetry_frame(pad_to_cube(np.asarray(tmap.volume, np.float32)), sym.name)
    log.info("%s: %s axes found, symmetry score %.2f", tmap.name, sym.name, found.score)
    if found.score < SYMMETRY_THRESHOLD:
        log.warning(
            "%s scores %.2f for %s symmetry (a map with it scores at least %.2f): it probably does not have "
            "it, and distances up to the group will mislead the network; `tomolens orient symmetry MAP` "
            "measures which it has",
            tmap.name,
            found.score,
            sym.name,
            SYMMETRY_THRESHOLD,
        )
    return found


def _make_pool(tmap: TrainingMap, n: int, seed: int, pixel_A: float, size: int) -> Generator[Progress, None, _Pool]:
    pset = yield from simulate_projections(tmap.volume, tmap.voxel_size_A, n, seed=seed, pad_factor=1.5)
    imgs = resample_images(pset.images, tmap.voxel_size_A, pixel_A, size)
    sym = map_symmetry(tmap)
    return _Pool(
        torch.from_numpy(imgs),
        torch.from_numpy(pset.quats),
        float(imgs.var(axis=(1, 2)).mean()),
        tmap.name,
        torch.from_numpy(expand_quats(pset.quats, sym)),
        sym,
    )


def _noisy_batch(
    pool: _Pool, idx: torch.Tensor, snr_range: tuple[float, float], clean_fraction: float, gen: torch.Generator
) -> torch.Tensor:
    x = pool.images[idx]
    lo, hi = np.log(snr_range[0]), np.log(snr_range[1])
    log_snr = lo + (hi - lo) * torch.rand(len(idx), generator=gen)
    sigma = torch.sqrt(pool.signal_var / torch.exp(log_snr))
    sigma[torch.rand(len(idx), generator=gen) < clean_fraction] = 0.0
    x = x + sigma[:, None, None] * torch.randn(x.shape, generator=gen)
    return standardise(x)


def pair_targets(quats: torch.Tensor, expanded: torch.Tensor) -> torch.Tensor:
    """Target distances (B, B) in radians between orientations up to their group: ``min_g d(q_i, q_j g)``.

    Parameters
    ----------
    quats : Tensor, shape (B, 4)
        Orientations.
    expanded : Tensor, shape (B, K, 4)
        Each orientation times each of the K group elements (K = 1: no symmetry).
    """
    dot = torch.einsum("id,jkd->ijk", quats, expanded).abs().amax(dim=-1).clamp(max=1.0)
    return 2.0 * torch.arccos(dot)


def train_distance_model(
    maps: Sequence[TrainingMap],
    validation_maps: Sequence[TrainingMap] = (),
    pixel_size_A: float = 8.5,
    input_size: int = 32,
    projections_per_map: int = 1500,
    steps: int = 3000,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    snr_range: tuple[float, float] = (0.1, 10.0),
    clean_fraction: float = 0.25,
    max_minutes: float | None = None,
    seed: int = 0,
    name: str = "orient_distance",
    device: str = "cpu",
) -> Generator[Progress, None, tuple[SiameseDistanceNet, ModelCard]]:
    """Train a Siamese distance network on simulated projections of ``maps`` (job).

    Parameters
    ----------
    maps : sequence of TrainingMap
        Maps whose projections train the network; a map's ``symmetry`` makes its targets
        distances up to its point group.
    validation_maps : sequence of TrainingMap
        Held-out maps: their distance errors go on the card (never used to stop).
    pixel_size_A : float
        Pixel size of the network's input, Å.
    input_size : int
        Input side, pixels.
    projections_per_map : int
        Clean projections simulated per map (noise is drawn afresh every batch).
    steps : int
        Optimiser steps (one map, ``batch_size`` images and all their pairs per step).
    batch_size : int
        Images per step.
    learning_rate : float
        Adam's step size (cosine decay).
    snr_range : (float, float)
        SNR drawn log-uniformly per image (signal variance at the input pixel size / noise variance).
    clean_fraction : float
        Fraction of images without noise.
    max_minutes : float, optional
        Stop training after this wall time (the card records the steps done).
    seed : int
    name : str
        Model name on the card.
    device : str
        Torch device of the optimisation (``"cuda"`` on a GPU); batches are drawn on the CPU
        with the same generator, so a seed gives the same data on any device.  The model is
        returned on the CPU.

    Returns
    -------
    (SiameseDistanceNet, ModelCard)
    """
    if not maps:
        raise ValueError("Give at least one map to train the distance network on.")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pools: list[_Pool] = []
    all_maps = list(maps) + list(validation_maps)
    for k, tmap in enumerate(all_maps):
        n = projections_per_map if k < len(maps) else max(200, projections_per_map // 4)
        pool = yield from _relabel(
            _make_pool(tmap, n, seed * 1000 + k, pixel_size_A, input_size),
            f"simulating projections of {tmap.name} ({k + 1}/{len(all_maps)})",
        )
        pools.append(pool)
    train_pools, val_pools = pools[: len(maps)], pools[len(maps) :]
    model = SiameseDistanceNet(input_size=input_size).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=0.05 * learning_rate)
    iu = torch.triu_indices(batch_size, batch_size, offset=1)
    t0 = time.monotonic()
    done, running = 0, 0.0
    model.train()
    for step in range(1, steps + 1):
        pool = train_pools[int(torch.randint(len(train_pools), (1,), generator=gen))]
        idx = torch.randint(len(pool.quats), (batch_size,), generator=gen)
        x = _noisy_batch(pool, idx, snr_range, clean_fraction, gen).to(device)
        emb = model.encode(x)
        pred = torch.cdist(emb, emb)[iu[0], iu[1]]
        target = pair_targets(pool.quats[idx], pool.expanded[idx])[iu[0], iu[1]].float().to(device)
        loss = torch.mean((pred - target) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        done = step
        if step % 25 == 0 or step == steps:
            yield Progress(step, steps, "training the distance network", info={"loss": running / 25})
            running = 0.0
        if max_minutes is not None and time.monotonic() - t0 > 60 * max_minutes:
            log.info("training stopped by its time limit after %d steps", step)
            break
    model = model.cpu().eval()
    metrics = {"train_steps": done, "train_minutes": round((time.monotonic() - t0) / 60, 2)}
    for pool in val_pools:
        metrics[f"val_{pool.name}"] = evaluate_pool(model, pool, snr_range, seed)
    card = ModelCard(
        name=name,
        task="orient",
        architecture=ARCHITECTURE,
        arch_kwargs={"input_size": input_size, "channels": [16, 32, 64, 128], "embedding_dim": 32},
        classes=["distance_rad"],
        voxel_size_A=pixel_size_A,
        patch_size=[input_size, input_size],
        normalisation="Fourier resampling to voxel_size_A, centre crop/pad to patch_size, per-image zscore",
        training_data=(
            f"{projections_per_map} Fourier-slice projections per map of {', '.join(m.name for m in maps)} "
            f"(viewing directions on a hemisphere), noise SNR log-uniform in {list(snr_range)} "
            f"({clean_fraction:.0%} clean), batch-all pairs of {batch_size} images; target distances "
            f"up to each map's point group ({', '.join(f'{p.name} {p.symmetry.name}' for p in pools)})"
        ),
        seed=seed,
        metrics=metrics,
        extra={
            "train_maps": [m.name for m in maps],
            "validation_maps": [m.name for m in validation_maps],
            "symmetry": {p.name: p.symmetry.name for p in pools},
            "symmetry_frames": {p.name: p.symmetry.frame.round(6).tolist() for p in pools if p.symmetry.name != "C1"},
            "steps": steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "half_sphere": True,
        },
    )
    return model, card


def _relabel(job: Generator[Progress, None, object], message: str) -> Generator[Progress, None, object]:
    return (yield from relay(job, lambda p: Progress(p.done, p.total, message, p.info)))


def evaluate_pool(model: SiameseDistanceNet, pool: _Pool, snr_range: tuple[float, float], seed: int) -> dict:
    """Mean absolute distance error (degrees) on a held-out pool, clean and noisy."""
    gen = torch.Generator().manual_seed(seed + 1)
    out = {}
    for label, frac in (("clean", 1.0), ("noisy", 0.0)):
        with torch.no_grad():
            x = _noisy_batch(pool, torch.arange(len(pool.quats)), snr_range, frac, gen)
            emb = model.encode(x)
        pred = torch.cdist(emb, emb)
        target = pair_targets(pool.quats, pool.expanded).float()
        iu = torch.triu_indices(len(emb), len(emb), offset=1)
        out[f"mae_deg_{label}"] = round(float(torch.rad2deg((pred - target)[iu[0], iu[1]].abs().mean())), 2)
    return out


def embed_images(
    model: SiameseDistanceNet, card: ModelCard, images: np.ndarray, pixel_size_A: float, batch: int = 256
) -> Generator[Progress, None, np.ndarray]:
    """Embeddings (N, D) of projections for :class:`tomolens.orient.recover.EmbeddingDistances` (job).

    Parameters
    ----------
    model, card : the distance network and its card (from ``load_model``).
    images : ndarray, shape (N, n, n)
    pixel_size_A : float
        The images' pixel size, Å.
    """
    size = int(card.patch_size[0]) if card.patch_size else model.input_size
    model.eval()
    n = len(images)
    out = []
    for start in range(0, n, batch):
        chunk = resample_images(images[start : start + batch], pixel_size_A, float(card.voxel_size_A), size)
        with torch.no_grad():
            out.append(model.encode(standardise(torch.from_numpy(chunk))).double().numpy())
        yield Progress(min(n, start + batch), n, "embedding projections")
    return np.concatenate(out)


def distance_errors_deg(
    embeddings: np.ndarray,
    quats: np.ndarray,
    n_pairs: int = 200_000,
    seed: int = 0,
    symmetry: Symmetry | str | None = None,
) -> dict:
    """Mean and median absolute error (degrees) of embedding distances on random pairs.

    With a ``symmetry`` (in the frame of ``quats``) the true distance is the one up to the group.
    """
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(quats), n_pairs)
    j = rng.integers(0, len(quats), n_pairs)
    keep = i != j
    est = np.linalg.norm(embeddings[i[keep]] - embeddings[j[keep]], axis=1)
    if as_symmetry(symmetry).name == "C1":
        true = geodesic_distance(quats[i[keep]], quats[j[keep]])
    else:
        true = symmetric_distance(quats[i[keep]], quats[j[keep]], symmetry)
    err = np.degrees(np.abs(est - true))
    return {"mae_deg": float(err.mean()), "median_deg": float(np.median(err))}
