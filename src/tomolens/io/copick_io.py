"""copick projects (napari-copick, octopi, the CZII tools), through the ``copick`` package.

A copick project is a JSON config naming the pickable objects (name, label, radius in Å,
colour) and where runs live (``overlay_root``/``static_root``, ``local://`` folders).  In a
run, tomograms are OME-Zarr pyramids per voxel spacing and type, picks are JSON files per
user, session and object (locations in Å plus a 4×4 transform), segmentations are OME-Zarr
label images per voxel spacing, user, session and name.

Conversions: copick location (Å) / voxel size = tomolens voxel coordinate (0-based, as
copick's own converters use it); the transform's translation (Å) is added to the location;
the transform's 3×3 block is the particle orientation ``R`` of
:mod:`tomolens.io.orientation`, stored as RELION ``rot``, ``tilt``, ``psi``.

Relative ``local://`` roots in a config are taken relative to the config file's folder,
so a project folder can be moved (the sample project in ``sample_data/`` relies on it).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tomolens.io.coords import ParticleTable
from tomolens.io.optional import require
from tomolens.io.orientation import RELION_ANGLES, angles_from_matrices, matrices_from_angles, relion_angles

log = logging.getLogger(__name__)

DEFAULT_USER = "tomolens"
DEFAULT_SESSION = "0"


class CopickProjectError(ValueError):
    """A copick config or run that cannot be opened; the message says why."""


@dataclass
class CopickObject:
    """One pickable object of a project: ``name``, ``label``, ``radius_A``, ``is_particle``."""

    name: str
    label: int
    radius_A: float | None
    is_particle: bool


def copick_name(name: str) -> str:
    """``name`` as copick allows object, user and session names (``l_shape`` → ``l-shape``)."""
    require("copick", "copick projects")
    from copick.util.escape import sanitize_name

    return sanitize_name(str(name), suppress_warnings=True)


def _resolve_roots(config: dict, folder: Path) -> dict:
    config = dict(config)
    for key in ("overlay_root", "static_root"):
        root = config.get(key)
        if isinstance(root, str) and root.startswith("local://") and not root.startswith("local:///"):
            config[key] = "local://" + str((folder / root[len("local://") :]).resolve())
    return config


def open_project(config_path: str | os.PathLike):
    """Open a local (filesystem) copick project.

    Raises
    ------
    CopickProjectError
        The config is missing, not JSON, has no pickable objects, or its overlay root
        points to a folder that does not exist.
    """
    copick = require("copick", "copick projects")
    path = Path(config_path)
    if not path.is_file():
        raise CopickProjectError(f"No copick config at {str(path)!r}: choose the project's JSON config file.")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CopickProjectError(f"{path.name} is not a copick config (not JSON: {err}).") from err
    if not isinstance(config, dict) or "pickable_objects" not in config:
        raise CopickProjectError(f"{path.name} is not a copick config: it lists no 'pickable_objects'.")
    if config.get("config_type", "filesystem") != "filesystem":
        raise CopickProjectError(
            f"{path.name} is a {config['config_type']!r} copick project; tomolens opens local "
            "(filesystem) projects. Copy the runs you need into a local project first."
        )
    config = _resolve_roots(config, path.parent)
    overlay = str(config.get("overlay_root", ""))
    if not overlay.startswith("local://"):
        raise CopickProjectError(f"{path.name}: overlay_root {overlay!r} is not a local:// folder.")
    folder = Path(overlay[len("local://") :])
    if not folder.is_dir():
        raise CopickProjectError(
            f"{path.name} points to {str(folder)!r} for its runs (overlay_root), which does not exist. "
            "Fix overlay_root (and static_root) in the config, or create the folder."
        )
    config.setdefault("overlay_fs_args", {"auto_mkdir": True})
    try:
        return copick.from_string(json.dumps(config))
    except Exception as err:  # pydantic validation and fsspec errors
        raise CopickProjectError(f"{path.name} is not a valid copick config: {err}") from err


def project_objects(root) -> list[CopickObject]:
    """The project's pickable objects, in config order."""
    return [
        CopickObject(o.name, int(o.label), None if o.radius is None else float(o.radius), bool(o.is_particle))
        for o in root.config.pickable_objects
    ]


