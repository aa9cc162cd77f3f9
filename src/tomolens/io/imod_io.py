"""IMOD models (``.mod``) as particle tables, and IMOD ``.tlt``/``.xf`` tilt-series files.

Models are read and written with the ``imodmodel`` package.  Every point of every contour
becomes one particle with the features ``object`` and ``contour`` numbered from 1 as 3dmod
shows them; model coordinates are IMOD's image index coordinates (0-based voxels, x, y, z).
The model's pixel size (header ``pixelsize`` in ``units``) becomes the table's pixel size
in Å.  Writing groups the points back by ``object``/``contour`` (scattered-point objects).

``.tlt`` (one tilt angle in degrees per line) and ``.xf`` (per view ``a11 a12 a21 a22 dx
dy``) are plain numeric tables that numpy reads as they are; see :func:`read_tlt` and
:func:`read_xf`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tomolens.io.atomic import atomic_path
from tomolens.io.coords import CoordinateFileError, ParticleTable
from tomolens.io.optional import require

log = logging.getLogger(__name__)

#: IMOD header ``units`` value for Å (power of ten of a metre).
IMOD_UNITS_ANGSTROM = -10


def _pixel_size_A(header) -> float | None:
    if header.units == 0 or header.pixelsize <= 0:
        return None  # "pixels": no physical size recorded
    return float(header.pixelsize) * 10.0 ** (header.units + 10)


def read_imod_model(path: str | os.PathLike, pixel_size_A: float | None = None) -> ParticleTable:
    """Read the points of an IMOD model.

    Returns
    -------
    ParticleTable
        Coordinates (voxels, z, y, x) and features ``object``, ``contour`` (int, from 1).

    Raises
    ------
    CoordinateFileError
        Not an IMOD model, or a model without points.
    """
    imodmodel = require("imodmodel", "IMOD models")
    from imodmodel.dataframe import model_to_dataframe

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    try:
        model = imodmodel.ImodModel.from_file(path)
    except Exception as err:  # the parser raises struct/pydantic/value errors for other files
        raise CoordinateFileError(f"{path.name} is not a readable IMOD model: {err}") from err
    n_points = sum(len(c.points) for o in model.objects for c in o.contours)
    if n_points == 0:
        raise CoordinateFileError(
            f"{path.name} is an IMOD model with {len(model.objects)} object(s) but no points; "
            "add points in 3dmod (or choose another model)."
        )
    df = model_to_dataframe(model).reset_index(drop=True)
    features = pd.DataFrame(
        {"object": df["object_id"].to_numpy(int) + 1, "contour": df["contour_id"].to_numpy(int) + 1}
    )
    xyz = df[["x", "y", "z"]].to_numpy(float)
    px = pixel_size_A if pixel_size_A is not None else _pixel_size_A(model.header)
    log.info("read %d points in %d objects from %s", len(df), len(model.objects), path)
    return ParticleTable(xyz[:, ::-1], features, px)


def write_imod_model(path: str | os.PathLike, table: ParticleTable) -> Path:
    """Write a particle table as an IMOD model (atomically): one scattered-point object per
    ``object`` feature value (else one object), one contour per ``contour`` value."""
    imodmodel = require("imodmodel", "IMOD models")
    path = Path(path)
    xyz = table.coords_zyx[:, ::-1]
    feats = table.features
    df = pd.DataFrame({"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    df["object_id"] = feats["object"].to_numpy(int) - 1 if "object" in feats else 0
    df["contour_id"] = feats["contour"].to_numpy(int) - 1 if "contour" in feats else 0
    model = imodmodel.ImodModel.from_dataframe(df)
    if table.pixel_size_A:
        model.header.pixelsize = float(table.pixel_size_A)
        model.header.units = IMOD_UNITS_ANGSTROM
    if len(xyz):
        model.header.xmax, model.header.ymax, model.header.zmax = (int(np.ceil(v)) + 1 for v in xyz.max(0))
    with atomic_path(path) as tmp:
        model.to_file(tmp)
    log.info("wrote %d points to %s", len(xyz), path)
    return path


def read_tlt(path: str | os.PathLike) -> np.ndarray:
    """Tilt angles in degrees, shape (n_views,), from an IMOD ``.tlt`` file."""
    angles = np.loadtxt(path, ndmin=1, dtype=float)
    if angles.ndim != 1 or not len(angles):
        raise CoordinateFileError(f"{Path(path).name} is not a .tlt file: expected one angle per line.")
    return angles


def write_tlt(path: str | os.PathLike, angles_deg) -> Path:
    """Write tilt angles (degrees) as an IMOD ``.tlt`` file, one per line (atomically)."""
    with atomic_path(path) as tmp:
        np.savetxt(tmp, np.asarray(angles_deg, float).reshape(-1), fmt="%.2f")
    return Path(path)


def read_xf(path: str | os.PathLike) -> np.ndarray:
    """IMOD ``.xf`` transforms, shape (n_views, 2, 3): ``[[a11, a12, dx], [a21, a22, dy]]``
    per view (the 2D alignment of each tilt image, shifts in unbinned pixels)."""
    rows = np.loadtxt(path, ndmin=2, dtype=float)
    if rows.shape[1] != 6:
        raise CoordinateFileError(f"{Path(path).name} is not an .xf file: expected 6 numbers per line.")
    a11, a12, a21, a22, dx, dy = rows.T
    return np.stack([np.stack([a11, a12, dx], 1), np.stack([a21, a22, dy], 1)], axis=1)
