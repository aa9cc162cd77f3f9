"""Read and write MRC volumes, images and image stacks with mrcfile.

Reading is memory-mapped: the data are never loaded into RAM until they are used,
so a 2 GB tomogram opens in about a second.  The voxel size comes from the header
(x, y, z in the file) and is returned in z, y, x order, in Å.  A header voxel size of
0 or 1 is treated as *unknown* (many programs write those when they do not know it).

Label volumes written by tomolens carry the header label ``tomolens:labels`` so they
reopen as labels.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from tomolens.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: Extensions opened by the reader.
MRC_EXTENSIONS = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
#: Extensions whose 3D data is a stack of 2D images (axis 0 = image index).
STACK_EXTENSIONS = (".mrcs", ".st", ".ali")
LABELS_TAG = "tomolens:labels"
#: MRC modes tomolens reads: int8, int16, float32, uint16, float16.
SUPPORTED_MODES = {0: "int8", 1: "int16", 2: "float32", 6: "uint16", 12: "float16"}
#: Voxels sampled for contrast limits and sanity checks.
SUBSAMPLE_VOXELS = 1_000_000


class MrcReadError(ValueError):
    """An MRC file could not be read; the message says why and what to do."""


class UnknownVoxelSizeWarning(UserWarning):
    """The header's voxel size is 0 or 1, so tomolens treats it as unknown."""


@dataclass
class MrcVolume:
    """An MRC file's data and what tomolens needs from its header.

    Attributes
    ----------
    data : numpy.ndarray
        Memory-mapped array, shape (z, y, x) for volumes and stacks, (y, x) for a
        single image.  Read-only.
    voxel_size_A : tuple of float or None
        Voxel size in Å in the order of ``data``'s axes; None when unknown.
    kind : {"volume", "stack", "image"}
        ``"stack"`` when axis 0 indexes separate 2D images (``.mrcs``, ``.st``,
        ``.ali`` or a header saying so).
    is_labels : bool
        True for integer volumes written by tomolens as labels.
    path : pathlib.Path
        Where it was read from.
    """

    data: np.ndarray
    voxel_size_A: tuple[float, ...] | None
    kind: str
    is_labels: bool = False
    path: Path | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def pixel_size_A(self) -> float | None:
        """In-plane pixel size in Å (the last axis), or None when unknown."""
        return None if self.voxel_size_A is None else float(self.voxel_size_A[-1])


def subsample(data: np.ndarray, max_voxels: int = SUBSAMPLE_VOXELS) -> np.ndarray:
    """Return a strided view of about ``max_voxels`` voxels, read without a full pass."""
    step = max(1, int(np.ceil((data.size / max_voxels) ** (1.0 / data.ndim))))
    return np.asarray(data[(slice(None, None, step),) * data.ndim])


def contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits (0.5th and 99.5th percentile) from a subsample of ``data``."""
    sample = subsample(data).astype(np.float32, copy=False)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        high = low + 1.0
    return (float(low), float(high))


def _voxel_size_from_header(voxel_size, ndim: int, kind: str, path: Path):
    vs_xyz = np.array([float(voxel_size.x), float(voxel_size.y), float(voxel_size.z)])
    in_plane = vs_xyz[:2]
    if np.any(in_plane <= 0) or np.allclose(in_plane, 1.0):
        warnings.warn(
            f"{path.name}: the header voxel size is {tuple(vs_xyz)} Å, which tomolens treats "
            "as unknown. Set the voxel size in the Tomogram widget (or pass --voxel-size).",
            UnknownVoxelSizeWarning,
            stacklevel=3,
        )
        return None
    if ndim == 2:
        return (vs_xyz[1], vs_xyz[0])
    z = vs_xyz[2]
    if kind == "stack" or z <= 0:
        z = vs_xyz[0] if kind != "stack" else 1.0
    return (float(z), float(vs_xyz[1]), float(vs_xyz[0]))


def read_mrc(path: str | os.PathLike, check_finite: bool = True) -> MrcVolume:
    """Open an MRC-family file memory-mapped.

    Parameters
    ----------
    path : path-like
        ``.mrc``, ``.rec``, ``.map``, ``.mrcs``, ``.st`` or ``.ali``.
    check_finite : bool
        Check a subsample of about a million voxels for NaN or Inf and refuse the
        file if any are found (a full pass would defeat memory mapping).

    Returns
    -------
    MrcVolume

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    MrcReadError
        Not an MRC file, truncated, an unsupported mode, or NaN/Inf in the data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=False) as mrc:
            header = mrc.header.copy()
            voxel_size = mrc.voxel_size.copy()
            ext_bytes = int(mrc.header.nsymbt)
            is_stack_header = int(mrc.header.ispg) == 0 and int(mrc.header.nz) > 1
            labels = [
                bytes(lab).decode("ascii", "replace").strip("\x00 ").strip()
                for lab in mrc.header.label[: int(mrc.header.nlabl)]
            ]
    except ValueError as err:
        text = str(err)
        if "Map ID string" in text or "not found" in text:
            raise MrcReadError(
                f"{path.name} is not an MRC file (no 'MAP ' identifier in its header). "
                "Check that it is a tomogram or map in MRC format."
            ) from err
        if "mode" in text.lower():
            raise MrcReadError(
                f"{path.name} uses an MRC data mode tomolens cannot read ({text}). "
                f"Supported modes: {sorted(SUPPORTED_MODES)} (int8, int16, float32, uint16, "
                "float16); convert it, e.g. with IMOD's newstack -mode 2."
            ) from err
        raise MrcReadError(f"{path.name} could not be read as MRC: {text}") from err
    mode = int(header.mode)
    if mode not in SUPPORTED_MODES:
        raise MrcReadError(
            f"{path.name} uses MRC mode {mode}, which tomolens cannot read. Supported modes: "
            f"{sorted(SUPPORTED_MODES)} (int8, int16, float32, uint16, float16); convert it, "
            "e.g. with IMOD's newstack -mode 2."
        )
    dtype = mrcfile.utils.data_dtype_from_header(header)
    shape = tuple(int(s) for s in mrcfile.utils.data_shape_from_header(header))
    offset = 1024 + ext_bytes
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise MrcReadError(
            f"{path.name} is truncated: the header promises {expected:,} bytes but the file has "
            f"{actual:,}. The file was probably cut off while copying or writing; copy it again."
        )
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    suffix = path.suffix.lower()
    if data.ndim == 2:
        kind = "image"
    elif suffix in STACK_EXTENSIONS or (is_stack_header and suffix not in (".mrc", ".rec", ".map")):
        kind = "stack"
    else:
        kind = "volume"
    if check_finite and data.dtype.kind == "f":
        sample = subsample(data)
        bad = int(np.count_nonzero(~np.isfinite(sample)))
        if bad:
            raise MrcReadError(
                f"{path.name} contains NaN or Inf values ({bad} of {sample.size:,} sampled voxels). "
                "Replace them (for example with the mean) before analysis."
            )
    voxel_size_A = _voxel_size_from_header(voxel_size, data.ndim, kind, path)
    is_labels = LABELS_TAG in labels and data.dtype.kind in "iu"
    return MrcVolume(data, voxel_size_A, kind, is_labels, path, labels)


