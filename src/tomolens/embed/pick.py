"""Pick by example: a similarity map of the whole tomogram to a few clicked examples, and its peaks.

:func:`find_similar` runs one of two methods: ``template`` (the default, no network: rotation-searched
template matching of the examples or of a reference map, :mod:`tomolens.embed.pick_template`) or
``embedding`` (:func:`similarity_to_examples`, below).  Both give a :class:`SimilarityMap` whose
peaks :func:`pick_peaks` picks.

The embedding network's body is convolutional and its embedding is the *global average*
of its three stages' feature maps followed by a small head.  Run on the whole tomogram at
once, the window averages of the feature maps (``avg_pool3d`` with the box as kernel) give
the embedding of every box on a grid of 8 model voxels in one pass — instead of one
forward pass per window.  ``stride=4`` runs 8 shifted passes for a grid of 4 voxels.
Windows differ from separately cut boxes only in that the network sees the real
neighbourhood past a window's edge instead of zero padding.

The tomogram is resampled to the model's voxel size, turned to the model's polarity and
z-scored as a whole; it is processed in slabs along z (bounded memory, progress per slab).
The examples' embeddings are the map's windows nearest to them.  Every embedding
dimension is standardised over the tomogram's windows (what every window shares — ice,
noise, the crowd — drops out; without it the background is as similar to the examples as
the particles are, as in Subdivide's standardise-then-cluster) and the vectors are made unit
length again; the examples' mean, made unit length, is the
target's reference, and the similarity map is the cosine between every centred window
embedding and the reference.  Picks are the local maxima of the map above a
threshold, at least a minimum distance apart and not within a quarter box of the edge
(:func:`pick_peaks`, fast: the widget's
threshold slider re-runs only this).  Several targets at once: examples carry a target
name, each target gets its own map and its picks get its name as ``class``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tomolens.embed.pick_template import COMBINE_CHOICES, template_similarity
from tomolens.embed.predict import DEFAULT_EMBED_MODEL
from tomolens.jobs import Progress
from tomolens.params import Param
from tomolens.polarity import POLARITY_PARAM

log = logging.getLogger(__name__)

#: Window step of one dense pass, model voxels (the body's total stride).
BASE_STRIDE = 8
#: Output grid rows per slab (memory bound: about slab × 8 + box input slices at a time).
SLAB_ROWS = 12

#: Pick-by-example methods: classical template matching (no network) or an embedding network.
METHODS = ("template", "embedding")

#: User settings of pick by example (CLI options and widget controls).
PICK_PARAMS = (
    Param(
        "method",
        "template",
        "template: rotation-searched template matching of the examples (no network); "
        "embedding: similarity of a trained embedding (needs an embedding model)",
        choices=METHODS,
    ),
    Param(
        "threshold",
        0.55,
        "Similarity a peak must reach: normalised cross-correlation (template) or cosine (embedding, about 0.8)",
        min=-1.0,
        max=1.0,
        step=0.01,
    ),
    Param("min_distance_A", 100.0, "Smallest distance between two picks, Å (about a particle's radius)", min=0.0),
    Param("radius_A", 100.0, "Particle radius, Å (template method: box and mask of the examples)", min=1.0),
    Param(
        "angular_step_deg",
        40.0,
        "Template method: rotation grid step, degrees (smaller is finer and slower: about 8π²/step³ rotations)",
        min=10.0,
        max=90.0,
    ),
    Param(
        "bin",
        1,
        "Template method: match on the tomogram binned by 1-4 (2: 8 times fewer voxels; the radius must stay "
        ">= 1.5 binned voxels)",
        min=1,
        max=4,
    ),
    Param(
        "tilt_range_deg",
        0.0,
        "Template method: tilt range of the tilt series, ± degrees about y, to give the rotated templates the "
        "tomogram's missing wedge (0: off)",
        min=0.0,
        max=90.0,
        advanced=True,
    ),
    Param(
        "combine",
        "each",
        "Template method: match each example (best of them) or align and average them into one template (faster)",
        choices=COMBINE_CHOICES,
        advanced=True,
    ),
    Param(
        "stride",
        8,
        "Embedding method: similarity-map grid step in model voxels: 8 (fast) or 4 (finer, 8x slower)",
        min=4,
        max=8,
        step=4,
        advanced=True,
    ),
    Param(
        "embed_model",
        DEFAULT_EMBED_MODEL,
        "Embedding method: shipped embedding name or a .pt/.json embedding model file",
        type=str,
        advanced=True,
    ),
    Param("device", "auto", "Torch device (embedding method)", choices=("auto", "cpu", "cuda", "mps"), advanced=True),
    POLARITY_PARAM,
)


@dataclass
class SimilarityMap:
    """Similarity of every window of a tomogram to each target.

    Attributes
    ----------
    similarity : ndarray, float32, shape (T, gz, gy, gx)
        Cosine similarity per target and grid point; grid point ``g`` is the window centred
        on tomogram voxel ``g × step_voxels``.
    targets : list of str
        Target names (T).
    step_voxels : float
        Grid step in tomogram voxels.
    voxel_size_A : float or None
        The tomogram's voxel size.
    example_similarity : list of ndarray
        Per target, each example's similarity to the target's reference (a check that the
        examples agree).
    info : dict
        Provenance: model, voxel sizes, resampling, polarity decision, stride.
    """

    similarity: np.ndarray
    targets: list
    step_voxels: float
    voxel_size_A: float | None
    example_similarity: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _stage_windows(net, x, box: int):
    """Window averages of the three stages (B, 7w, n, n, n) for a padded input (B, 1, Z, Y, X)."""
    import torch
    import torch.nn.functional as F

    h = net.body[0](x)
    pooled = []
    for k, block in enumerate(net.body[1:6]):
        h = block(h)
        if k in (0, 2, 4):
            s = 2 ** (k // 2 + 1)  # stride of this stage: 2, 4, 8
            pooled.append(F.avg_pool3d(h, kernel_size=box // s, stride=BASE_STRIDE // s))
    n = [min(p.shape[d] for p in pooled) for d in (2, 3, 4)]
    return torch.cat([p[:, :, : n[0], : n[1], : n[2]] for p in pooled], dim=1)


def dense_embedding(
    net, volume: np.ndarray, box: int, stride: int = BASE_STRIDE, device: str = "cpu"
) -> Generator[Progress, None, np.ndarray]:
    """Embedding of the window centred on every ``stride``-th voxel (a job).

    Parameters
    ----------
    net : EmbedNet3D in eval mode
    volume : ndarray, float32, shape (z, y, x)
        Normalised volume at the model's voxel size.
    box : int
        The model's box (divisible by 8).
    stride : {8, 4, 2}

    Returns
    -------
    ndarray, float32, shape (D, ceil(z / stride), ceil(y / stride), ceil(x / stride))
        Unit vectors; index g ↔ window centred on voxel g × stride.
    """
    import torch

    if stride not in (8, 4, 2):
        raise ValueError(f"stride must be 8, 4 or 2 voxels; got {stride}.")
    shape = np.array(volume.shape)
    grid = -(-shape // stride)
    half = box // 2
    # pad: half a box before, enough after so every grid centre has a full window
    after = half + BASE_STRIDE + (-(shape + 2 * half) % BASE_STRIDE)
    padded = np.pad(np.asarray(volume, np.float32), [(half, int(a)) for a in after])
    offsets = [
        (a, b, c)
        for a in range(0, BASE_STRIDE, stride)
        for b in range(0, BASE_STRIDE, stride)
        for c in range(0, BASE_STRIDE, stride)
    ]
    dim = int(net.head[-1].out_features)
    out = np.zeros((dim, *grid), np.float32)
    coarse = -(-shape // BASE_STRIDE)
    slabs = [(r, min(r + SLAB_ROWS, int(coarse[0]))) for r in range(0, int(coarse[0]), SLAB_ROWS)]
    total, done = len(offsets) * len(slabs), 0
    with torch.no_grad():
        for oz, oy, ox in offsets:
            for r0, r1 in slabs:
                z0 = r0 * BASE_STRIDE + oz
                z1 = (r1 - 1) * BASE_STRIDE + oz + box
                chunk = padded[z0:z1, oy:, ox:]
                x = torch.from_numpy(np.ascontiguousarray(chunk))[None, None].to(device)
                feats = _stage_windows(net, x, box)[0]  # (7w, rows, ny, nx)
                emb = net.embed_pooled(feats.permute(1, 2, 3, 0)).permute(3, 0, 1, 2).cpu().numpy()
                gz = np.arange(r0, r1) * BASE_STRIDE + oz
                gy = np.arange(emb.shape[2]) * BASE_STRIDE + oy
                gx = np.arange(emb.shape[3]) * BASE_STRIDE + ox
                keep = [np.flatnonzero((g < shape[d]) & (g % stride == 0)) for d, g in enumerate((gz, gy, gx))]
                sub = emb[:, : len(gz)][:, keep[0]][:, :, keep[1]][:, :, :, keep[2]]
                out[
                    :,
                    (gz[keep[0]] // stride)[:, None, None],
                    (gy[keep[1]] // stride)[None, :, None],
                    (gx[keep[2]] // stride)[None, None, :],
                ] = sub
                done += 1
                yield Progress(done, total, f"embedding the tomogram: pass {done}/{total}")
    return out


def _group_examples(examples_zyx: np.ndarray, targets: Sequence[str] | None) -> dict[str, np.ndarray]:
    coords = np.asarray(examples_zyx, float).reshape(-1, 3) if len(np.asarray(examples_zyx)) else np.empty((0, 3))
    if len(coords) < 1:
        raise ValueError(
            "Pick by example needs at least 1 example; click one or more particles in a Points "
            "layer (or give a coordinates file with at least one row)."
        )
    names = np.array(["target"] * len(coords) if targets is None else [str(t) for t in targets], dtype=object)
    if len(names) != len(coords):
        raise ValueError(f"{len(names)} target names for {len(coords)} examples; give one per example.")
    return {str(n): coords[names == n] for n in dict.fromkeys(names)}


def similarity_to_examples(
    tomogram: np.ndarray,
    examples_zyx: np.ndarray,
    targets: Sequence[str] | None = None,
    model: str | os.PathLike = DEFAULT_EMBED_MODEL,
    voxel_size_A: float | None = None,
    stride: int = 8,
    device: str = "cpu",
    polarity: str = "auto",
) -> Generator[Progress, None, SimilarityMap]:
    """Similarity map of a tomogram to the examples of each target (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    examples_zyx : array, shape (N, 3)
        Example positions in the tomogram's voxels (N ≥ 1).
    targets : sequence of str, optional
        Target name per example (default: all one target, ``"target"``).
    model : str or path
        Embedding model (task ``"embed"``).
    voxel_size_A : float, optional
        The tomogram's voxel size (None: the model's).
    stride : {8, 4}
        Grid step in model voxels.
    device, polarity : str

    Returns
    -------
    SimilarityMap

    Raises
    ------
    ValueError
        No example, examples outside the tomogram, or a tomogram smaller than one box.
    """

    from tomolens.classify.extract import check_positions
    from tomolens.classify.predict import model_box
    from tomolens.embed.predict import load_embedding
    from tomolens.models.device import choose_device
    from tomolens.models.tiling import rescale_volume
    from tomolens.polarity import decide_polarity, model_polarity

    groups = _group_examples(examples_zyx, targets)
    data = np.asarray(tomogram)
    if data.ndim != 3:
        raise ValueError(f"The tomogram must be 3D (z, y, x); got shape {data.shape}.")
    check_positions(np.concatenate(list(groups.values())), data.shape)
    device = choose_device(device)
    net, card = load_embedding(model, device)
    box, ratio = model_box(card, voxel_size_A)
    decision = decide_polarity(data, polarity, model_polarity(card), voxel_size_A)
    yield Progress(0, 1, decision.message)
    if ratio != 1.0:
        log.info("tomogram resampled from %g to the model's %g Å/voxel", voxel_size_A, card.voxel_size_A)
        vol = rescale_volume(np.asarray(data, np.float32), 1.0 / ratio)
    else:
        vol = np.array(data, np.float32)
    if min(vol.shape) < 8:
        raise ValueError(f"The tomogram ({vol.shape} voxels at the model's voxel size) is too small to embed.")
    mean, std = float(vol.mean()), float(vol.std())
    vol -= mean
    vol /= std if std > 0 else 1.0
    if decision.invert:
        np.negative(vol, out=vol)
    dense = yield from dense_embedding(net, vol, box, stride, device)
    # standardise every dimension over the tomogram's windows: what every window shares (ice,
    # noise) drops out and each dimension counts by how much it varies across the tomogram
    flat = dense.reshape(len(dense), -1)
    centre, spread = flat.mean(1), flat.std(1)
    dense -= centre[:, None, None, None]
    dense /= np.maximum(spread, 1e-6)[:, None, None, None]
    dense /= np.maximum(np.linalg.norm(dense, axis=0, keepdims=True), 1e-12)
    maps, agreement = [], []
    grid_max = np.array(dense.shape[1:]) - 1
    for coords in groups.values():
        # the examples' windows of the same map (a separately cut box would see zero padding at
        # its edge where the map's windows see the neighbourhood: with a trained network the
        # two differ more than different particles do)
        g = np.clip(np.rint(coords / ratio / stride).astype(int), 0, grid_max)
        emb = dense[:, g[:, 0], g[:, 1], g[:, 2]].T
        ref = emb.mean(0)
        ref /= max(float(np.linalg.norm(ref)), 1e-12)
        maps.append(np.tensordot(ref, dense, axes=(0, 0)).astype(np.float32))
        agreement.append((emb @ ref).astype(np.float32))
    info = {
        "model": card.name,
        "model_voxel_size_A": card.voxel_size_A,
        "voxel_size_A": voxel_size_A,
        "resampled_by": ratio,
        "polarity": decision.to_dict(),
        "stride_model_voxels": stride,
        "box": box,
    }
    return SimilarityMap(np.stack(maps), list(groups), stride * ratio, voxel_size_A, agreement, info)


def find_similar(
    tomogram: np.ndarray,
    examples_zyx: np.ndarray,
    targets: Sequence[str] | None = None,
    voxel_size_A: float | None = None,
    method: str = "template",
    reference: str | os.PathLike | None = None,
    **settings,
) -> Generator[Progress, None, SimilarityMap]:
    """Similarity map of a tomogram to examples (or a reference map) by ``method`` (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
    examples_zyx : array, shape (N, 3)
        Example positions, tomogram voxels; N ≥ 1 unless a ``reference`` is given.
    targets : sequence of str, optional
        Target name per example (default: one target).
    voxel_size_A : float, optional
    method : {"template", "embedding"}
    reference : path, optional
        Template method only: a reference map MRC used as the template.
    **settings
        Values of :data:`PICK_PARAMS` (those of the other method are ignored).

    Returns
    -------
    SimilarityMap
        For the template method, on the tomogram's grid binned by ``bin`` (``step_voxels`` = bin).

    Raises
    ------
    ValueError
        Unknown method, no example, examples outside the tomogram, bad reference map.
    """
    from tomolens.classify.extract import check_positions

    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")
    known = {p.name for p in PICK_PARAMS}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(f"Unknown pick-by-example settings: {sorted(unknown)}.")
    if method == "embedding":
        if reference:
            raise ValueError("A reference map works with the template method only; use --method template.")
        keys = ("stride", "device", "polarity")
        return (
            yield from similarity_to_examples(
                tomogram,
                examples_zyx,
                targets,
                settings.get("embed_model", DEFAULT_EMBED_MODEL),
                voxel_size_A,
                **{k: settings[k] for k in keys if k in settings},
            )
        )
    data = np.asarray(tomogram)
    if data.ndim != 3:
        raise ValueError(f"The tomogram must be 3D (z, y, x); got shape {data.shape}.")
    if not len(np.asarray(examples_zyx)):
        if not reference:
            raise ValueError(
                "Pick by example needs at least 1 example or a reference map: click one or more particles in "
                "a Points layer (or give a coordinates file with at least one row), or give a map."
            )
        groups = {}
    else:
        groups = _group_examples(examples_zyx, targets)
        check_positions(np.concatenate(list(groups.values())), data.shape)
    keys = ("radius_A", "angular_step_deg", "combine", "polarity", "tilt_range_deg")
    bin_factor = int(settings.get("bin", 1))
    maps, names, agreement, info = yield from template_similarity(
        data,
        groups,
        voxel_size_A,
        reference=reference,
        bin_factor=bin_factor,
        **{k: settings[k] for k in keys if k in settings},
    )
    return SimilarityMap(maps, names, float(bin_factor), voxel_size_A, agreement, info)


def pick_peaks(sim: SimilarityMap, threshold: float = 0.8, min_distance_A: float = 100.0) -> pd.DataFrame:
    """Local maxima of each target's similarity map above ``threshold``, ``min_distance_A`` apart.

    Peaks are refined below the grid step by the similarity-weighted centroid of their 3×3×3
    neighbourhood.

    Returns
    -------
    pandas.DataFrame
        Columns ``z``, ``y``, ``x`` (tomogram voxels), ``score`` (similarity) and ``class``
        (target name), sorted by score, highest first.
    """
    from skimage.feature import peak_local_max

    vs = sim.voxel_size_A or (sim.info.get("model_voxel_size_A") or 1.0)
    step_A = sim.step_voxels * float(vs)
    min_dist = max(1, round(min_distance_A / step_A)) if min_distance_A > 0 else 1
    # windows centred within a quarter box of the edge are mostly padding: no peaks there
    box = int(sim.info.get("box", 32))
    border = max(0, int(np.ceil(box / 4 / float(sim.info.get("stride_model_voxels", 8)))))
    rows = []
    for t, name in enumerate(sim.targets):
        m = sim.similarity[t]
        peaks = peak_local_max(
            m,
            min_distance=min_dist,
            threshold_abs=float(threshold),
            exclude_border=border if min(m.shape) > 2 * border else False,
        )
        for p in peaks:
            lo = np.maximum(p - 1, 0)
            hi = np.minimum(p + 2, m.shape)
            block = m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
            w = np.clip(block - block.min(), 0, None)
            idx = np.stack(np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij"), -1)
            centre = (idx * w[..., None]).sum((0, 1, 2)) / w.sum() if w.sum() > 0 else p.astype(float)
            z, y, x = centre * sim.step_voxels + float(sim.info.get("origin_voxels", 0.0))
            rows.append({"z": z, "y": y, "x": x, "score": float(m[tuple(p)]), "class": name})
    table = pd.DataFrame(rows, columns=["z", "y", "x", "score", "class"])
    return table.sort_values("score", ascending=False, ignore_index=True)