def get_run(root, run_name: str | None):
    """The run called ``run_name`` (the only run when None); a clear error otherwise."""
    names = [r.name for r in root.runs]
    if not names:
        raise CopickProjectError("The copick project has no runs.")
    if run_name is None:
        if len(names) > 1:
            raise CopickProjectError(f"The copick project has {len(names)} runs ({', '.join(names[:10])}); choose one.")
        run_name = names[0]
    run = root.get_run(run_name)
    if run is None:
        raise CopickProjectError(f"No run {run_name!r} in the copick project; runs: {', '.join(names[:10])}.")
    return run


def read_copick_tomogram(root, run_name: str | None, voxel_size_A: float | None = None, tomo_type: str | None = None):
    """A run's tomogram as a lazy :class:`~tomolens.io.zarr_io.OmeZarrVolume`.

    ``voxel_size_A`` None takes the run's finest voxel spacing; ``tomo_type`` None the first
    tomogram type at that spacing (``wbp``, ``denoised``…).
    """
    from tomolens.io.zarr_io import read_ome_zarr

    run = get_run(root, run_name)
    spacings = sorted(v.voxel_size for v in run.voxel_spacings)
    if not spacings:
        raise CopickProjectError(f"Run {run.name!r} has no tomograms (no voxel spacings).")
    vs = spacings[0] if voxel_size_A is None else float(voxel_size_A)
    spacing = run.get_voxel_spacing(vs)
    if spacing is None:
        raise CopickProjectError(f"Run {run.name!r} has no voxel spacing {vs:g} Å; it has {spacings}.")
    tomos = spacing.tomograms if tomo_type is None else [t for t in spacing.tomograms if t.tomo_type == tomo_type]
    if not tomos:
        types = [t.tomo_type for t in spacing.tomograms]
        raise CopickProjectError(f"Run {run.name!r} at {vs:g} Å has no tomogram {tomo_type!r}; it has {types}.")
    store = tomos[0].zarr()
    return read_ome_zarr(getattr(store, "path", None) or store.root)


def read_copick_picks(
    root,
    run_name: str | None,
    voxel_size_A: float,
    object_name: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
) -> dict[tuple, ParticleTable]:
    """A run's picks, one table per (object, user, session), coordinates in voxels of
    ``voxel_size_A``; features ``rot``, ``tilt``, ``psi``, ``score``, ``instance_id``,
    ``radius_A`` (the object's radius), ``object``, ``user_id``, ``session_id``."""
    run = get_run(root, run_name)
    radii = {o.name: o.radius_A for o in project_objects(root)}
    tables = {}
    for picks in run.get_picks(object_name, user_id, session_id):
        positions, transforms = picks.numpy()
        n = len(positions)
        centres_A = positions + transforms[:, :3, 3] if n else np.zeros((0, 3))
        angles = angles_from_matrices(transforms[:, :3, :3]) if n else np.zeros((0, 3))
        features = pd.DataFrame(dict(zip(RELION_ANGLES, angles.T)))
        features["score"] = picks.scores() if n else []
        features["instance_id"] = picks.instance_ids() if n else []
        radius = radii.get(picks.pickable_object_name)
        features["radius_A"] = np.nan if radius is None else radius
        features["object"] = picks.pickable_object_name
        features["user_id"], features["session_id"] = picks.user_id, picks.session_id
        key = (picks.pickable_object_name, picks.user_id, picks.session_id)
        tables[key] = ParticleTable(centres_A[:, ::-1] / voxel_size_A, features, float(voxel_size_A))
    return tables


