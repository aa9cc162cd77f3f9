"""Volume preprocessing shared by every capability: binning and normalisation.

**Input normalisation** (:func:`estimate_normalisation`, applied tile by tile by
:meth:`Normalisation.apply`).  Real tomograms arrive with any offset and scale, as int8,
uint8, int16, float16 or float32, with zero-padded or masked borders, outliers (gold beads,
hot pixels) and gradients of ice thickness across the field.  Every model input is therefore

1. converted to float32;
2. freed of a linear ramp (a plane in z, y, x fitted by least squares to the medians of
   blocks of the volume: an ice-thickness gradient, not structure — a plane cannot take out
   a vesicle or a particle);
3. centred and scaled by the mean and standard deviation of a strided subsample, **leaving
   out constant regions** (padding or masks: voxels whose 3×3×3 neighbourhood is constant,
   and their neighbours) and **outliers** (values more than 5 robust standard deviations,
   1.4826 × the median absolute deviation, from the median: gold beads, hot pixels);
4. multiplied by −1 when the tomogram's contrast polarity differs from the model's
   (:mod:`tomolens.polarity`).

On a volume without padding, ramp or outliers this is the z-score the shipped models were
trained with (within 1 %).  Low-pass filtered (SIRT-like) or binned reconstructions need no
special case here: the models are resampled to their voxel size and see a unit-variance input.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass

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
        block = np.asarray(
            data[z0 * factor : z1 * factor, : out_shape[1] * factor, : out_shape[2] * factor], np.float32
        )
        block = block.reshape(z1 - z0, factor, out_shape[1], factor, out_shape[2], factor)
        out[z0:z1] = block.mean(axis=(1, 3, 5))
        yield Progress(i + 1, steps, f"binning by {factor}")
    return out


#: Values further than this many robust standard deviations (1.4826 × MAD) from the median
#: are outliers left out of the normalisation statistics.
CLIP_SIGMAS = 5.0


@dataclass(frozen=True)
class Normalisation:
    """How a tomogram's values become a model's input: ``sign × (v − ramp(z, y, x) − offset) / scale``.

    Attributes
    ----------
    offset : float
        Subtracted after the ramp.
    scale : float
        Divides (> 0).
    ramp : (float, float, float)
        Slope of the fitted plane per voxel along z, y, x (0 when none).
    centre : (float, float, float)
        Voxel where the ramp is 0.
    sign : int
        +1, or −1 to invert the contrast.
    """

    offset: float
    scale: float
    ramp: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    sign: int = 1

    def inverted(self, invert: bool) -> "Normalisation":
        """This normalisation with the sign flipped when ``invert``."""
        if not invert:
            return self
        return Normalisation(self.offset, self.scale, self.ramp, self.centre, -self.sign)

    def apply(self, block: np.ndarray, start: Sequence[int] | None = None) -> np.ndarray:
        """Normalise ``block`` (float32 copy) cut from the volume at voxel ``start`` (z, y, x).

        ``start`` may be omitted for blocks that are not 3D cuts of the volume (the ramp is
        then not subtracted).
        """
        out = np.asarray(block, np.float32) - np.float32(self.offset)
        if start is not None and out.ndim == 3 and any(self.ramp):
            grids = np.ogrid[tuple(slice(0, n) for n in out.shape)]
            for g, s0, c, slope in zip(grids, start, self.centre, self.ramp):
                if slope:
                    out -= np.float32(slope) * (g + np.float32(s0 - c))
        out *= np.float32(self.sign / self.scale)
        return out

    def to_dict(self) -> dict:
        return {**asdict(self), "method": "z-score without ramp, constant regions and outliers"}


def constant_regions(block: np.ndarray, grow: int = 1, connectivity: int = 3) -> np.ndarray:
    """True in constant regions of a 3D block (zero padding, masks) and within ``grow`` voxels of them.

    A voxel is constant when its 3×3×3 neighbourhood is; the padding's outermost layer touches
    data and is not constant itself, hence the growth (``connectivity`` 3: the 26 neighbours per
    step, 1: the 6 face neighbours; see ``scipy.ndimage.generate_binary_structure``).
    """
    from scipy import ndimage

    flat = ndimage.maximum_filter(block, size=3) == ndimage.minimum_filter(block, size=3)
    if grow < 1 or not flat.any():
        return flat
    return ndimage.binary_dilation(flat, structure=ndimage.generate_binary_structure(3, connectivity), iterations=grow)


def _sample_with_flat(data: np.ndarray, sample_voxels: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A strided float64 subsample of ``data``, the mask of its constant regions, and the stride."""
    from tomolens.io.mrc import subsample

    step = max(1, int(np.ceil((np.size(data) / sample_voxels) ** (1.0 / max(1, np.ndim(data))))))
    s = subsample(data, sample_voxels).astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("The volume contains NaN or Inf values; replace them before analysis.")
    flat = np.zeros(s.shape, bool)
    if s.ndim == 3 and min(s.shape) >= 3:
        flat = constant_regions(s)
        if flat.mean() >= 0.95:  # mostly constant: keep everything, the variance check decides
            flat[...] = False
    return s, flat, step


