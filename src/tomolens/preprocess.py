"""Volume preprocessing shared by every capability: binning and normalisation."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from tomolens.jobs import Progress


def bin_volume(data: np.ndarray, factor: int, slab: int = 16) -> Generator[Progress, None, np.ndarray]:
    """Bin a volume by ``factor`` along every axis (mean of factor³ voxels), slab by slab.

    Works on memory-mapped input without loading it whole.  Trailing voxels that do
    not fill a whole bin are dropped, as IMOD's ``binvol`` does.

    Parameters
    ----------
    data : array, shape (z, y, x)
    factor : int
        2, 3, 4… ; 1 returns a float32 copy.
    slab : int
        Output z-slices computed per step (one Progress per slab).

    Yields
    ------
    Progress
        One per slab.

    Returns
    -------
    ndarray, float32, shape (z // factor, y // factor, x // factor)
    """
    if data.ndim != 3:
        raise ValueError(f"Binning needs a 3D volume; got shape {data.shape}.")
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"The binning factor must be a positive integer; got {factor}.")
    factor = int(factor)
    out_shape = tuple(s // factor for s in data.shape)
    if min(out_shape) == 0:
        raise ValueError(f"A volume of shape {data.shape} is too small to bin by {factor}.")
    out = np.empty(out_shape, np.float32)
    nz = out_shape[0]
    steps = max(1, -(-nz // slab))
    for i, z0 in enumerate(range(0, nz, slab)):
        z1 = min(nz, z0 + slab)
        block = np.asarray(data[z0 * factor : z1 * factor, : out_shape[1] * factor, : out_shape[2] * factor], np.float32)
        block = block.reshape(z1 - z0, factor, out_shape[1], factor, out_shape[2], factor)
        out[z0:z1] = block.mean(axis=(1, 3, 5))
        yield Progress(i + 1, steps, f"binning by {factor}")
    return out


def normalise(data: np.ndarray, sample_voxels: int = 2_000_000) -> tuple[float, float]:
    """Mean and standard deviation of ``data`` estimated from a strided subsample.

    Raises
    ------
    ValueError
        When the volume holds NaN/Inf in the sample or is constant.
    """
    from tomolens.io.mrc import subsample

    s = subsample(data, sample_voxels).astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("The volume contains NaN or Inf values; replace them before analysis.")
    mean, std = float(s.mean()), float(s.std())
    if std == 0:
        raise ValueError("The volume is constant (zero variance); there is nothing to analyse.")
    return mean, std
