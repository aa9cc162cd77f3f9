"""Tiled sliding-window inference with smooth blending, as a job.

:func:`predict_tiled` runs a network over a volume too large for one pass: it cuts
overlapping patches, runs them in batches, weights every patch's output with a
Gaussian window (1 at the patch centre, small at its faces) and divides by the summed
weights, so seams vanish and the result equals whole-volume inference up to the
network's limited field of view.  The input is read patch by patch (memory-mapped MRC
files are never loaded whole unless they must be rescaled); the output is written
into a preallocated array — an ``np.memmap`` in a temporary directory when it would
exceed ``memmap_above_bytes`` — so peak memory stays near input + output.

Torch is imported inside the function.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import product
from pathlib import Path

import numpy as np
from scipy import ndimage

from tomolens.io.checks import check_rescaled_shape
from tomolens.jobs import Progress
from tomolens.preprocess import Normalisation, estimate_normalisation

log = logging.getLogger(__name__)

#: Outputs larger than this go to a memory-mapped temporary file.
MEMMAP_ABOVE_BYTES = 512 * 2**20


def tile_starts(size: int, patch: int, overlap: int) -> list[int]:
    """Start offsets of patches along one axis covering ``[0, size)``.

    The stride is ``patch - overlap``; the last patch is flush with the end.  When the
    axis is shorter than the patch, one patch at 0 (the caller pads it).
    """
    if size <= patch:
        return [0]
    stride = max(1, patch - overlap)
    starts = list(range(0, size - patch, stride))
    starts.append(size - patch)
    return sorted(set(starts))


def blend_window(patch_size: Sequence[int], sigma_fraction: float = 0.125) -> np.ndarray:
    """Separable Gaussian window (max 1, floor 1e-3) for blending overlapping patches."""
    window = np.ones((), np.float32)
    for n in patch_size:
        x = np.arange(n, dtype=np.float32) - (n - 1) / 2
        g = np.exp(-0.5 * (x / max(sigma_fraction * n, 1e-6)) ** 2)
        window = np.multiply.outer(window, g / g.max())
    return np.maximum(window, 1e-3).astype(np.float32)


def allocate_output(
    shape: Sequence[int], tmp_dir: str | Path | None = None, memmap_above_bytes: int = MEMMAP_ABOVE_BYTES
) -> np.ndarray:
    """A zeroed float32 array, memory-mapped in a temporary directory when large."""
    nbytes = int(np.prod(shape)) * 4
    if nbytes <= memmap_above_bytes:
        return np.zeros(shape, np.float32)
    handle = tempfile.NamedTemporaryFile(prefix="tomolens-", suffix=".f32", dir=tmp_dir, delete=False)
    handle.close()
    log.info("output of %.0f MiB memory-mapped at %s", nbytes / 2**20, handle.name)
    arr = np.memmap(handle.name, dtype=np.float32, mode="w+", shape=tuple(shape))
    Path(handle.name).unlink(missing_ok=True)  # the mapping keeps the data alive (POSIX)
    return arr


def rescale_volume(data: np.ndarray, zoom: float) -> np.ndarray:
    """Resample a volume by ``zoom`` (linear), low-pass filtered first when shrinking.

    The anti-aliasing Gaussian has σ = (1/zoom − 1)/2 voxels (as ``skimage.transform.rescale``),
    so a 10 Å tomogram brought to 20 Å keeps its averaged noise level.  Training data and
    inference input go through this same function.

    Returns
    -------
    ndarray, float32, shape ``round(n * zoom)`` per axis
    """
    data = np.asarray(data, np.float32)
    if zoom == 1.0:
        return data
    if zoom < 1.0:
        data = ndimage.gaussian_filter(data, sigma=(1.0 / zoom - 1.0) / 2.0)
    return ndimage.zoom(data, zoom, order=1).astype(np.float32, copy=False)


def rescale_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a label volume onto ``shape`` (same corner convention)."""
    labels = np.asarray(labels)
    if tuple(labels.shape) == tuple(shape):
        return labels
    factors = [t / s for t, s in zip(shape, labels.shape)]
    return _zoom_to(labels, factors, shape, order=0)


