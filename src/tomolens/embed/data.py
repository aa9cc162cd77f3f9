"""Domain-randomised subtomograms for metric learning, rendered batch by batch in torch.

A :class:`StructureBank` holds the structures (the training maps of ``maps_10A`` and many
procedural pseudo-proteins of :mod:`tomolens.simulate.pseudoproteins`), each rendered
once at the model's voxel size into a cube of ``canvas`` voxels.  :func:`render_views`
makes ``K`` views of each of ``P`` structures: a uniformly random rotation, a random
centre shift (``jitter_A``), a random scale (``scale``, which also stands for voxel-size
errors), 0-2 neighbours of random structures touching the particle, a missing wedge of a
random tilt range and a CTF of random defocus (phase-flipped or not), a random low-pass,
noise restricted to the wedge with a random colour at a random SNR (var(signal) /
var(noise) in the box, log-uniform, or none), a random contrast polarity, then z-scoring.

Rotation and neighbour placement use ``torch.nn.functional.grid_sample``; the imaging uses
``torch.fft``: a batch of 36 cubes of 32³ costs about 0.1-0.3 s on one CPU core.

The held-out maps (:data:`tomolens.simulate.domain.HELD_OUT_MAPS`) are refused: they are
for testing only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from tomolens.simulate.domain import (
    HELD_OUT_MAPS,
    TRAINING_MAPS,
    TRAINING_RANGES,
    default_maps_dir,
)
from tomolens.simulate.imaging import CtfParams, fourier_filter, missing_wedge_mask
from tomolens.simulate.pseudoproteins import (
    TRAINING_FAMILIES,
    PseudoProteinSpec,
    render_pseudoprotein,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedDataConfig:
    """Settings of the training views (lengths in Å or nm as named, angles in degrees).

    Ranges are inclusive (low, high) pairs; the imaging ranges default to the domain
    simulator's :data:`~tomolens.simulate.domain.TRAINING_RANGES`.
    """

    box: int = 32
    voxel_size_A: float = 10.0
    canvas: int = 40
    maps: tuple[str, ...] = TRAINING_MAPS
    map_probability: float = 0.25
    n_pseudo: int = 600
    pseudo_size_nm: tuple[float, float] = (6.0, 28.0)
    families: tuple[str, ...] = TRAINING_FAMILIES
    snr: tuple[float, float] = (0.02, 1.0)
    noise_free_probability: float = 0.1
    tilt_range_deg: tuple[float, float] = TRAINING_RANGES.tilt_range_deg
    defocus_um: tuple[float, float] = TRAINING_RANGES.defocus_um
    ctf_corrected_probability: float = TRAINING_RANGES.ctf_corrected_probability
    lowpass_fraction: tuple[float, float] = TRAINING_RANGES.lowpass_fraction
    noise_exponent: tuple[float, float] = TRAINING_RANGES.noise_exponent
    dark_probability: float = TRAINING_RANGES.dark_probability
    jitter_A: float = 20.0
    scale: tuple[float, float] = (0.9, 1.1)
    neighbours: tuple[int, int] = (0, 2)
    n_filters: int = 64
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad setting (held-out maps included)."""
        held = sorted(set(self.maps) & set(HELD_OUT_MAPS))
        if held:
            raise ValueError(f"The maps {held} are held out for testing; train on {TRAINING_MAPS} only.")
        if self.box % 8 or self.box < 8:
            raise ValueError(f"box must be a positive multiple of 8 voxels; got {self.box}.")
        if self.canvas < self.box // 2:
            raise ValueError(f"canvas must be at least half the box ({self.box // 2}); got {self.canvas}.")
        if self.n_pseudo < 0 or (self.n_pseudo == 0 and not self.maps):
            raise ValueError("No structures: give maps or n_pseudo > 0.")
        if not 0 < self.snr[0] <= self.snr[1]:
            raise ValueError(f"snr must be a positive (low, high) pair; got {self.snr}.")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _fit_canvas(density: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad a cube to n³ (float32)."""
    out = np.zeros((n, n, n), np.float32)
    m = density.shape[0]
    if m >= n:
        a = (m - n) // 2
        out[:] = density[a : a + n, a : a + n, a : a + n]
    else:
        a = (n - m) // 2
        out[a : a + m, a : a + m, a : a + m] = density
    return out


@dataclass
class StructureBank:
    """Structures to render, each a cube of ``canvas`` voxels with density max 1.

    Attributes
    ----------
    names : list of str
        One per structure: a map name or a pseudo-protein's name.
    maps_dir : Path or None
        Folder of the ``maps_10A`` MRC files (None: maps unavailable, pseudo-proteins only).
    """

    config: EmbedDataConfig
    names: list = field(default_factory=list)
    specs: list = field(default_factory=list)
    maps_dir: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, config: EmbedDataConfig, maps_dir: str | Path | None = None, seed_offset: int = 0) -> StructureBank:
        """Bank of ``config.maps`` (when their folder is found) and ``config.n_pseudo``
        pseudo-proteins drawn from ``config.seed + seed_offset``."""
        config.check()
        folder = Path(maps_dir) if maps_dir else default_maps_dir()
        maps = [m for m in config.maps if folder is not None and (folder / f"{m}.mrc").is_file()]
        if config.maps and len(maps) < len(config.maps):
            log.warning(
                "maps folder %s lacks %s; training on pseudo-proteins and the maps found",
                folder,
                sorted(set(config.maps) - set(maps)),
            )
        rng = np.random.default_rng([config.seed, seed_offset, 77])
        specs: list = [("map", m) for m in maps]
        for _ in range(config.n_pseudo):
            family = str(config.families[int(rng.integers(len(config.families)))])
            size = float(np.round(rng.uniform(*config.pseudo_size_nm), 2))
            specs.append(("pseudo", PseudoProteinSpec(family, size, int(rng.integers(2**31 - 1)))))
        names = [s[1] if s[0] == "map" else s[1].name for s in specs]
        return cls(config, names, specs, folder)

    @property
    def n_maps(self) -> int:
        return sum(1 for s in self.specs if s[0] == "map")

    def __len__(self) -> int:
        return len(self.specs)

    def density(self, i: int) -> np.ndarray:
        """Structure ``i`` as a float32 cube (canvas³), max 1, rendered on first use."""
        if i not in self._cache:
            kind, spec = self.specs[i]
            if kind == "map":
                from tomolens.simulate.templates import load_template

                dens = load_template(self.maps_dir / f"{spec}.mrc", self.config.voxel_size_A).density
            else:
                dens = render_pseudoprotein(spec, self.config.voxel_size_A).density
            dens = _fit_canvas(np.clip(dens, 0, None), self.config.canvas)
            self._cache[i] = dens / max(float(dens.max()), 1e-6)
        return self._cache[i]

    def radius(self, i: int) -> float:
        """Radius (voxels) of the structure's mask (density ≥ 0.2) about the canvas centre."""
        key = ("radius", i)
        if key not in self._cache:
            idx = np.argwhere(self.density(i) >= 0.2)
            self._cache[key] = (
                float(np.linalg.norm(idx - (self.config.canvas - 1) / 2.0, axis=1).max()) if len(idx) else 1.0
            )
        return self._cache[key]

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` distinct structure indices, a map with probability ``map_probability`` each."""
        n_maps = self.n_maps
        n = min(n, len(self))
        want_maps = min(n_maps, int(rng.binomial(n, self.config.map_probability))) if n_maps else 0
        if n - want_maps > len(self) - n_maps:
            want_maps = n - (len(self) - n_maps)
        maps = rng.choice(n_maps, want_maps, replace=False) if want_maps else np.empty(0, int)
        pseudo = n_maps + rng.choice(len(self) - n_maps, n - want_maps, replace=False)
        return np.concatenate([maps, pseudo]).astype(np.int64)


def imaging_filters(config: EmbedDataConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """Random signal and noise filters (rfftn-shaped) for ``config.box``³ cubes.

    Returns
    -------
    signal : ndarray float32 (n_filters, b, b, b // 2 + 1)
        Wedge × CTF (phase-flipped with ``ctf_corrected_probability``) × Gaussian low-pass.
    noise : ndarray float32, same shape
        Wedge × |k|^(−exponent / 2) (noise colour) × the same low-pass.
    settings : list of dict
        The drawn settings per filter.
    """
    b = config.box
    shape = (b, b, b)
    k = np.sqrt(
        np.fft.fftfreq(b)[:, None, None] ** 2
        + np.fft.fftfreq(b)[None, :, None] ** 2
        + np.fft.rfftfreq(b)[None, None, :] ** 2
    )
    sig, noi, settings = [], [], []
    for _ in range(config.n_filters):
        tilt = float(rng.uniform(*config.tilt_range_deg))
        defocus = float(rng.uniform(*config.defocus_um))
        flipped = bool(rng.random() < config.ctf_corrected_probability)
        lowpass = float(rng.uniform(*config.lowpass_fraction))
        exponent = float(rng.uniform(*config.noise_exponent))
        filt = fourier_filter(shape, config.voxel_size_A, tilt, CtfParams(defocus_um=defocus))
        if flipped:
            filt = np.abs(filt)
        gauss = np.exp(-0.5 * (k / (0.5 * lowpass * 0.6)) ** 2).astype(np.float32)
        colour = np.where(k > 0, np.maximum(k, 1.0 / b) ** (-exponent / 2), 0.0).astype(np.float32)
        wedge = missing_wedge_mask(shape, tilt).astype(np.float32)
        sig.append(filt * gauss)
        noi.append(wedge * colour * gauss)
        settings.append(
            {
                "tilt_range_deg": tilt,
                "defocus_um": defocus,
                "phase_flipped": flipped,
                "lowpass_fraction": lowpass,
                "noise_exponent": exponent,
            }
        )
    return np.stack(sig).astype(np.float32), np.stack(noi).astype(np.float32), settings


def _sample(canvases, rotations, shifts, scales, box: int):
    """Resample canvases (B, 1, C, C, C) at rotated, shifted, scaled box³ grids → (B, 1, b, b, b)."""
    import torch
    import torch.nn.functional as F

    c = canvases.shape[-1]
    ax = torch.arange(box, dtype=torch.float32) - (box - 1) / 2.0
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1).reshape(-1, 3)  # zyx
    q = (grid[None] - shifts[:, None, :]) @ rotations / scales[:, None, None]
    q = q / ((c - 1) / 2.0)
    q = q.flip(-1).reshape(-1, box, box, box, 3)  # grid_sample wants x, y, z
    return F.grid_sample(canvases, q, mode="bilinear", padding_mode="zeros", align_corners=True)


def _random_unit(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def render_views(
    bank: StructureBank,
    ids: np.ndarray,
    n_views: int,
    rng: np.random.Generator,
    filters: tuple[np.ndarray, np.ndarray] | None = None,
    snr: float | None = None,
):
    """``n_views`` domain-randomised views of each structure in ``ids`` (torch, CPU).

    Parameters
    ----------
    bank : StructureBank
    ids : ndarray int64, shape (P,)
        Structure indices into the bank.
    n_views : int
    rng : numpy Generator
        All randomness comes from it (the torch noise too), so a batch is reproducible.
    filters : (signal, noise) from :func:`imaging_filters`, optional
        Drawn from ``rng`` when None.
    snr : float or (low, high), optional
        A fixed SNR (``inf`` for none), or a range to draw from instead of the configured one.

    Returns
    -------
    x : torch.Tensor float32 (P × n_views, 1, b, b, b)
        Z-scored views, structure-major (view j of structure i at ``i * n_views + j``).
    labels : torch.Tensor int64 (P × n_views,)
        Position of the structure in ``ids``.
    """
    import torch

    cfg = bank.config
    b = cfg.box
    if filters is None:
        sig_f, noi_f, _ = imaging_filters(cfg, rng)
    else:
        sig_f, noi_f = filters
    ids = np.repeat(np.asarray(ids, np.int64), n_views)
    labels = torch.from_numpy(np.repeat(np.arange(len(ids) // n_views), n_views))
    n = len(ids)
    radius = np.array([bank.radius(i) for i in ids])

    def place(structures, shifts_v):
        canv = torch.from_numpy(np.stack([bank.density(i) for i in structures])[:, None])
        rot = torch.from_numpy(Rotation.random(len(structures), random_state=rng).as_matrix().astype(np.float32))
        scales = torch.from_numpy(rng.uniform(*cfg.scale, len(structures)).astype(np.float32))
        return _sample(canv, rot, torch.from_numpy(shifts_v.astype(np.float32)), scales, b)

    jitter = cfg.jitter_A / cfg.voxel_size_A
    centres = rng.uniform(-jitter, jitter, (n, 3))
    vol = place(ids, centres)
    n_nb = rng.integers(cfg.neighbours[0], cfg.neighbours[1] + 1, n)
    for j in range(int(n_nb.max(initial=0))):
        who = np.flatnonzero(n_nb > j)
        others = rng.integers(0, len(bank), len(who))
        r_other = np.array([bank.radius(i) for i in others])
        dist = radius[who] + r_other + rng.uniform(0.0, 3.0, len(who))
        offset = centres[who] + _random_unit(len(who), rng) * dist[:, None]
        vol[torch.from_numpy(who)] += place(others, offset)
    pick = rng.integers(0, len(sig_f), n)
    spec = torch.fft.rfftn(vol[:, 0], dim=(1, 2, 3)) * torch.from_numpy(sig_f[pick])
    signal = torch.fft.irfftn(spec, s=(b, b, b), dim=(1, 2, 3))
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noise = torch.randn(signal.shape, generator=gen)
    noise = torch.fft.irfftn(
        torch.fft.rfftn(noise, dim=(1, 2, 3)) * torch.from_numpy(noi_f[pick]), s=(b, b, b), dim=(1, 2, 3)
    )
    if snr is None or isinstance(snr, tuple):
        lo, hi = cfg.snr if snr is None else snr
        snrs = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
        snrs[rng.random(n) < cfg.noise_free_probability] = np.inf
    else:
        snrs = np.full(n, float(snr))
    var_s = signal.var(dim=(1, 2, 3)).clamp_min(1e-12)
    var_n = noise.var(dim=(1, 2, 3)).clamp_min(1e-12)
    gain = torch.from_numpy(np.where(np.isinf(snrs), 0.0, 1.0 / np.where(np.isinf(snrs), 1.0, snrs)))
    x = signal + noise * torch.sqrt(var_s / var_n * gain.float())[:, None, None, None]
    sign = torch.from_numpy(np.where(rng.random(n) < cfg.dark_probability, -1.0, 1.0).astype(np.float32))
    x = x * sign[:, None, None, None]
    x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return x[:, None].contiguous(), labels
