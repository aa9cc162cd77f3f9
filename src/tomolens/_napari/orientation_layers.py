"""Oriented picks: a napari Vectors layer along each particle's own z axis.

Picks with Euler angles (STAR ``rlnAngleRot/Tilt/Psi``, Dynamo, copick transforms; stored
as the features ``rot``, ``tilt``, ``psi``, RELION ZYZ) get an arrow from the particle
centre along ``R @ e_z`` (see :mod:`tomolens.io.orientation`), as long as the particle's
radius.  Readers add the arrows next to the Points layer; right-click a Points layer ▸
"Show/hide particle orientations" toggles them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tomolens._napari.layers import scale_kwargs
from tomolens.io.orientation import particle_axes_zyx, relion_angles

log = logging.getLogger(__name__)

#: Layer metadata key that names the Points layer a Vectors layer belongs to.
ORIENTATION_OF = "orientation_of"


def orientation_vectors_data(
    coords_zyx: np.ndarray, features, pixel_size_A: float | None, sizes_px, name: str
) -> tuple[Any, dict, str] | None:
    """A napari Vectors layer-data tuple for oriented picks, or None without angles.

    Parameters
    ----------
    coords_zyx : array, shape (N, 3)
        Particle centres in voxels.
    features : pandas.DataFrame
        With ``rot``, ``tilt``, ``psi`` (degrees, RELION ZYZ).
    pixel_size_A : float or None
        The layer's scale, so the arrows lie over the points.
    sizes_px : float or array of shape (N,)
        Point diameters in voxels; each arrow is half as long (the particle radius).
    name : str
        The Points layer's name; the Vectors layer is ``"<name> orientation"``.
    """
    angles = relion_angles(features)
    if angles is None or not len(angles):
        return None
    coords = np.asarray(coords_zyx, float).reshape(-1, 3)
    half = np.broadcast_to(np.asarray(sizes_px, float), (len(coords),))[:, None] / 2.0
    vectors = np.stack([coords, particle_axes_zyx(angles) * half], axis=1)
    kwargs = {
        "name": f"{name} orientation",
        "edge_width": 0.15 * float(np.median(half)) + 0.5,
        "edge_color": "#ffea00",
        "vector_style": "arrow",
        "projection_mode": "fade",
        "metadata": {ORIENTATION_OF: name},
        **scale_kwargs(pixel_size_A, 3),
    }
    return vectors, kwargs, "vectors"


def points_with_orientations(points: tuple[Any, dict, str]) -> list[tuple[Any, dict, str]]:
    """A Points layer-data tuple followed by its orientation Vectors tuple when it has angles."""
    data, kwargs, _ = points
    scale = kwargs.get("scale")
    px = float(scale[-1]) if scale is not None and "angstrom" in str(kwargs.get("units")) else None
    vectors = orientation_vectors_data(
        data, kwargs.get("features"), px, kwargs.get("size", 8.0), kwargs.get("name", "particles")
    )
    return [points] if vectors is None else [points, vectors]


def toggle_orientations(layer, viewer) -> None:
    """Show or hide the orientation arrows of a Points layer (layer context-menu command).

    Makes the Vectors layer from the layer's ``rot``/``tilt``/``psi`` features the first time;
    later calls toggle its visibility.  Without angles, says so in a notification.
    """
    from napari.layers import Points
    from napari.utils.notifications import show_info, show_warning

    if not isinstance(layer, Points):
        show_warning("Select a Points layer of picks to show their orientations.")
        return
    for other in viewer.layers:
        if other.metadata.get(ORIENTATION_OF) == layer.name and other._type_string == "vectors":
            other.visible = not other.visible
            return
    sizes = layer.size if len(layer.data) else 8.0
    px = float(layer.scale[-1]) if any("angstrom" in str(u) for u in layer.units) else None
    made = orientation_vectors_data(layer.data, layer.features, px, sizes, layer.name)
    if made is None:
        show_warning(
            f"{layer.name} has no orientations: it needs the features rot, tilt and psi "
            "(RELION Euler angles in degrees)."
        )
        return
    data, kwargs, _ = made
    kwargs.pop("units", None), kwargs.pop("axis_labels", None)
    kwargs["scale"] = tuple(layer.scale)
    viewer.add_vectors(data, units=layer.units, **kwargs)
    show_info(f"Orientations of {len(layer.data)} picks in {layer.name}: arrows along each particle's z axis.")
