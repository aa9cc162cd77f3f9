"""npe2 writers: Image → MRC float32, Labels → MRC uint16/int16, Points → STAR/CSV/TXT.

Every write is atomic (a temporary file beside the target, then a rename).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomolens import __version__
from tomolens.io.picks import PICK_EXTENSIONS, write_picks
from tomolens.io.mrc import write_mrc
from tomolens._napari.layers import table_from_points, voxel_size_from_layer

PROVENANCE = f"written by tomolens {__version__}"


def _mrc_path(path: str) -> str:
    return path if Path(path).suffix.lower() in (".mrc", ".rec", ".map", ".mrcs") else path + ".mrc"


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write an Image layer as a float32 MRC carrying its voxel size."""
    vs = voxel_size_from_layer(meta.get("scale"), meta.get("units"))
    out = _mrc_path(path)
    write_mrc(out, np.asarray(data), vs, is_labels=False, labels=(PROVENANCE,))
    return [out]


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write a Labels layer as a uint16 (or int16) MRC tagged to reopen as labels."""
    vs = voxel_size_from_layer(meta.get("scale"), meta.get("units"))
    out = _mrc_path(path)
    write_mrc(out, np.asarray(data), vs, is_labels=True, labels=(PROVENANCE,))
    return [out]


def write_points(path: str, data, meta: dict) -> list[str]:
    """Write a Points layer as STAR (RELION pixel form), CSV, TXT, Dynamo ``.tbl`` or IMOD
    ``.mod`` with its features (angles converted for Dynamo)."""
    if Path(path).suffix.lower() not in PICK_EXTENSIONS:
        path = path + ".star"
    table = table_from_points(data, meta)
    kwargs = {"comment": PROVENANCE} if Path(path).suffix.lower() not in (".tbl", ".mod") else {}
    write_picks(path, table, **kwargs)
    return [path]
