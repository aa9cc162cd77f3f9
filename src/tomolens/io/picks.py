"""Every particle-pick format by file extension: STAR/CSV/TXT, Dynamo ``.tbl``, IMOD ``.mod``.

:func:`read_picks` and :func:`write_picks` choose the reader/writer from the extension so
that the napari reader, the writers and ``tomolens convert-coords`` share one table of
formats.  (copick projects are folders with a config; see :mod:`tomolens.io.copick_io`.)
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from tomolens.io.coords import COORD_EXTENSIONS, CoordinateFileError, ParticleTable, read_coordinates, write_coordinates

log = logging.getLogger(__name__)

DYNAMO_EXTENSIONS = (".tbl",)
IMOD_EXTENSIONS = (".mod",)
PICK_EXTENSIONS = COORD_EXTENSIONS + DYNAMO_EXTENSIONS + IMOD_EXTENSIONS
#: Extension → (module, reader, writer) for the formats of optional libraries, imported on use.
_OPTIONAL_FORMATS = {
    **dict.fromkeys(DYNAMO_EXTENSIONS, ("tomolens.io.dynamo_io", "read_dynamo", "write_dynamo")),
    **dict.fromkeys(IMOD_EXTENSIONS, ("tomolens.io.imod_io", "read_imod_model", "write_imod_model")),
}


def _handler(path: str | os.PathLike, which: int):
    """The reader (``which`` 1) or writer (2) for the extension of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix in _OPTIONAL_FORMATS:
        entry = _OPTIONAL_FORMATS[suffix]
        return getattr(importlib.import_module(entry[0]), entry[which])
    if suffix in COORD_EXTENSIONS:
        return (None, read_coordinates, write_coordinates)[which]
    raise CoordinateFileError(f"Unknown pick format {suffix!r}; use one of {', '.join(PICK_EXTENSIONS)}.")


def read_picks(
    path: str | os.PathLike, pixel_size_A: float | None = None, tomogram_shape_zyx: tuple[int, int, int] | None = None
) -> ParticleTable:
    """Read particle picks from any supported file (format from the extension).

    Parameters
    ----------
    path : path-like
        ``.star``, ``.csv``, ``.txt``, ``.coords``, ``.tbl`` (Dynamo) or ``.mod`` (IMOD).
    pixel_size_A : float, optional
        Overrides the file's pixel size.
    tomogram_shape_zyx : tuple of int, optional
        For RELION 5 centred STAR coordinates.
    """
    reader = _handler(path, 1)
    if reader is read_coordinates:
        return reader(path, pixel_size_A, tomogram_shape_zyx)
    return reader(path, pixel_size_A)


def write_picks(path: str | os.PathLike, table: ParticleTable, **kwargs) -> Path:
    """Write particle picks; the format follows the extension (``kwargs`` go to
    :func:`~tomolens.io.coords.write_coordinates` for STAR/CSV/TXT)."""
    writer = _handler(path, 2)
    return writer(path, table, **kwargs) if writer is write_coordinates else writer(path, table)


def in_voxels_of(table: ParticleTable, voxel_size_A: float, name: str = "picks") -> ParticleTable:
    """The picks in the voxels of a tomogram of ``voxel_size_A`` Å: rescaled by their own pixel size / the voxel
    size when both are known and differ (picks made at another binning), as napari does through world coordinates.

    Parameters
    ----------
    table : ParticleTable
        Coordinates (z, y, x) in voxels of ``table.pixel_size_A`` Å (None: taken as the tomogram's voxels).
    voxel_size_A : float
        The tomogram's voxel size, Å.
    name : str
        Named in the log line that says the picks were converted.

    Returns
    -------
    ParticleTable
        Same features; ``pixel_size_A`` is ``voxel_size_A``.
    """
    own = table.pixel_size_A
    coords = table.coords_zyx
    if own and abs(own - voxel_size_A) > 1e-3 * voxel_size_A:
        log.info(
            "%s: coordinates at %.4g Å per pixel converted to the tomogram's %.4g Å voxels (× %.4g)",
            name,
            own,
            voxel_size_A,
            own / voxel_size_A,
        )
        coords = coords * (own / voxel_size_A)
    return ParticleTable(coords, table.features, voxel_size_A, table.optics)


def read_picks_on_tomogram(
    path: str | os.PathLike,
    voxel_size_A: float,
    tomogram_shape_zyx: tuple[int, int, int],
    pixel_size_A: float | None = None,
) -> ParticleTable:
    """Read picks in the voxels of a tomogram, whatever binning they were made at.

    Pixel coordinates are converted with their own pixel size (``pixel_size_A``, else the file's:
    ``rlnImagePixelSize`` / ``rlnDetectorPixelSize`` in STAR, ``pixel_size_A`` in CSV); coordinates in Å (RELION 5
    centred, CSV ``unit`` Å without a pixel size) with the tomogram's voxel size.  Picks whose pixel size is
    unknown are taken as the tomogram's voxels (the bounds check of the caller then says if they do not fit).

    Parameters
    ----------
    path : path-like
        STAR/CSV/TXT, Dynamo ``.tbl`` or IMOD ``.mod``.
    voxel_size_A : float
        The tomogram's voxel size, Å.
    tomogram_shape_zyx : tuple of int
        The tomogram's size in voxels (for RELION 5 centred coordinates).
    pixel_size_A : float, optional
        The picks' own pixel size, Å, when the file does not say (or says wrong).

    Returns
    -------
    ParticleTable
        Coordinates (z, y, x) in the tomogram's voxels; ``pixel_size_A`` is ``voxel_size_A``.
    """
    name = Path(path).name
    if Path(path).suffix.lower() == ".star" and _is_centred_star(path):  # Å: straight to the tomogram's voxels
        return read_picks(path, voxel_size_A, tomogram_shape_zyx)
    try:
        table = read_picks(path, pixel_size_A, tomogram_shape_zyx)
    except CoordinateFileError:
        if pixel_size_A is not None:
            raise
        return read_picks(path, voxel_size_A, tomogram_shape_zyx)  # Å without a pixel size: the tomogram's
    return in_voxels_of(table, voxel_size_A, name)


def _is_centred_star(path: str | os.PathLike) -> bool:
    """Whether a STAR file holds RELION 5 centred Å coordinates rather than pixel ones."""
    from tomolens.io.coords import CENTRED_COLS, PIXEL_COLS, _read_star_table

    df, _ = _read_star_table(Path(path))
    return not set(PIXEL_COLS[:2]) <= set(df.columns) and set(CENTRED_COLS[:2]) <= set(df.columns)
