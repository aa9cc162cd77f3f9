"""Every particle-pick format by file extension: STAR/CSV/TXT, Dynamo ``.tbl``, IMOD ``.mod``.

:func:`read_picks` and :func:`write_picks` choose the reader/writer from the extension so
that the napari reader, the writers and ``tomolens convert-coords`` share one table of
formats.  (copick projects are folders with a config; see :mod:`tomolens.io.copick_io`.)
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from tomolens.io.coords import COORD_EXTENSIONS, CoordinateFileError, ParticleTable, read_coordinates, write_coordinates

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
