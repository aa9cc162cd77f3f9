"""The "Pick by example" dock widget: click a few particles (or give a map), get a similarity map and picks.

The examples are a Points layer on the tomogram (1-10 clicks usually suffice); when it has a
``class`` feature, each class is its own target.  A reference map file replaces the clicks
(template method).  "Find similar" computes the similarity in a worker
(:func:`tomolens.embed.pick.find_similar`: rotation-searched template matching by default,
or a trained embedding) and adds an Image layer of the similarity (first target) and a
Points layer of the picks (features ``score`` and ``class``); the threshold and minimum
distance re-pick live from the stored map.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import napari
import numpy as np
from magicgui.widgets import Container, FileEdit, Label, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._widgets._fields import show_whole_path
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._runner import JobRunner, computing
from tomolens._napari.layers import layer_voxel_size_A
from tomolens._widgets.classify import _snapshot, colour_by
from tomolens.embed.pick import (
    PICK_PARAMS,
    SimilarityMap,
    find_similar,
    pick_peaks,
)

log = logging.getLogger(__name__)

_LIVE = ("threshold", "min_distance_A")


class PickByExampleWidget(Container):
    """Pick particles that look like clicked examples or a reference map (template matching or embedding)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image_picker = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.image_picker.tooltip = "The tomogram to search."
        self.examples_picker = create_widget(
            annotation=napari.layers.Points | None, label="examples", options={"nullable": True}
        )
        self.examples_picker.tooltip = (
            "Points layer with 1-10 clicked examples of the particle; a 'class' "
            "feature makes each class its own target."
        )
        self.reference = FileEdit(
            mode="r",
            filter="*.mrc *.map",
            label="reference map",
            tooltip="Optional density map (MRC with a voxel size) used as the template instead of the "
            "examples (template method); resampled to the tomogram's voxel size.",
        )
        show_whole_path(self.reference)
        self.params = ParamPanel(PICK_PARAMS)
        self.runner = JobRunner("Find similar", title="Pick by example")
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        super().__init__(
            widgets=[self.image_picker, self.examples_picker, self.reference, self.params, self.runner, self.summary]
        )
        self.runner.run_button.changed.connect(self.start)
        self.params.controls["embed_model"].changed.connect(self._model_chosen)
        for name in _LIVE:
            self.params.controls[name].changed.connect(self.repick)
        self.result: SimilarityMap | None = None
        self._image = None

    def _model_chosen(self, *_) -> None:
        """Choosing an embedding model selects the embedding method."""
        if self.params.controls["embed_model"].value.strip():
            self.params.controls["method"].value = "embedding"

    def reference_path(self) -> str | None:
        """The reference map file, or None when the field is empty."""
        text = str(self.reference.value or "").strip()
        return None if text in ("", ".") else text

    def start(self, *_) -> None:
        image, layer, reference = self.image_picker.value, self.examples_picker.value, self.reference_path()
        try:
            if reference and layer is None:
                if image is None or image.ndim != 3:
                    raise ValueError("Choose a 3D tomogram (Image) layer.")
                tomo, coords, voxel = image.data, np.empty((0, 3)), layer_voxel_size_A(image)
            else:
                tomo, coords, voxel = _snapshot(image, layer)
            if len(coords) == 0 and not reference:
                raise ValueError("Click at least one example particle in the examples layer (or give a reference map).")
            v = self.params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        targets = None
        if layer is not None and len(coords) and "class" in layer.features:
            targets = layer.features["class"].astype(str).to_numpy()
        self._image = image
        settings = {k: val for k, val in v.items() if k != "method"}
        job = find_similar(tomo, coords, targets, voxel, v["method"], reference=reference, **settings)
        spec = {
            "name": f"{image.name} similarity",
            "translate": tuple(image.translate[-3:]),
            "units": image.units,
            "colormap": "magma",
            "contrast_limits": (0.0, 1.0 if v["method"] == "embedding" else 0.6),
            "blending": "additive",
            "opacity": 0.6,
        }
        image_scale = np.asarray(image.scale[-3:])
        self.runner.start(
            job, self.show_result, prepare=lambda result: (result, similarity_layer(result, image_scale, spec))
        )

    def show_result(self, prepared: tuple) -> Iterator[None]:
        """Similarity Image layer (built in the worker; updated in place on a re-run), then the picks Points
        layer in the next event-loop turn (the runner advances this generator)."""
        result, layer = prepared
        self.result = result
        place_layer(self.viewer, layer)
        yield
        self.repick()
        agree = ", ".join(
            f"{t}: {a.min():.2f}-{a.max():.2f}" for t, a in zip(result.targets, result.example_similarity) if len(a)
        )
        notes = "".join(f"; {n}" for n in result.info.get("notes", []))
        show_info(f"Similarity map ready; the examples' similarity: {agree or 'no examples'}{notes}")

    def repick(self, *_) -> None:
        """Picks from the stored similarity map at the current threshold and minimum distance, in the worker
        (a full-resolution template map takes longer than a GUI frame); only the latest request runs."""
        if self.result is None or self._image is None:
            return
        try:
            v = self.params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        result = self.result
        self.runner.start_latest(
            lambda: computing(
                "picking the similarity map's peaks", pick_peaks, result, v["threshold"], v["min_distance_A"]
            ),
            lambda picks: self.show_picks(picks, v["threshold"]),
        )

    def show_picks(self, picks, threshold: float) -> None:
        """Create or update the picks Points layer and the summary line."""
        image = self._image
        name = f"{image.name} picks by example"
        data = picks[["z", "y", "x"]].to_numpy()
        features = picks[["score", "class"]]
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.features = features
        else:
            layer = self.viewer.add_points(
                data,
                name=name,
                features=features,
                scale=tuple(image.scale[-3:]),
                translate=tuple(image.translate[-3:]),
                units=image.units,
                size=8,
                border_color="white",
                out_of_slice_display=True,
            )
        if len(picks):
            colour_by(layer, "class")
        counts = picks["class"].value_counts()
        self.summary.value = f"{len(picks)} picks at similarity ≥ {threshold:.2f}: " + ", ".join(
            f"{k}: {n}" for k, n in counts.items()
        )


def similarity_layer(result: SimilarityMap, image_scale: np.ndarray, spec: dict) -> napari.layers.Image:
    """The first target's similarity map as an Image layer on the tomogram's grid, without a viewer.

    ``image_scale`` is the tomogram layer's (z, y, x) scale; the map has one voxel per
    ``result.step_voxels`` tomogram voxels.  ``spec`` holds the name, colours and placement.
    """
    scale = tuple(np.asarray(image_scale, float) * result.step_voxels)
    # a binned map's voxel g is centred on tomogram voxel g × step + origin
    origin = float(result.info.get("origin_voxels", 0.0)) * np.asarray(image_scale, float)
    spec = {**spec, "translate": tuple(np.asarray(spec.get("translate", (0.0,) * 3), float) + origin)}
    metadata = {"tomolens": {"targets": result.targets, **result.info}}
    return build_layer(result.similarity[0], {**spec, "scale": scale, "metadata": metadata}, "image")
