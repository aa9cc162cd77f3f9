"""Result layers built in the worker thread and placed in the viewer on the GUI thread (issue 22).

Adding a layer with ``viewer.add_labels`` (or ``add_points``, ``add_image``) does two things:
it constructs the layer object (the data's dtype checks, colours, features table, and for an
Image without ``contrast_limits`` a pass over the data) and appends it to the viewer (napari's
vispy visual, overlays and layer controls, and the first slice).  Only the second part needs
the GUI thread.  :func:`build_layer` does the first part wherever it is called — a widget calls
it from its job's ``prepare`` function (:meth:`tomolens._widgets._runner.JobRunner.start`), in
the worker — and :func:`place_layer` does the second on the GUI thread, one layer per
event-loop turn, reusing a layer of the same name and type from an earlier run instead of
adding another.
"""

from __future__ import annotations

from typing import Any

import napari

from tomolens.io.mrc import contrast_limits

#: The napari layer classes a widget builds, by the name used in layer-data tuples.
LAYER_TYPES = {"image": napari.layers.Image, "labels": napari.layers.Labels, "points": napari.layers.Points}


def build_layer(data: Any, kwargs: dict, kind: str) -> napari.layers.Layer:
    """A napari layer object from a layer-data tuple, without a viewer (safe in a worker thread).

    Parameters
    ----------
    data : array-like
        The layer's data: an image or labels volume (z, y, x), or point coordinates (N, 3) in voxels.
    kwargs : dict
        The layer's keyword arguments (name, scale, features, colours, …), as for ``viewer.add_<kind>``.
    kind : {"image", "labels", "points"}
        The layer type.

    Returns
    -------
    napari.layers.Layer
        An Image gets :func:`tomolens.io.mrc.contrast_limits` (percentiles of a subsample) when
        ``kwargs`` has none, so that napari does not compute them from the whole volume.
    """
    if kind not in LAYER_TYPES:
        raise ValueError(f"Unknown layer type {kind!r}; expected one of {sorted(LAYER_TYPES)}.")
    if kind == "image" and kwargs.get("contrast_limits") is None:
        kwargs = {**kwargs, "contrast_limits": contrast_limits(data)}
    return LAYER_TYPES[kind](data, **kwargs)


def place_layer(viewer: napari.viewer.Viewer, layer: napari.layers.Layer) -> tuple[napari.layers.Layer, bool]:
    """Show ``layer`` in ``viewer``: update a layer of the same name and type in place, else append it.

    An update copies the scale, translation, units, data (and for Points the features, sizes and
    face colours, for Images the contrast limits) and the metadata into the existing layer,
    keeping the user's other display settings and avoiding napari's remove-and-add crash (napari#6472,
    docs/file_safety.md).  Call on the GUI thread.

    Returns
    -------
    (napari.layers.Layer, bool)
        The layer now in the viewer and whether it was an existing one updated in place.
    """
    name = layer.name
    old = viewer.layers[name] if name in viewer.layers else None
    if old is None or type(old) is not type(layer):
        viewer.layers.append(layer)
        return layer, False
    for placement in ("scale", "translate", "units"):  # the new result's grid (a re-run may change it)
        if tuple(getattr(old, placement)) != tuple(getattr(layer, placement)):
            setattr(old, placement, getattr(layer, placement))
    old.data = layer.data
    if isinstance(layer, napari.layers.Points):
        old.features = layer.features
        old.size = layer.size
        old.face_color = layer.face_color  # the colours the builder computed, per point (RGBA)
    if isinstance(layer, napari.layers.Image):
        old.contrast_limits = layer.contrast_limits
    old.metadata.update(layer.metadata)
    return old, True