def write_copick_picks(
    root,
    run_name: str,
    object_name: str,
    table: ParticleTable,
    user_id: str = DEFAULT_USER,
    session_id: str = DEFAULT_SESSION,
) -> None:
    """Store a table as the picks of ``object_name`` by ``user_id``/``session_id`` (replacing
    earlier picks of that triple).  Needs ``table.pixel_size_A``; orientations from
    ``rot``/``tilt``/``psi`` (identity without them)."""
    names = [o.name for o in project_objects(root)]
    object_name = copick_name(object_name)
    if object_name not in names:
        raise CopickProjectError(f"{object_name!r} is not one of the project's objects: {', '.join(names)}.")
    if not table.pixel_size_A:
        raise CopickProjectError("copick stores picks in Å: set the layer's voxel size first.")
    run = root.get_run(run_name) or root.new_run(run_name)
    picks = run.new_picks(object_name, session_id=session_id, user_id=user_id, exist_ok=True)
    n = len(table)
    transforms = np.tile(np.eye(4), (n, 1, 1))
    angles = relion_angles(table.features)
    if angles is not None:
        transforms[:, :3, :3] = matrices_from_angles(angles)
    scores = table.features["score"].to_numpy(float) if "score" in table.features else None
    picks.from_numpy(table.coords_zyx[:, ::-1] * table.pixel_size_A, transforms, scores=scores)
    log.info("stored %d %s picks in run %s (%s/%s)", n, object_name, run_name, user_id, session_id)


def read_copick_segmentations(root, run_name: str | None, voxel_size_A: float | None = None) -> list:
    """A run's segmentations as ``(name, user_id, session_id, OmeZarrVolume)`` (lazy)."""
    from tomolens.io.zarr_io import read_ome_zarr

    run = get_run(root, run_name)
    out = []
    for seg in run.get_segmentations(voxel_size=voxel_size_A) if voxel_size_A else run.segmentations:
        store = seg.zarr()
        out.append((seg.name, seg.user_id, seg.session_id, read_ome_zarr(getattr(store, "path", None) or store.root)))
    return out


def write_copick_segmentation(
    root,
    run_name: str,
    name: str,
    labels: np.ndarray,
    voxel_size_A: float,
    user_id: str = DEFAULT_USER,
    session_id: str = DEFAULT_SESSION,
    multilabel: bool = True,
) -> None:
    """Store integer labels (z, y, x) as a copick segmentation (multilabel: values are object
    labels; else ``name`` must be a pickable object)."""
    run = root.get_run(run_name) or root.new_run(run_name)
    seg = run.new_segmentation(
        float(voxel_size_A), name, session_id, is_multilabel=multilabel, user_id=user_id, exist_ok=True
    )
    seg.from_numpy(np.asarray(labels).astype(np.uint8 if np.max(labels, initial=0) < 256 else np.uint16))


def create_project(
    config_path: str | os.PathLike, objects: list[CopickObject], name: str = "tomolens", runs_folder: str = "runs"
) -> Path:
    """Write a new local copick config whose runs live in ``<config folder>/<runs_folder>``
    (a relative ``local://`` root, see module docstring), and return its path."""
    path = Path(config_path)
    (path.parent / runs_folder).mkdir(parents=True, exist_ok=True)
    config = {
        "config_type": "filesystem",
        "name": name,
        "description": "written by tomolens",
        "version": "0.2.0",
        "pickable_objects": [
            {
                "name": copick_name(o.name),
                "is_particle": o.is_particle,
                "label": o.label,
                "color": list(_colour(o.label)),
                **({"radius": o.radius_A} if o.radius_A else {}),
            }
            for o in objects
        ],
        "overlay_root": f"local://{runs_folder}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    from tomolens.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return path


#: Object colours by label (RGBA), cycling: distinct hues for the first ten objects.
_COLOURS = (
    (158, 158, 158),
    (0, 229, 255),
    (255, 179, 0),
    (224, 64, 251),
    (118, 255, 3),
    (255, 23, 68),
    (41, 121, 255),
    (255, 234, 0),
    (29, 233, 182),
    (255, 109, 0),
)


def _colour(label: int) -> tuple[int, int, int, int]:
    return _COLOURS[label % len(_COLOURS)] + (255,)
