"""What ``tomolens info`` and ``tomolens convert-coords`` do for every format.

``describe_path`` gives the lines ``tomolens info`` prints for an MRC, TIFF, OME-Zarr,
copick config or pick file; ``convert_picks`` reads picks from one format (a file, or a
copick run/object/user/session) and writes them to another, converting coordinates and
Euler-angle conventions, optionally one tomogram only or one file per tomogram.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomolens.io.coords import ParticleTable
from tomolens.io.orientation import relion_angles

log = logging.getLogger(__name__)


def _is_copick(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def volume_lines(data, voxel_size_A, kind: str) -> list[str]:
    """Kind, shape, dtype and voxel size (4 significant digits: no float32 noise such as 10.520000110973012)."""
    axes = "(z, y, x)" if data.ndim == 3 else "(y, x)" if data.ndim == 2 else "(c, z, y, x)"
    vs = " × ".join(f"{v:.4g}" for v in voxel_size_A) + f" Å {axes}" if voxel_size_A else "unknown"
    return [
        f"kind:        {kind}",
        f"shape:       {' × '.join(str(n) for n in data.shape)} {axes}",
        f"dtype:       {data.dtype}",
        f"voxel size:  {vs}",
    ]


def _zarr_lines(path: Path) -> list[str]:
    from tomolens.io.zarr_io import read_ome_zarr

    vol = read_ome_zarr(path)
    lines = volume_lines(vol.data, vol.voxel_size_A, "OME-Zarr " + ("labels" if vol.is_labels else "image"))
    lines.append(f"levels:      {len(vol.levels)}: " + ", ".join(str(tuple(lv.shape)) for lv in vol.levels))
    lines.append(f"chunks:      {tuple(c[0] for c in vol.data.chunks)}")
    return lines


def _copick_lines(path: Path) -> list[str]:
    from tomolens.io.copick_io import open_project, project_objects

    root = open_project(path)
    objects = project_objects(root)
    lines = [
        f"kind:        copick project {root.config.name!r}",
        "objects:     "
        + ", ".join(
            f"{o.name} (label {o.label}" + (f", radius {o.radius_A:g} Å)" if o.radius_A else ")") for o in objects
        ),
    ]
    for run in root.runs:
        lines.append(f"run {run.name}:")
        for spacing in sorted(run.voxel_spacings, key=lambda v: v.voxel_size):
            types = ", ".join(t.tomo_type for t in spacing.tomograms) or "no tomograms"
            lines.append(f"  voxel spacing {spacing.voxel_size:g} Å: {types}")
        for picks in run.picks:
            lines.append(
                f"  picks {picks.pickable_object_name} by {picks.user_id}/{picks.session_id}: {len(picks.points or [])}"
            )
        for seg in run.segmentations:
            lines.append(f"  segmentation {seg.name} by {seg.user_id}/{seg.session_id} at {seg.voxel_size:g} Å")
    return lines


def _pick_lines(path: Path) -> list[str]:
    from tomolens.io.picks import read_picks
    from tomolens.io.star_tomo import describe_tomograms, tomogram_names

    table = read_picks(path)
    lines = [
        f"kind:        particle picks ({path.suffix.lower().lstrip('.')})",
        f"particles:   {len(table)}",
        f"pixel size:  {f'{table.pixel_size_A:g} Å' if table.pixel_size_A else 'unknown'}",
        f"angles:      {'yes (RELION rot, tilt, psi)' if relion_angles(table.features) is not None else 'no'}",
        f"features:    {', '.join(map(str, table.features.columns)) or 'none'}",
    ]
    if len(tomogram_names(table)) > 1:
        lines.append(f"tomograms:   {describe_tomograms(table, path.name)}")
    return lines


def describe_path(path: str | Path) -> list[str]:
    """Lines describing any file tomolens reads (``tomolens info``)."""
    from tomolens.io.mrc import MRC_EXTENSIONS, read_mrc
    from tomolens.io.picks import PICK_EXTENSIONS
    from tomolens.io.tiff_io import TIFF_EXTENSIONS
    from tomolens.io.zarr_io import is_zarr

    path = Path(path)
    suffix = path.suffix.lower()
    head = [f"file:        {path}"]
    if suffix == ".zarr" or is_zarr(path):
        return head + _zarr_lines(path)
    if _is_copick(path):
        return head + _copick_lines(path)
    if suffix in TIFF_EXTENSIONS:
        from tomolens.io.tiff_io import read_tiff

        vol = read_tiff(path)
        return head + volume_lines(vol.data, vol.voxel_size_A, "TIFF stack" + (" (labels)" if vol.is_labels else ""))
    if suffix in PICK_EXTENSIONS:
        return head + _pick_lines(path)
    if suffix in MRC_EXTENSIONS:
        vol = read_mrc(path)
        return head + volume_lines(vol.data, vol.voxel_size_A, vol.kind + (" (labels)" if vol.is_labels else ""))
    raise ValueError(
        f"{path.name}: tomolens reads MRC, TIFF, OME-Zarr, copick configs (.json) and pick files "
        f"({', '.join(PICK_EXTENSIONS)})."
    )


@dataclass
class CopickTarget:
    """Which picks of a copick project: run, object, user, session, voxel size (Å)."""

    run: str | None = None
    object: str | None = None
    user: str | None = None
    session: str | None = None
    voxel_size_A: float | None = None


def read_any_picks(src: Path, pixel_size_A: float | None, shape_zyx, copick: CopickTarget) -> ParticleTable:
    """Picks from a pick file, or from a copick project (one object/user/session, or all of them)."""
    if not _is_copick(src):
        from tomolens.io.checks import require_regular_file
        from tomolens.io.picks import read_picks

        return read_picks(require_regular_file(src, "pick file"), pixel_size_A, shape_zyx)
    import pandas as pd

    from tomolens.io.copick_io import open_project, read_copick_picks

    vs = copick.voxel_size_A or pixel_size_A
    if not vs:
        raise ValueError("Reading copick picks needs --voxel-size (Å) for the voxel coordinates.")
    tables = list(
        read_copick_picks(open_project(src), copick.run, vs, copick.object, copick.user, copick.session).values()
    )
    if not tables:
        raise ValueError(
            f"{src.name}: no picks match object {copick.object}, user {copick.user}, "
            f"session {copick.session} in run {copick.run or '(the only run)'}."
        )
    return ParticleTable(
        np.concatenate([t.coords_zyx for t in tables]), pd.concat([t.features for t in tables], ignore_index=True), vs
    )


def write_any_picks(dst: Path, table: ParticleTable, copick: CopickTarget, **kwargs) -> str:
    """Write picks to a pick file or into a copick project; returns what was written."""
    if not _is_copick(dst):
        from tomolens.io.picks import write_picks

        write_picks(dst, table, **kwargs)
        return str(dst)
    from tomolens.io.copick_io import DEFAULT_SESSION, DEFAULT_USER, open_project, write_copick_picks

    if not copick.run or not copick.object:
        raise ValueError("Writing into a copick project needs --run and --object.")
    write_copick_picks(
        open_project(dst),
        copick.run,
        copick.object,
        table,
        copick.user or DEFAULT_USER,
        copick.session or DEFAULT_SESSION,
    )
    return f"{dst} run {copick.run}, object {copick.object}"