def labels_dtype(data: np.ndarray) -> np.dtype:
    """The MRC integer type that holds ``data``'s labels (uint16 or int16).

    Raises
    ------
    ValueError
        When the labels do not fit in 16 bits, the largest integer MRC type.
    """
    lo = int(np.min(data)) if data.size else 0
    hi = int(np.max(data)) if data.size else 0
    if lo >= 0 and hi <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if lo >= np.iinfo(np.int16).min and hi <= np.iinfo(np.int16).max:
        return np.dtype(np.int16)
    raise ValueError(
        f"Labels range from {lo} to {hi}, but MRC holds at most 16-bit integers "
        "(0..65535 or -32768..32767). Relabel sequentially (skimage.segmentation."
        "relabel_sequential) or save as TIFF/Zarr."
    )


def write_mrc(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size_A: float | tuple[float, ...] | None = None,
    is_labels: bool = False,
    labels: tuple[str, ...] = (),
) -> Path:
    """Write ``data`` as MRC, atomically.

    Parameters
    ----------
    path : path-like
        Destination; replaced only when the write succeeds.
    data : array, shape (z, y, x) or (y, x)
        Images are written as float32; labels as uint16 (or int16 with negative
        labels).
    voxel_size_A : float or tuple (z, y, x), optional
        Voxel size in Å; written as 0 (unknown) when None.
    is_labels : bool
        Write integer labels and tag the header so the file reopens as labels.
    labels : tuple of str
        Extra header labels (provenance), at most 80 characters each.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(f"MRC holds 2D or 3D data; this array has shape {arr.shape}.")
    if is_labels:
        if arr.dtype.kind not in "iub":
            raise ValueError(f"Labels must be integers; got dtype {arr.dtype}.")
        out_dtype = labels_dtype(arr)
    else:
        if arr.dtype.kind not in "iufb":
            raise ValueError(f"Cannot write dtype {arr.dtype} as an MRC image.")
        out_dtype = np.dtype(np.float32)
        if arr.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                raise ValueError(
                    f"The image contains {bad} NaN or Inf values; replace them before saving."
                )
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(arr.astype(out_dtype, copy=False))
            if voxel_size_A is not None:
                vs = np.broadcast_to(np.asarray(voxel_size_A, dtype=float), (arr.ndim,))
                vs3 = (float(vs[-1]), float(vs[-2]), float(vs[0]) if arr.ndim == 3 else float(vs[-1]))
                mrc.voxel_size = vs3
            all_labels = ([LABELS_TAG] if is_labels else []) + [str(x)[:80] for x in labels]
            for i, text in enumerate(all_labels[:10]):
                mrc.header.label[i] = text.encode("ascii", "replace")[:80]
            mrc.header.nlabl = min(10, len(all_labels))
            if arr.ndim == 3 and Path(path).suffix.lower() in STACK_EXTENSIONS:
                mrc.set_image_stack()
    log.info("wrote %s (%s, %s)", path, arr.shape, out_dtype)
    return Path(path)
