"""Projection stacks (.mrcs) and angle tables (RELION STAR) for orientation recovery.

STAR files hold one row per image: ``rlnImageName`` (``000001@stack.mrcs``, 1-based),
``rlnAngleRot``, ``rlnAngleTilt``, ``rlnAnglePsi`` (RELION ZYZ Euler angles, degrees;
see :mod:`tomolens.orient.rotations` for the matrix convention) and, when shifts are
known, ``rlnOriginXAngst``/``rlnOriginYAngst``.  Inside tomolens a shift is that of the image
*content* (the particle sits at box centre + shift, Å); RELION's origin is the translation that
brings the particle back to the box centre, i.e. minus that shift, so the sign flips here, at the
file boundary.  An optics block gives ``rlnImagePixelSize``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from tomolens.io import atomic_path, read_mrc, write_mrc
from tomolens.orient.project import MIN_PROJECTIONS, ProjectionSet
from tomolens.orient.rotations import quats_from_relion, relion_from_quats

log = logging.getLogger(__name__)

ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")


def check_stack(images: np.ndarray, name: str = "the stack", min_images: int = MIN_PROJECTIONS) -> np.ndarray:
    """Check that ``images`` is a stack of square 2D images and return it as float32.

    Raises
    ------
    ValueError
        For a 2D image, a 4D array, non-square images or fewer than ``min_images`` images,
        saying what was given and what to do.
    """
    arr = np.asarray(images)
    if arr.ndim != 3:
        raise ValueError(
            f"Orientation recovery needs a stack of 2D projections (N, y, x); {name} has shape "
            f"{arr.shape}. Open an .mrcs particle stack."
        )
    if arr.shape[1] != arr.shape[2]:
        raise ValueError(
            f"The projections in {name} are {arr.shape[2]}×{arr.shape[1]} pixels, not square. "
            "Extract square particle boxes (same width and height) first."
        )
    if arr.shape[0] < min_images:
        raise ValueError(
            f"{name} holds {arr.shape[0]} projections; orientation recovery needs at least "
            f"{min_images} (thousands for useful accuracy)."
        )
    return np.asarray(arr, dtype=np.float32)


def read_projection_stack(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Read an ``.mrcs`` stack: images (N, n, n) float32 and the pixel size in Å (or None).

    Raises
    ------
    ValueError
        When the file is a 3D volume (``.mrc`` map) rather than an image stack, or the
        images are not square or too few.
    """
    vol = read_mrc(path)
    if vol.kind != "stack":
        raise ValueError(
            f"{Path(path).name} is a {vol.kind} of shape {vol.data.shape}, not a stack of projections. "
            "Orientation recovery reads particle stacks (.mrcs); to simulate projections of a 3D map, "
            "use `tomolens orient simulate`."
        )
    return check_stack(vol.data, Path(path).name), vol.pixel_size_A