def _read_patch(
    volume: np.ndarray,
    start: Sequence[int],
    patch: Sequence[int],
    norm: Normalisation,
    context: Sequence[int] | None = None,
) -> np.ndarray:
    """The normalised patch at ``start``, with ``context`` extra voxels on both sides per axis.

    A patch running past the end of a volume smaller than it is reflect-padded; context
    beyond the volume's faces repeats the face (as ``np.clip`` on indices would).
    """
    context = tuple(context or (0,) * len(patch))
    lo = [s - c for s, c in zip(start, context)]
    hi = [s + p + c for s, p, c in zip(start, patch, context)]
    sl = tuple(slice(max(a, 0), min(b, n)) for a, b, n in zip(lo, hi, volume.shape))
    block = norm.apply(volume[sl], [a.start for a in sl] if len(sl) == 3 else None)
    if any(context):
        edge = [(max(0, -a), max(0, b - n)) if c else (0, 0) for a, b, n, c in zip(lo, hi, volume.shape, context)]
        block = np.pad(block, edge, mode="edge")
    pad = [(0, p + 2 * c - b) for p, c, b in zip(patch, context, block.shape)]
    if any(after for _, after in pad):
        block = np.pad(block, pad, mode="reflect" if min(block.shape) > 1 else "edge")
    return block


def _activation(name: str | Callable | None):
    import torch

    if callable(name):
        return name
    if name in (None, "none", "identity"):
        return lambda t: t
    if name == "sigmoid":
        return torch.sigmoid
    if name == "softmax":
        return lambda t: torch.softmax(t, dim=1)
    raise ValueError(f"Unknown activation {name!r}; use 'sigmoid', 'softmax', None or a callable.")


def _batches(starts: list[tuple[int, ...]], batch_size: int) -> Iterator[list[tuple[int, ...]]]:
    for i in range(0, len(starts), batch_size):
        yield starts[i : i + batch_size]


