"""napari layers for OME-Zarr tomograms, TIFF stacks and copick runs, and their writers.

- OME-Zarr: one multiscale Image (or Labels) layer over the lazy pyramid, so napari reads
  only the chunks of the slice it shows.
- TIFF: like an MRC volume (memory-mapped when possible).
- copick: a run's tomogram at the chosen voxel spacing, its picks (one Points layer per
  object, user and session, with orientation arrows) and segmentations (Labels).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tomolens._napari.layers import class_colormap, points_layer_data, scale_kwargs, voxel_size_from_layer
from tomolens._napari.orientation_layers import points_with_orientations
from tomolens._napari.pick_layers import notify
from tomolens.io.mrc import contrast_limits

log = logging.getLogger(__name__)

LayerData = tuple[Any, dict, str]


def ome_zarr_layer_data(volume, name: str | None = None) -> LayerData:
    """A multiscale Image (or Labels) layer-data tuple for an :class:`~tomolens.io.zarr_io.OmeZarrVolume`.

    Contrast limits come from the middle slice of the smallest pyramid level, so opening reads
    a chunk or two besides what napari shows."""
    kwargs = {
        "name": name or volume.path.name.removesuffix(".zarr").removesuffix(".ome"),
        "multiscale": len(volume.levels) > 1,
        "metadata": {"path": str(volume.path), "voxel_size_known": volume.voxel_size_A is not None, "kind": "volume"},
        **scale_kwargs(volume.voxel_size_A, 3),
    }
    data = volume.levels if len(volume.levels) > 1 else volume.levels[0]
    if volume.is_labels:
        return data, kwargs, "labels"
    smallest = volume.levels[-1]
    kwargs["contrast_limits"] = contrast_limits(np.asarray(smallest[smallest.shape[0] // 2]))
    kwargs["projection_mode"] = "none"
    return data, kwargs, "image"


def format_reader(path):
    """The reader function for an OME-Zarr folder, a TIFF stack or a copick config, else None."""
    from tomolens.io.tiff_io import TIFF_EXTENSIONS
    from tomolens.io.zarr_io import is_zarr

    p = Path(str(path).rstrip("/"))
    if p.suffix.lower() == ".zarr" or is_zarr(p):
        return read_zarr_layers
    if p.suffix.lower() in TIFF_EXTENSIONS:
        return read_tiff_layers
    if is_copick_config(p):
        return read_copick_layers
    return None


def read_zarr_layers(path) -> list[LayerData]:
    """npe2 reader function for OME-Zarr folders."""
    from tomolens.io.zarr_io import read_ome_zarr

    path = path[0] if isinstance(path, list) else path
    return [ome_zarr_layer_data(read_ome_zarr(path))]


def read_tiff_layers(path) -> list[LayerData]:
    """npe2 reader function for TIFF stacks."""
    from tomolens._napari.layers import volume_layer_data
    from tomolens.io.tiff_io import read_tiff

    path = path[0] if isinstance(path, list) else path
    return [volume_layer_data(read_tiff(path))]


def is_copick_config(path) -> bool:
    """Whether ``path`` is a JSON file that looks like a copick config (cheap check)."""
    p = Path(str(path))
    if p.suffix.lower() != ".json" or not p.is_file() or p.stat().st_size > 5_000_000:
        return False
    try:
        return '"pickable_objects"' in p.read_text(errors="replace")
    except OSError:
        return False


def copick_run_layers(
    config_path, run_name: str | None = None, voxel_size_A: float | None = None, tomo_type: str | None = None
) -> list[LayerData]:
    """A copick run as layers: tomogram, picks (per object/user/session), segmentations.

    ``run_name`` None opens the only run (or the first, with a notification listing the
    others); ``voxel_size_A`` None the finest spacing that has a tomogram.
    """
    from tomolens.io.copick_io import (
        CopickProjectError,
        get_run,
        open_project,
        read_copick_picks,
        read_copick_segmentations,
        read_copick_tomogram,
    )

    root = open_project(config_path)
    names = [r.name for r in root.runs]
    if run_name is None and len(names) > 1:
        run_name = names[0]
        notify(
            f"The copick project has {len(names)} runs ({', '.join(names[:8])}); opened {run_name}. "
            "Choose another with the Copick widget or `tomolens info`."
        )
    run = get_run(root, run_name)
    layers: list[LayerData] = []
    try:
        volume = read_copick_tomogram(root, run.name, voxel_size_A, tomo_type)
    except CopickProjectError as err:
        if voxel_size_A is None:
            raise CopickProjectError(f"{err} Give the voxel spacing of the picks.") from err
        log.info("%s", err)
    else:
        voxel_size_A = volume.voxel_size_A[-1] if volume.voxel_size_A else voxel_size_A
        layers.append(ome_zarr_layer_data(volume, name=f"{run.name} {volume.path.name.removesuffix('.zarr')}"))
    for (obj, user, session), table in read_copick_picks(root, run.name, float(voxel_size_A)).items():
        points = points_layer_data(table, name=f"{run.name} {obj} ({user}/{session})", color_by="object")
        points[1]["metadata"].update(
            {
                "copick": {
                    "config": str(config_path),
                    "run": run.name,
                    "object": obj,
                    "user_id": user,
                    "session_id": session,
                }
            }
        )
        layers.extend(points_with_orientations(points))
    for name, user, session, seg in read_copick_segmentations(root, run.name, float(voxel_size_A)):
        seg.is_labels = True
        data, kwargs, _ = ome_zarr_layer_data(seg, name=f"{run.name} {name} segmentation ({user}/{session})")
        kwargs.update(opacity=0.5, colormap=class_colormap())
        layers.append((data, kwargs, "labels"))
    return layers


def read_copick_layers(path) -> list[LayerData]:
    """npe2 reader function for copick configs."""
    path = path[0] if isinstance(path, list) else path
    return copick_run_layers(path)


def _write_volume(path: str, data, meta: dict, is_labels: bool) -> list[str]:
    vs = voxel_size_from_layer(meta.get("scale"), meta.get("units"))
    arr = np.asarray(data[0] if meta.get("multiscale") else data)
    if path.lower().endswith((".tif", ".tiff")):
        from tomolens.io.tiff_io import write_tiff

        return [str(write_tiff(path, arr, vs, is_labels=is_labels))]
    from tomolens.io.zarr_io import write_ome_zarr

    path = path if path.lower().endswith(".zarr") else path + ".zarr"
    return [str(write_ome_zarr(path, arr, vs, is_labels=is_labels))]


def write_image_volume(path: str, data, meta: dict) -> list[str]:
    """npe2 writer: an Image layer as OME-Zarr (``.zarr``) or a TIFF stack (``.tif``)."""
    return _write_volume(path, data, meta, is_labels=False)


def write_labels_volume(path: str, data, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer as OME-Zarr labels (``.zarr``) or a TIFF stack (``.tif``)."""
    return _write_volume(path, data, meta, is_labels=True)