def write_angles_star(
    path: str | os.PathLike,
    quats: np.ndarray,
    stack_name: str,
    pixel_size_A: float | None = None,
    shifts_A: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    symmetry: str | None = None,
) -> Path:
    """Write orientations as a RELION STAR file (atomically).

    Parameters
    ----------
    path : path-like
        Destination ``.star``.
    quats : ndarray, shape (N, 4)
        Orientations (x, y, z, w).
    stack_name : str
        The stack file named in ``rlnImageName`` (usually just its file name).
    pixel_size_A : float, optional
        Written in the optics block.
    shifts_A : ndarray, shape (N, 2), optional
        Content shifts (x, y) in Å (particle at box centre + shift); written as RELION origins,
        ``rlnOriginXAngst``/``rlnOriginYAngst`` = −shift.
    extra : dict, optional
        More per-image columns (for example ``{"tlOrientErrorDeg": errors}``).
    symmetry : str, optional
        Point group the orientations are known up to (other than C1): written as
        ``tlSymmetryGroup`` in a ``data_tomolens`` block, which RELION ignores (give it to RELION
        as ``--sym``); read back by :func:`read_star_symmetry`.
    """
    import starfile

    angles = relion_from_quats(quats)
    n = len(angles)
    table = pd.DataFrame({"rlnImageName": [f"{i + 1:06d}@{stack_name}" for i in range(n)]})
    for j, col in enumerate(ANGLE_COLUMNS):
        table[col] = angles[:, j]
    if shifts_A is not None:
        table["rlnOriginXAngst"] = -np.asarray(shifts_A)[:, 0]
        table["rlnOriginYAngst"] = -np.asarray(shifts_A)[:, 1]
    table["rlnOpticsGroup"] = 1
    for key, values in (extra or {}).items():
        table[key] = np.asarray(values)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"]})
    if pixel_size_A:
        optics["rlnImagePixelSize"] = [float(pixel_size_A)]
    blocks = {"optics": optics, "particles": table}
    if symmetry and symmetry.upper() != "C1":
        blocks["tomolens"] = {"tlSymmetryGroup": symmetry.upper()}
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True)
    log.info("wrote %d orientations to %s", n, path)
    return Path(path)


def read_angles_star(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read orientations (N, 4) and shifts (N, 2) in Å (or None) from a STAR file.

    Rows are ordered by the image number in ``rlnImageName`` when present.
    """
    import starfile

    data = starfile.read(path, always_dict=True)
    table = data.get("particles")
    if table is None:
        table = next((t for t in data.values() if isinstance(t, pd.DataFrame) and ANGLE_COLUMNS[0] in t), None)
    if table is None or not set(ANGLE_COLUMNS) <= set(table.columns):
        raise ValueError(f"{Path(path).name} has no {', '.join(ANGLE_COLUMNS)} columns; it is not an angles STAR file.")
    if "rlnImageName" in table.columns:
        order = table["rlnImageName"].astype(str).str.split("@").str[0].astype(int).to_numpy()
        table = table.iloc[np.argsort(order, kind="stable")]
    quats = quats_from_relion(table[list(ANGLE_COLUMNS)].to_numpy(float))
    shifts = None
    if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(table.columns):
        shifts = -table[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(float)  # RELION origin = −content shift
    return quats, shifts


def read_star_symmetry(path: str | os.PathLike) -> str:
    """The point group a STAR written by :func:`write_angles_star` names (C1 when none)."""
    import starfile

    block = starfile.read(path, always_dict=True).get("tomolens")
    if isinstance(block, dict) and "tlSymmetryGroup" in block:
        return str(block["tlSymmetryGroup"])
    return "C1"


def write_fsc_csv(path: str | os.PathLike, fsc) -> Path:
    """Write an FSC curve (:class:`tomolens.orient.reconstruct.FSCResult`) as CSV, atomically.

    Columns: ``frequency_per_A``, ``resolution_A`` (1/frequency) and ``fsc``.
    """
    table = pd.DataFrame(
        {"frequency_per_A": fsc.frequency_per_A, "resolution_A": 1.0 / fsc.frequency_per_A, "fsc": fsc.fsc}
    )
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def write_projection_set(stack_path: str | os.PathLike, star_path: str | os.PathLike, pset: ProjectionSet) -> None:
    """Write a simulated :class:`ProjectionSet` as an ``.mrcs`` stack plus a STAR of true angles."""
    if Path(stack_path).suffix.lower() != ".mrcs":
        raise ValueError(f"Write projection stacks as .mrcs; got {Path(stack_path).name!r}.")
    write_mrc(
        stack_path,
        pset.images,
        (1.0, pset.pixel_size_A, pset.pixel_size_A),
        labels=(f"tomolens orient simulate noise_variance={pset.noise_variance:.4g}",),
    )
    if pset.quats is not None:
        write_angles_star(star_path, pset.quats, Path(stack_path).name, pset.pixel_size_A, pset.shifts_A)