def _fit_ramp(data: np.ndarray, n_blocks: int = 4) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Plane (slopes per voxel z, y, x; centre) through the medians of n_blocks³ blocks of ``data``."""
    shape = np.array(data.shape)
    centre = tuple(float((n - 1) / 2) for n in shape)
    edges = [np.linspace(0, n, min(n_blocks, n) + 1).astype(int) for n in shape]
    if any(len(e) < 3 for e in edges[1:]):
        return (0.0, 0.0, 0.0), centre
    rows, values = [], []
    for i in range(len(edges[0]) - 1):
        for j in range(len(edges[1]) - 1):
            for k in range(len(edges[2]) - 1):
                sl = tuple(slice(e[a], e[a + 1]) for e, a in zip(edges, (i, j, k)))
                step = max(1, int(np.ceil((np.prod([s.stop - s.start for s in sl]) / 20000) ** (1 / 3))))
                block = np.asarray(data[tuple(slice(s.start, s.stop, step) for s in sl)], np.float64)
                if block.ndim == 3 and min(block.shape) >= 3:
                    block = block[~constant_regions(block)]
                if block.size < 100:
                    continue
                rows.append([1.0, *((s.start + s.stop - 1) / 2 - c for s, c in zip(sl, centre))])
                values.append(float(np.median(block)))
    if len(rows) < 8:
        return (0.0, 0.0, 0.0), centre
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(values), rcond=None)
    slopes = tuple(float(c) if len(e) > 2 else 0.0 for c, e in zip(coef[1:], edges))
    return slopes, centre


def estimate_normalisation(data: np.ndarray, sample_voxels: int = 2_000_000, remove_ramp: bool = True) -> Normalisation:
    """The :class:`Normalisation` of a tomogram (see the module docstring); sign +1.

    Parameters
    ----------
    data : array, shape (z, y, x) (or any shape: the ramp is fitted only in 3D)
        Any real dtype, may be memory-mapped (a strided subsample is read).
    sample_voxels : int
        Size of the subsample.
    remove_ramp : bool
        Fit and remove a linear ramp (3D only).

    Raises
    ------
    ValueError
        When the volume holds NaN/Inf in the sample or is constant.
    """
    ramp, centre = ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    if remove_ramp and np.ndim(data) == 3:
        ramp, centre = _fit_ramp(data)
    sample, flat, step = _sample_with_flat(data, sample_voxels)
    if any(ramp):
        grids = np.ogrid[tuple(slice(0, n) for n in sample.shape)]
        for g, slope, c in zip(grids, ramp, centre):
            sample = sample - slope * (g * step - c)
    values = sample[~flat]
    if values.size == 0 or values.max() == values.min():
        raise ValueError("The volume is constant (zero variance); there is nothing to analyse.")
    median = float(np.median(values))
    robust_sd = 1.4826 * float(np.median(np.abs(values - median)))
    if robust_sd > 0:  # outliers (gold, hot pixels, bad slices) beyond CLIP_SIGMAS robust SDs are left out
        values = values[np.abs(values - median) <= CLIP_SIGMAS * robust_sd]
    mean, std = float(values.mean()), float(values.std())
    if std == 0:
        raise ValueError("The volume is constant (zero variance); there is nothing to analyse.")
    return Normalisation(mean, std, ramp, centre, 1)


def normalisation_for_view(norm: Normalisation, shape: Sequence[int], view) -> Normalisation:
    """The normalisation of ``view(volume)`` that gives the same values as ``norm`` on ``volume``.

    Parameters
    ----------
    norm : Normalisation
        Of the 3D volume of shape ``shape``.
    view : callable
        Array → a view of it with permuted, flipped or quarter-turned axes (``np.moveaxis``,
        ``np.rot90``, ``np.flip``), as used for slice-wise or test-time-augmented inference.

    Returns
    -------
    Normalisation
        Its ramp in the view's axes (only the ramp depends on the axes).
    """
    if not any(norm.ramp) or len(shape) != 3:
        return norm
    parts = []
    for axis in range(3):
        along = [1, 1, 1]
        along[axis] = int(shape[axis])
        coord = (np.arange(shape[axis], dtype=np.float64) - norm.centre[axis]) * norm.ramp[axis]
        parts.append(view(np.broadcast_to(coord.reshape(along), tuple(shape))))
    view_shape = parts[0].shape

    def plane_at(index):
        return sum(float(p[index]) for p in parts)

    base = plane_at((0, 0, 0))
    slopes = tuple(
        plane_at(tuple(int(i == a) for i in range(3))) - base if view_shape[a] > 1 else 0.0 for a in range(3)
    )
    return Normalisation(norm.offset + base, norm.scale, slopes, (0.0, 0.0, 0.0), norm.sign)
