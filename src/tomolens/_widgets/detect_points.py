"""The Detect dock's "train from Points layers" box: its controls and the job's inputs, snapshotted.

The user chooses one or more Points layers of clicked particles.  Each layer is one kind, named
after the layer, unless its points carry a ``class`` feature (then each point's class is its
kind); a single layer without a ``class`` feature is one unnamed kind.  The layers must share one
scale (the tomogram's world coordinates); their points are placed in the tomogram's voxels through
world coordinates (:func:`layer_points_in_voxels`).
"""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, Select, SpinBox, create_widget

from tomolens._napari.layers import layer_voxel_size_A, voxel_size_from_layer
from tomolens.detect.points import check_points, parse_kind_radii, parse_region
from tomolens.detect.points_train import MIN_CLICKS

#: Choices of the model that training from points starts from.
START_CURRENT, START_NEW = "the model above", "a new network"
#: Feature of a Points layer that names each point's kind.
KIND_FEATURE = "class"
#: Rows of the layer list shown before it scrolls (keeps the box compact).
_LIST_ROWS = 4


def _layer_source(names: list[str]) -> str:
    quoted = ", ".join(repr(n) for n in names)
    return f"napari Points layer{'s' if len(names) > 1 else ''} {quoted}"


class PointsTrainingBox(Container):
    """Controls of training the detector from clicked particles (one or more Points layers)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.clicks = Select(
            choices=self._points_layers,
            label="clicked particles",
            tooltip="Points layers on particles of the tomogram (at least 5 points in all; Ctrl/Shift-click "
            "to choose several). Each layer is one kind named by the layer, unless its points have a "
            "'class' feature. Pick every particle inside the region.",
        )
        line = self.clicks.native.fontMetrics().lineSpacing()
        self.clicks.native.setMaximumHeight((line + 2) * _LIST_ROWS + 6)  # compact: the list scrolls beyond
        self.negatives = create_widget(
            annotation=napari.layers.Points | None, label="negatives", options={"nullable": True}
        )
        self.negatives.tooltip = "Optional Points on things that are not particles (background around each)."
        self.radius = FloatSpinBox(
            value=0.0,
            min=0.0,
            max=5000.0,
            step=5.0,
            label="radius (Å)",
            tooltip="Particle radius in Å for every kind not named below; 0 = estimated from the clicks "
            "(blob scale), per kind.",
        )
        self.kind_radii = LineEdit(
            value="",
            label="radius per kind",
            tooltip="KIND=Å,KIND=Å (e.g. ribosome=130,proteasome=80): a radius for these kinds (layer "
            "names or classes); the others take the radius above.",
        )
        self.region = LineEdit(
            value="",
            label="picked region",
            tooltip="z0:z1,y0:y1,x0:x1 in voxels: the box where every particle is clicked. "
            "Empty = the clicks' bounding box grown by one radius.",
        )
        self.minutes = FloatSpinBox(
            value=5.0,
            min=0.1,
            max=600.0,
            step=1.0,
            label="time limit (min)",
            tooltip="Training stops after this time or the step budget, keeping the best.",
        )
        self.steps = SpinBox(
            value=300,
            min=10,
            max=100_000,
            step=10,
            label="step budget",
            tooltip="Most optimiser steps (validated every 10).",
        )
        self.start_choice = ComboBox(
            choices=[START_CURRENT, START_NEW],
            value=START_CURRENT,
            label="start from",
            tooltip="Fine-tune the model chosen above (after a round: that round's model), or train a new network.",
        )
        super().__init__(
            widgets=[
                self.clicks,
                self.negatives,
                self.radius,
                self.kind_radii,
                self.region,
                self.minutes,
                self.steps,
                self.start_choice,
            ],
            labels=True,
        )

    def _points_layers(self, _widget=None) -> list[tuple[str, napari.layers.Points]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, napari.layers.Points)]

    def job_inputs(self, image: napari.layers.Image) -> dict:
        """The inputs of :func:`tomolens.detect.points_train.train_from_points` from the controls and layers,
        copied on the GUI thread (all but the output path, start model, polarity, device and command).

        Raises
        ------
        ValueError
            No tomogram or no Points layer chosen, a tomogram without voxel size, layers of different
            scales, a layer without voxel size off the tomogram's scale, points outside the tomogram (the
            layer named), fewer than 5 points in all, or a malformed region or per-kind radius.
        """
        layers = list(self.clicks.value or [])
        if not layers:  # nothing selected: the only Points layer there is (not the negatives), as a dropdown would
            others = [c for c in self.clicks.choices if c is not self.negatives.value]
            layers = others if len(others) == 1 else []
        if image is None or not layers:
            raise ValueError("Choose a tomogram and at least one Points layer of clicked particles to train on.")
        voxel = layer_voxel_size_A(image)
        centres, kinds, kind_sources = clicks_of_layers(layers, image)
        negatives = self.negatives.value
        return {
            "volume": np.asarray(image.data, np.float32),
            "voxel_size_A": voxel,
            "centres_zyx": centres,
            "radius_A": self.radii_A(kinds),
            "kinds": kinds,
            "kind_sources": kind_sources,
            "region": parse_region(self.region.value, image.data.shape) if self.region.value.strip() else None,
            "negatives_zyx": (
                layer_points_in_voxels(negatives, image) if negatives is not None and len(negatives.data) else None
            ),
            "minutes": self.minutes.value,
            "steps": self.steps.value,
            "source": _layer_source([layer.name for layer in layers]),
        }

    def radii_A(self, kinds: list[str] | None) -> float | dict[str, float | None] | None:
        """The radius argument: the one typed (None = estimate), or per kind when kinds are named below."""
        common = self.radius.value or None
        text = self.kind_radii.value.strip()
        if not text:
            return common
        named = parse_kind_radii(text)
        present = list(dict.fromkeys(kinds or []))
        unknown = [k for k in named if k not in present]
        if unknown:
            raise ValueError(
                f"'radius per kind' names {', '.join(map(repr, unknown))}, which no chosen layer holds; "
                f"the kinds are {', '.join(map(repr, present)) or 'none (one layer without a class feature)'}."
            )
        return {k: named.get(k, common) for k in present}


def clicks_of_layers(layers: list, image) -> tuple[np.ndarray, list[str] | None, dict[str, str]]:
    """All chosen layers' points in the tomogram's voxels, each point's kind and each kind's source layers.

    Returns
    -------
    centres : ndarray, float, shape (N, 3)
        z, y, x in the voxels of ``image``.
    kinds : list of str (N) or None
        The ``class`` feature, else the layer's name (with several layers); None for one layer without
        a ``class`` feature (one kind).
    kind_sources : dict {kind: str}
        The layers each kind came from, for the model card.

    Raises
    ------
    ValueError
        Layers of different scales; a layer without voxel size off the tomogram's scale; a layer's points
        outside the tomogram; fewer than 5 points in all.
    """
    scales = {layer.name: tuple(round(float(s), 6) for s in layer.scale[-3:]) for layer in layers}
    if len(set(scales.values())) > 1:
        listed = "; ".join(f"{name!r} {scale}" for name, scale in scales.items())
        raise ValueError(
            f"The Points layers are not in one tomogram's coordinates: their scales differ ({listed}). Give "
            "them the tomogram's scale (voxel size in Å), or add the points while the tomogram is shown."
        )
    centres, kinds, sources = [], [], {}
    for layer in layers:
        points = layer_points_in_voxels(layer, image)
        try:
            check_points(points, image.data.shape, 0)
        except ValueError as err:
            raise ValueError(f"Points layer {layer.name!r}: {err}") from None
        if KIND_FEATURE in layer.features:
            found = layer.features[KIND_FEATURE].astype(str).tolist()
        else:
            found = [layer.name if len(layers) > 1 else ""] * len(points)
        centres.append(points)
        kinds += found
        for kind in dict.fromkeys(found):
            sources.setdefault(kind, []).append(layer.name)
    total = sum(len(c) for c in centres)
    if total < MIN_CLICKS:
        raise ValueError(
            f"Training from points needs at least {MIN_CLICKS} clicked particles; "
            f"{_layer_source([layer.name for layer in layers])} hold{'s' if len(layers) == 1 else ''} {total}. "
            "Click more particles."
        )
    return (
        np.vstack(centres),
        kinds if any(kinds) else None,
        {k: _layer_source(names) for k, names in sources.items()},
    )


def layer_points_in_voxels(points, image) -> np.ndarray:
    """A Points layer's positions in the voxels of the ``image`` layer (z, y, x), through world coordinates.

    Raises
    ------
    ValueError
        The Points layer has neither a voxel size in Å nor the tomogram's scale, so its positions
        cannot be placed in the tomogram.
    """
    data = np.asarray(points.data, float)[:, -3:]
    scale, image_scale = np.asarray(points.scale[-3:], float), np.asarray(image.scale[-3:], float)
    if voxel_size_from_layer(points.scale, points.units) is None and not np.allclose(scale, image_scale):
        raise ValueError(
            f"The Points layer {points.name!r} has no voxel size (its scale is not in Å) and not the "
            f"tomogram's scale: set its scale to {tuple(image_scale)} Å, or add the points while "
            "the tomogram is shown."
        )
    world = data * scale + np.asarray(points.translate[-3:], float)
    return (world - np.asarray(image.translate[-3:], float)) / image_scale
