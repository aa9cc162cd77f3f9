"""OME-Zarr tomograms (the CryoET Data Portal's and copick's format), with ``ome-zarr``.

Reading is lazy: each pyramid level is a dask array over the Zarr chunks, so napari shows
the first slice of a multi-GB tomogram after reading a few chunks.  The voxel size comes
from each level's ``coordinateTransformations`` scale and the axes' units (converted to
Å).  Writing makes a pyramid of ``levels`` levels, each half the size of the one before
(mean of 2×2×2 voxels for images, every second voxel for labels), with axes ``z, y, x``
in Å, into a temporary folder that is renamed onto the target when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomolens.io.optional import require

log = logging.getLogger(__name__)
# ome-zarr's reader logs every level's shape and chunks at INFO; keep the CLI's output readable
logging.getLogger("ome_zarr").setLevel(logging.WARNING)

#: Length units of OME-NGFF axes, in Å.
UNIT_TO_A = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "millimeter": 1e7, "picometer": 0.01, "meter": 1e10}


class ZarrFormatError(ValueError):
    """A Zarr store tomolens cannot read as a tomogram; the message says why."""


@dataclass
class OmeZarrVolume:
    """A lazily read OME-Zarr pyramid.

    Attributes
    ----------
    levels : list of dask.array.Array
        Pyramid levels, full resolution first, each (z, y, x).
    voxel_size_A : tuple of float or None
        Level 0 voxel size (z, y, x) in Å; None when the axes carry no length unit.
    path : pathlib.Path
    is_labels : bool
        True for an OME-Zarr label image (``image-label`` metadata).
    """

    levels: list
    voxel_size_A: tuple[float, float, float] | None
    path: Path
    is_labels: bool = False

    @property
    def data(self):
        """The full-resolution level (a dask array)."""
        return self.levels[0]


def is_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Zarr store folder (v2 ``.zgroup``/``.zarray`` or v3 ``zarr.json``)."""
    p = Path(path)
    return p.is_dir() and any((p / name).exists() for name in (".zgroup", ".zarray", "zarr.json"))


def _voxel_size(multiscales: dict) -> tuple[float, float, float] | None:
    axes = multiscales.get("axes") or []
    transforms = multiscales["datasets"][0].get("coordinateTransformations") or []
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None:
        return None
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes][-3:]
    if len(units) != 3 or any(u not in UNIT_TO_A for u in units):
        return None
    return tuple(float(s) * UNIT_TO_A[u] for s, u in zip(scale[-3:], units))


def read_ome_zarr(path: str | os.PathLike) -> OmeZarrVolume:
    """Open an OME-Zarr image (a tomogram or a label image) lazily.

    Raises
    ------
    ZarrFormatError
        Not a Zarr store, a Zarr store without ``multiscales`` metadata, or not 3D.
    """
    require("zarr", "OME-Zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file or folder: {str(path)!r}")
    location = parse_url(str(path), mode="r")
    if location is None or not is_zarr(path):
        raise ZarrFormatError(f"{path.name} is not a Zarr store (no .zgroup, .zarray or zarr.json inside).")
    nodes = [n for n in Reader(location)() if n.load(Multiscales) is not None and n.data]
    if not nodes:
        raise ZarrFormatError(
            f"{path.name} is a Zarr store without OME-Zarr 'multiscales' metadata, so its voxel size "
            "and pyramid are unknown. Open the folder of the image itself (e.g. "
            "Tomograms/VoxelSpacing10.000/wbp.zarr), or write it with ome-zarr."
        )
    node = nodes[0]
    levels = list(node.data)
    if levels[0].ndim != 3:
        raise ZarrFormatError(
            f"{path.name} holds {levels[0].ndim}D images (shape {levels[0].shape}); "
            "tomolens opens 3D tomograms (z, y, x)."
        )
    multiscales = node.zarr.root_attrs["multiscales"][0]
    is_labels = "image-label" in node.zarr.root_attrs
    vs = _voxel_size(multiscales)
    log.info("opened %s lazily: %d levels, %s, voxel %s Å", path, len(levels), levels[0].shape, vs)
    return OmeZarrVolume(levels, vs, path, is_labels)


def _pyramid(data: np.ndarray, levels: int, is_labels: bool) -> list[np.ndarray]:
    from skimage.transform import downscale_local_mean

    out = [np.asarray(data)]
    for _ in range(levels - 1):
        prev = out[-1]
        if min(prev.shape) < 2:
            break
        if is_labels:
            out.append(prev[::2, ::2, ::2])
        else:
            out.append(downscale_local_mean(prev, (2, 2, 2)).astype(prev.dtype))
    return out


def write_ome_zarr(
    path: str | os.PathLike,
    data: np.ndarray,
    voxel_size_A: float | tuple[float, ...] | None,
    levels: int = 3,
    is_labels: bool = False,
    chunks: int = 64,
) -> Path:
    """Write a 3D array as an OME-Zarr pyramid (a new folder; replaced only when complete).

    Parameters
    ----------
    path : path-like
        Destination folder, conventionally ending ``.zarr`` or ``.ome.zarr``.
    data : array, shape (z, y, x)
        Image (any real dtype, kept) or integer labels.
    voxel_size_A : float or tuple (z, y, x) or None
        Voxel size in Å (1 Å when unknown; the axes still say angstrom).
    levels : int
        Pyramid levels, each half the size of the previous.
    is_labels : bool
        Labels are downsampled by taking every second voxel and tagged ``image-label``.
    chunks : int
        Chunk edge in voxels.
    """
    zarr = require("zarr", "OME-Zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_multiscale

    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"OME-Zarr tomograms are 3D (z, y, x); this array has shape {arr.shape}.")
    vs = np.broadcast_to(np.asarray(1.0 if voxel_size_A is None else voxel_size_A, float), (3,))
    pyramid = _pyramid(arr, max(1, int(levels)), is_labels)
    transforms = [[{"type": "scale", "scale": [float(v) * 2**i for v in vs]}] for i in range(len(pyramid))]
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    target = Path(path).expanduser().resolve()
    if not target.parent.is_dir():
        raise FileNotFoundError(f"Cannot write {target.name!r}: the folder {str(target.parent)!r} does not exist.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        group = zarr.group(parse_url(str(tmp), mode="w").store)
        write_multiscale(
            pyramid, group, chunks=(chunks,) * 3, axes=axes, coordinate_transformations=transforms, name=target.name
        )
        if is_labels:
            group.attrs["image-label"] = {"version": "0.4"}
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote %s: %d levels from %s", target, len(pyramid), arr.shape)
    return target
