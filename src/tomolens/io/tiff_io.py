"""TIFF stacks (``tifffile``): tomograms as real data often comes (one page per z slice).

The voxel size is read, in this order, from ImageJ metadata (``spacing`` and the
resolution tags, with ``unit`` Å/nm/µm), else it is unknown.  Writing makes an ImageJ
hyperstack (float32 images, uint8/uint16 labels) with the voxel size in Å so that Fiji and
tomolens read it back.  Dense matter keeps whatever contrast the file has; models decide
the polarity when they run (:mod:`tomolens.polarity`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from tomolens.io.atomic import atomic_path
from tomolens.io.mrc import MrcVolume
from tomolens.io.optional import require

log = logging.getLogger(__name__)

TIFF_EXTENSIONS = (".tif", ".tiff")
_UNIT_TO_A = {
    "a": 1.0,
    "å": 1.0,
    "angstrom": 1.0,
    "\\u00c5": 1.0,
    "nm": 10.0,
    "nanometer": 10.0,
    "um": 1e4,
    "µm": 1e4,
    "micron": 1e4,
    "\\u00b5m": 1e4,
}


class TiffFormatError(ValueError):
    """A TIFF file tomolens cannot open as a tomogram."""


def _voxel_size_A(tif) -> tuple[float, float, float] | None:
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).strip().lower()
    factor = _UNIT_TO_A.get(unit)
    page = tif.pages[0]
    tags = page.tags
    if factor is None or "XResolution" not in tags:
        return None
    xr = tags["XResolution"].value
    yr = tags["YResolution"].value
    x = xr[1] / xr[0] if xr[0] else None
    y = yr[1] / yr[0] if yr[0] else None
    if not x or not y:
        return None
    z = float(meta.get("spacing", x))
    return (z * factor, y * factor, x * factor)


def read_tiff(path: str | os.PathLike) -> MrcVolume:
    """Read a TIFF stack as a volume (z, y, x), memory-mapped when the file allows it.

    Raises
    ------
    TiffFormatError
        Not a TIFF, or not a 3D single-channel stack.
    """
    tifffile = require("tifffile", "TIFF stacks")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    try:
        with tifffile.TiffFile(path) as tif:
            vs = _voxel_size_A(tif)
            data = tif.asarray(out="memmap") if tif.pages[0].is_memmappable else tif.asarray()
            is_labels = bool((tif.imagej_metadata or {}).get("tomolens_labels"))
            axes = tif.series[0].axes
    except tifffile.TiffFileError as err:
        raise TiffFormatError(f"{path.name} is not a readable TIFF file: {err}") from err
    data = np.squeeze(data)
    if data.ndim != 3 or "S" in axes or "C" in axes:
        raise TiffFormatError(
            f"{path.name} holds an image of shape {data.shape} (axes {axes}); tomolens opens 3D "
            "stacks (one page per z slice, one channel)."
        )
    log.info("read %s: %s %s, voxel %s Å", path, data.shape, data.dtype, vs)
    return MrcVolume(data=data, voxel_size_A=vs, path=path, is_labels=is_labels, kind="volume")


def write_tiff(
    path: str | os.PathLike, data: np.ndarray, voxel_size_A: float | tuple[float, ...] | None, is_labels: bool = False
) -> Path:
    """Write a 3D array as an ImageJ TIFF stack (atomically), voxel size in Å."""
    tifffile = require("tifffile", "TIFF stacks")
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"TIFF stacks are written from 3D arrays (z, y, x); got shape {arr.shape}.")
    if is_labels:
        arr = arr.astype(np.uint8 if arr.max(initial=0) < 256 and arr.min(initial=0) >= 0 else np.uint16)
    else:
        arr = arr.astype(np.float32)
    metadata = {"axes": "ZYX", "tomolens_labels": int(is_labels)}
    kwargs = {}
    if voxel_size_A is not None:
        vs = np.broadcast_to(np.asarray(voxel_size_A, float), (3,))
        metadata.update(spacing=float(vs[0]), unit="angstrom")
        kwargs["resolution"] = (1.0 / float(vs[2]), 1.0 / float(vs[1]))
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, arr, imagej=True, metadata=metadata, **kwargs)
    log.info("wrote %s: %s %s", path, arr.shape, arr.dtype)
    return Path(path)