def predict_tiled(
    model,
    volume: np.ndarray,
    patch_size: Sequence[int],
    overlap: float | int = 0.25,
    batch_size: int = 2,
    device: str = "cpu",
    out_channels: int | None = None,
    activation: str | Callable | None = "sigmoid",
    out: np.ndarray | None = None,
    voxel_size_A: float | None = None,
    model_voxel_size_A: float | None = None,
    normalisation: tuple[float, float] | None = None,
    tmp_dir: str | Path | None = None,
    memmap_above_bytes: int = MEMMAP_ABOVE_BYTES,
    map_back: bool = True,
    context: Sequence[int] | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Run ``model`` over ``volume`` in overlapping, Gaussian-blended patches.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (N, 1, *patch_size) to (N, C, *patch_size) logits.  Put in eval mode here.
    volume : array, shape (z, y, x) (or (y, x) with a 2D model)
        Any array-like supporting slicing (``np.memmap`` from :func:`read_mrc` is read
        patch by patch).
    patch_size : sequence of int
        Patch size in voxels, one per axis of ``volume``; each divisible by the
        network's ``2**depth``.
    overlap : float or int
        Overlap between neighbouring patches: a fraction of the patch (< 1) or voxels.
    batch_size : int
        Patches per forward pass (one Progress per batch).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"mps"``.  fp16 autocast is used on CUDA; an
        out-of-memory error on the GPU falls back to the CPU with a warning.
    out_channels : int, optional
        Output channels; by default ``model.out_channels``.
    activation : {"sigmoid", "softmax", None} or callable
        Applied to the logits before blending.
    out : array, shape (C, *volume.shape), float32, optional
        Preallocated output (for example an ``np.memmap``); it is overwritten.
    voxel_size_A, model_voxel_size_A : float, optional
        When both are given and differ by more than 1 %, the volume is rescaled to the
        model's voxel size (``scipy.ndimage.zoom``, linear) and the outputs are mapped
        back to the input grid.
    normalisation : Normalisation or (mean, std), optional
        How the input is normalised (offset, scale, ramp and polarity sign); by default
        estimated by :func:`tomolens.preprocess.estimate_normalisation` (sign +1).
    tmp_dir : path, optional
        Where large outputs are memory-mapped.
    map_back : bool
        When the volume was rescaled, map the outputs back onto the input grid (True)
        or return them on the model's grid, shape ``(C, *round(volume.shape × zoom))``.
    context : sequence of int, optional
        Voxels of context the model reads on both sides of every patch, per axis: it then
        maps (N, 1, *(patch + 2·context)) to (N, C, *patch) (a 2.5D slice network reads
        the neighbouring slices of each slice).  Beyond the volume's faces the face slice
        is repeated.

    Yields
    ------
    Progress
        One per batch.

    Returns
    -------
    ndarray, float32, shape (C, *volume.shape)
        Blended network outputs (after ``activation``).
    """
    import torch

    patch = tuple(int(p) for p in patch_size)
    if volume.ndim != len(patch):
        raise ValueError(
            f"The model works on {len(patch)}D patches {patch}; the image has shape {volume.shape} "
            f"({volume.ndim}D). Give a {len(patch)}D volume."
        )
    multiple = getattr(model, "size_multiple", 1)
    if any(p % multiple for p in patch):
        raise ValueError(f"Patch size {patch} must be divisible by {multiple} for this network.")
    n_out = int(out_channels or getattr(model, "out_channels", 1))
    overlap_vox = [int(round(overlap * p)) if overlap < 1 else int(overlap) for p in patch]
    if voxel_size_A and model_voxel_size_A:  # a wrong voxel size fails here, not after normalising
        check_rescaled_shape(volume.shape, voxel_size_A, model_voxel_size_A)
    if normalisation is None:
        norm = estimate_normalisation(volume)
    elif isinstance(normalisation, Normalisation):
        norm = normalisation
    else:
        norm = Normalisation(float(normalisation[0]), float(normalisation[1]))

    source = volume
    zoom = 1.0
    if voxel_size_A and model_voxel_size_A and abs(voxel_size_A / model_voxel_size_A - 1) > 0.01:
        zoom = float(voxel_size_A) / float(model_voxel_size_A)
        log.info("rescaling %s by %.3f to the model's %.3g Å voxels", volume.shape, zoom, model_voxel_size_A)
        # normalised on the input grid (the ramp's coordinates), then resampled
        source = rescale_volume(norm.apply(volume, (0,) * volume.ndim if volume.ndim == 3 else None), zoom)
        norm = Normalisation(0.0, 1.0)
    work_shape = tuple(source.shape)

    final_shape = (n_out, *(volume.shape if map_back else work_shape))
    if out is not None and tuple(out.shape) != final_shape:
        raise ValueError(f"The output array has shape {out.shape}; it must be {final_shape}.")
    direct = out is not None and (zoom == 1.0 or not map_back)
    acc = out if direct else allocate_output((n_out, *work_shape), tmp_dir, memmap_above_bytes)
    acc[...] = 0
    weight_sum = allocate_output(work_shape, tmp_dir, memmap_above_bytes)
    window = blend_window(patch)
    starts = list(product(*(tile_starts(s, p, o) for s, p, o in zip(work_shape, patch, overlap_vox))))
    batches = list(_batches(starts, max(1, int(batch_size))))
    act = _activation(activation)
    model.eval()
    model.to(device)
    log.info("tiled inference: %d patches of %s in %d batches on %s", len(starts), patch, len(batches), device)
    for i, batch_starts in enumerate(batches):
        x = np.stack([_read_patch(source, s, patch, norm, context) for s in batch_starts])[:, None]
        try:
            y = _forward(model, x, device, act)
        except torch.cuda.OutOfMemoryError:
            warnings.warn(
                f"The GPU ran out of memory with batch size {batch_size}; continuing on the CPU.",
                RuntimeWarning,
                stacklevel=2,
            )
            torch.cuda.empty_cache()
            device = "cpu"
            model.to(device)
            y = _forward(model, x, device, act)
        for s, y_patch in zip(batch_starts, y):
            sl = tuple(slice(a, min(a + p, n)) for a, p, n in zip(s, patch, work_shape))
            crop = tuple(slice(0, b.stop - b.start) for b in sl)
            w = window[crop]
            acc[(slice(None), *sl)] += y_patch[(slice(None), *crop)] * w
            weight_sum[sl] += w
        yield Progress(i + 1, len(batches), "predicting patches")
    acc /= weight_sum[None]
    del weight_sum
    if zoom == 1.0 or not map_back:
        return acc
    result = out if out is not None else allocate_output(final_shape, tmp_dir, memmap_above_bytes)
    for c in range(n_out):
        factors = [t / s for t, s in zip(volume.shape, work_shape)]
        result[c] = _zoom_to(acc[c], factors, volume.shape)
    return result


def _forward(model, x: np.ndarray, device: str, act) -> np.ndarray:
    import torch

    with torch.inference_mode():
        t = torch.from_numpy(x).to(device)
        if device == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                y = act(model(t).float())
        else:
            y = act(model(t))
        return y.float().cpu().numpy()


def _zoom_to(data: np.ndarray, factors: Sequence[float], shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Zoom that lands exactly on ``shape`` (crop/pad by edge values if off by one)."""
    z = ndimage.zoom(np.asarray(data), factors, order=order)
    if z.shape == tuple(shape):
        return z
    z = z[tuple(slice(0, n) for n in shape)]
    return np.pad(z, [(0, n - s) for n, s in zip(shape, z.shape)], mode="edge")
