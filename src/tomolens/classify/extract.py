"""Cut subtomograms out of a (memory-mapped) tomogram at particle positions.

Positions are voxels, z, y, x, 0-based (a :class:`~tomolens.io.ParticleTable`'s
``coords_zyx`` or a napari Points layer's data).  Each position is rounded to the
nearest voxel and a cube of ``box`` voxels is cut with that voxel at index ``box // 2``
along every axis.  Boxes that cross the tomogram's edge are either padded with the mean
of their in-volume voxels (``edge="pad"``) or left out (``edge="skip"``); the result says
which points were padded or skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from tomolens.jobs import Progress

log = logging.getLogger(__name__)

EDGE_MODES = ("pad", "skip")


@dataclass
class Extraction:
    """Subtomograms cut at particle positions.

    Attributes
    ----------
    subtomograms : ndarray, float32, shape (M, box, box, box)
        One cube per extracted point, z, y, x.
    indices : ndarray, int64, shape (M,)
        Index (into the input positions) of each subtomogram.
    padded : ndarray, int64
        Input indices whose box crossed the edge and was padded with its mean.
    skipped : ndarray, int64
        Input indices left out because their box crossed the edge (``edge="skip"``).
    box : int
        Edge length of the cubes, voxels.
    """

    subtomograms: np.ndarray
    indices: np.ndarray
    padded: np.ndarray
    skipped: np.ndarray
    box: int

    def __len__(self) -> int:
        return len(self.indices)


def box_in_voxels(box_A: float, voxel_size_A: float) -> int:
    """Box edge in voxels for an edge of ``box_A`` Å at ``voxel_size_A`` Å per voxel.

    Raises
    ------
    ValueError
        When either length is not positive or the box is under 4 voxels.
    """
    if voxel_size_A is None or voxel_size_A <= 0:
        raise ValueError(
            f"The voxel size must be a positive number of Å; got {voxel_size_A}. Set the tomogram's voxel size first."
        )
    if box_A <= 0:
        raise ValueError(f"The box size must be a positive number of Å; got {box_A}.")
    box = int(round(box_A / voxel_size_A))
    if box < 4:
        raise ValueError(
            f"A box of {box_A:g} Å is only {box} voxels at {voxel_size_A:g} Å/voxel; use at least 4 voxels."
        )
    return box


def zscore(subtomograms: np.ndarray) -> np.ndarray:
    """Normalise each cube to mean 0 and standard deviation 1 (in place, float32).

    Parameters
    ----------
    subtomograms : ndarray, float32, shape (M, b, b, b)

    Returns
    -------
    ndarray
        The same array.  A constant cube becomes all zeros.
    """
    flat = subtomograms.reshape(len(subtomograms), -1)
    mean = flat.mean(axis=1, keepdims=True)
    std = flat.std(axis=1, keepdims=True)
    std[std == 0] = 1.0
    flat -= mean
    flat /= std
    return subtomograms


def check_positions(coords_zyx: np.ndarray, shape_zyx: tuple[int, ...]) -> np.ndarray:
    """Round positions to voxel centres and refuse any outside the tomogram.

    Returns
    -------
    ndarray, int64, shape (N, 3)

    Raises
    ------
    ValueError
        When the positions are not (N, 3) or any lies outside the volume.
    """
    coords = np.asarray(coords_zyx, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 3:
        raise ValueError(f"Positions must be an (N, 3) array of z, y, x voxels; got shape {coords.shape}.")
    coords = coords[:, -3:]
    if not np.all(np.isfinite(coords)):
        raise ValueError("Some positions are NaN or infinite; remove them before extraction.")
    centres = np.rint(coords).astype(np.int64)
    outside = np.flatnonzero(np.any((centres < 0) | (centres >= np.asarray(shape_zyx)), axis=1))
    if len(outside):
        first = outside[0]
        raise ValueError(
            f"{len(outside)} of {len(coords)} points lie outside the tomogram of shape (z, y, x) "
            f"{tuple(int(n) for n in shape_zyx)}; the first is point {first} at (z, y, x) "
            f"{tuple(round(float(v), 1) for v in coords[first])}. "
            "Are the points in the tomogram's voxels (same binning, same voxel size)?"
        )
    return centres


def extract_subtomograms(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    box: int,
    edge: str = "pad",
    normalise: bool = True,
    batch: int = 256,
    voxel_ratio: float = 1.0,
) -> Generator[Progress, None, Extraction]:
    """Cut a cube of ``box`` voxels around each position (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
        The tomogram; a memory map is read box by box, never whole.
    coords_zyx : array, shape (N, 3)
        Positions in voxels, z, y, x, 0-based.
    box : int
        Cube edge in voxels (see :func:`box_in_voxels`).
    edge : {"pad", "skip"}
        What to do with boxes that cross the tomogram's edge: pad the missing voxels
        with the mean of the box's in-volume voxels, or leave the point out.
    normalise : bool
        Z-score each cube (mean 0, std 1), as the classifiers expect.
    batch : int
        Points per progress step.
    voxel_ratio : float
        Output voxel size / tomogram voxel size (a model's voxel size over the tomogram's).
        Other than 1, a cube of about ``box × voxel_ratio`` tomogram voxels is cut and
        resampled to ``box`` (linear; Gaussian anti-aliasing of σ = (ratio − 1)/2 when
        shrinking, as :func:`tomolens.models.tiling.rescale_volume`), centred on the same
        voxel.

    Yields
    ------
    Progress
        One per ``batch`` points.

    Returns
    -------
    Extraction

    Raises
    ------
    ValueError
        For a box larger than the tomogram, points outside it, or an unknown edge mode.
    """
    if tomogram.ndim != 3:
        raise ValueError(f"Extraction needs a 3D tomogram; got shape {tomogram.shape}.")
    if edge not in EDGE_MODES:
        raise ValueError(f"edge must be one of {EDGE_MODES}; got {edge!r}.")
    box = out_box = int(box)
    if box < 1:
        raise ValueError(f"The box must be at least 1 voxel; got {box}.")
    if not (np.isfinite(voxel_ratio) and voxel_ratio > 0):
        raise ValueError(f"The voxel-size ratio must be a positive number; got {voxel_ratio}.")
    resample = abs(voxel_ratio - 1.0) > 0.01
    if resample:  # cut enough tomogram voxels to cover the output box, with one voxel of margin
        box = int(np.ceil(out_box * voxel_ratio)) + 2
        box += (box - out_box) % 2  # same parity: both boxes centre on voxel box // 2
    shape = np.asarray(tomogram.shape)
    if np.any(box > shape):
        raise ValueError(
            f"The box of {box} voxels is larger than the tomogram ({' × '.join(str(int(n)) for n in shape)} voxels, z × y × x); "
            "use a smaller box (in Å) or check the voxel size."
        )
    centres = check_positions(coords_zyx, tomogram.shape)
    starts = centres - box // 2
    ends = starts + box
    crosses = np.any((starts < 0) | (ends > shape), axis=1)
    if edge == "skip":
        keep = np.flatnonzero(~crosses)
    else:
        keep = np.arange(len(centres))
    out = np.empty((len(keep), box, box, box), np.float32)
    n_steps = max(1, -(-len(keep) // batch))
    for step in range(n_steps):
        for row in range(step * batch, min(len(keep), (step + 1) * batch)):
            i = keep[row]
            lo = np.maximum(starts[i], 0)
            hi = np.minimum(ends[i], shape)
            inner = np.asarray(tomogram[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
            if crosses[i]:
                out[row] = inner.mean()
                a = lo - starts[i]
                b = a + (hi - lo)
                out[row, a[0] : b[0], a[1] : b[1], a[2] : b[2]] = inner
            else:
                out[row] = inner
        yield Progress(step + 1, n_steps, f"extracting subtomograms ({box}³ voxels)")
    if resample:
        out = resample_cubes(out, out_box, voxel_ratio)
    if normalise and len(out):
        zscore(out)
    padded = np.flatnonzero(crosses) if edge == "pad" else np.empty(0, np.int64)
    skipped = np.flatnonzero(crosses) if edge == "skip" else np.empty(0, np.int64)
    if len(padded):
        log.info(
            "%d of %d boxes crossed the tomogram's edge and were padded with their mean.", len(padded), len(centres)
        )
    if len(skipped):
        log.info("%d of %d boxes crossed the tomogram's edge and were skipped.", len(skipped), len(centres))
    return Extraction(out, keep.astype(np.int64), padded.astype(np.int64), skipped.astype(np.int64), out_box)


def resample_cubes(cubes: np.ndarray, out_box: int, voxel_ratio: float) -> np.ndarray:
    """Resample (N, b, b, b) cubes to (N, out_box³) voxels of ``voxel_ratio`` input voxels each.

    Voxel ``out_box // 2`` of the output lies on voxel ``b // 2`` of the input; linear
    interpolation, after a Gaussian of σ = (ratio − 1)/2 input voxels when ``voxel_ratio`` > 1.
    """
    from scipy import ndimage

    b = cubes.shape[-1]
    axis = b // 2 + (np.arange(out_box) - out_box // 2) * float(voxel_ratio)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"))
    out = np.empty((len(cubes), out_box, out_box, out_box), np.float32)
    for i, cube in enumerate(cubes):
        if voxel_ratio > 1:
            cube = ndimage.gaussian_filter(cube, (voxel_ratio - 1) / 2)
        out[i] = ndimage.map_coordinates(cube, grid, order=1, mode="nearest")
    return out
