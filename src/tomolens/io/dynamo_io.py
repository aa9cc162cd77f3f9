"""Dynamo particle tables (``.tbl``), read and written with the ``dynamotable`` package.

A Dynamo table row holds a position ``x, y, z`` (pixels) plus a shift ``dx, dy, dz``
(pixels), Euler angles ``tdrot, tilt, narot`` (ZXZ, degrees), ``cc``, ``class``, the
tomogram index ``tomo`` and the pixel size ``apix`` (Å).  Conversions:

- position: the particle centre is ``(x + dx, y + dy, z + dz)``, used as 0-based voxel
  coordinates, as copick and the dynamo2relion tools do (tomolens writes ``dx = dy = dz
  = 0``);
- angles: ``tdrot, tilt, narot`` ↔ RELION ``rot, tilt, psi`` through the rotation matrix
  (:mod:`tomolens.io.orientation`);
- tomogram: ``tomo`` ↔ ``tomo_name``; the names come from the table map ``<table>.doc``
  (``index path`` per line) beside the table when there is one.
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
from tomolens.io.orientation import RELION_ANGLES, convert_angles, relion_angles

log = logging.getLogger(__name__)

DYNAMO_ANGLES = ("tdrot", "tilt", "narot")
#: Dynamo columns that tomolens turns into coordinates, angles or named features.
_CONSUMED = {
    "x",
    "y",
    "z",
    "dx",
    "dy",
    "dz",
    *DYNAMO_ANGLES,
    "cc",
    "tomo",
    "tomo_file",
    "apix",
    "aligned_value",
    "averaged_value",
}


def read_dynamo(path: str | os.PathLike, pixel_size_A: float | None = None) -> ParticleTable:
    """Read a Dynamo ``.tbl`` table.

    Parameters
    ----------
    path : path-like
        The table; a table map ``<stem>.doc`` beside it names the tomograms.
    pixel_size_A : float, optional
        Overrides the table's ``apix`` column (0 in many tables).

    Returns
    -------
    ParticleTable
        Coordinates (voxels, z, y, x), features ``rot``, ``tilt``, ``psi`` (RELION), ``score``
        (from ``cc``), ``class``, ``tomo_name``, ``tag`` and Dynamo's other non-zero columns.
    """
    dynamotable = require("dynamotable", "Dynamo tables")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {str(path)!r}")
    doc = path.with_suffix(".doc")
    try:
        df = dynamotable.read(str(path), str(doc) if doc.is_file() else None)
    except Exception as err:  # pandas/dynamotable raise several types for malformed tables
        raise CoordinateFileError(f"{path.name} is not a readable Dynamo table: {err}") from err
    missing = [c for c in ("x", "y", "z", *DYNAMO_ANGLES) if c not in df.columns]
    if len(df) == 0 or missing:
        raise CoordinateFileError(
            f"{path.name} is not a Dynamo table with particles: it has {len(df)} rows and "
            f"{df.shape[1]} columns (a Dynamo table has at least 26: tag … x y z)."
        )
    xyz = df[["x", "y", "z"]].to_numpy(float) + df[["dx", "dy", "dz"]].to_numpy(float)
    angles = convert_angles(df[list(DYNAMO_ANGLES)].to_numpy(float), "dynamo", "relion")
    features = pd.DataFrame(dict(zip(RELION_ANGLES, angles.T)))
    features["score"] = df["cc"].to_numpy(float)
    names = df["tomo_file"] if "tomo_file" in df.columns else df["tomo"].astype(int)
    features["tomo_name"] = names.astype(str).to_numpy()
    for col in df.columns:
        if col and col not in _CONSUMED and col not in features and np.any(df[col].to_numpy() != 0):
            features[col] = df[col].to_numpy()
    apix = float(df["apix"].iloc[0]) if "apix" in df.columns else 0.0
    px = pixel_size_A if pixel_size_A is not None else (apix if apix > 0 else None)
    log.info("read %d particles from %s", len(df), path)
    return ParticleTable(xyz[:, ::-1], features, px)


def write_dynamo(path: str | os.PathLike, table: ParticleTable) -> Path:
    """Write a particle table as a Dynamo ``.tbl`` (atomically), with a ``.doc`` table map
    when the tomograms have names that are not Dynamo indices.

    Orientations come from the ``rot``, ``tilt``, ``psi`` features (RELION), converted to
    ``tdrot, tilt, narot``; without them the angles are 0.
    """
    dynamotable = require("dynamotable", "Dynamo tables")
    path = Path(path)
    if path.suffix.lower() != ".tbl":
        path = path.with_suffix(".tbl")
    n = len(table)
    xyz = table.coords_zyx[:, ::-1]
    angles = relion_angles(table.features)
    dyn = convert_angles(angles, "relion", "dynamo") if angles is not None else np.zeros((n, 3))
    df = pd.DataFrame(
        {"tag": np.arange(1, n + 1), "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], **dict(zip(DYNAMO_ANGLES, dyn.T))}
    )
    feats = table.features
    if "score" in feats:
        df["cc"] = pd.to_numeric(feats["score"], errors="coerce").fillna(0.0).to_numpy()
    if "class" in feats and pd.api.types.is_numeric_dtype(feats["class"]):
        df["class"] = feats["class"].to_numpy()
    if table.pixel_size_A:
        df["apix"] = float(table.pixel_size_A)
    table_map = None
    if "tomo_name" in feats:
        names = feats["tomo_name"].astype(str)
        if names.str.fullmatch(r"\d+").all():
            df["tomo"] = names.astype(int).to_numpy()
        else:
            index = {name: i + 1 for i, name in enumerate(dict.fromkeys(names))}
            df["tomo"] = names.map(index).to_numpy()
            table_map = pd.DataFrame({"tomo": list(index.values()), "tomo_file": list(index.keys())})
    with atomic_path(path) as tmp:
        out = f"{tmp}.tbl"
        try:
            dynamotable.write(df, out)
            os.replace(out, tmp)
        finally:
            Path(out).unlink(missing_ok=True)
    if table_map is not None:
        with atomic_path(path.with_suffix(".doc")) as tmp:
            table_map.to_csv(tmp, sep=" ", header=False, index=False)
    log.info("wrote %d particles to %s", n, path)
    return path
