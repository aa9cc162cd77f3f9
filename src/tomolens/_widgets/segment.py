"""The "Segment" dock widget: paint a few slices, train a U-Net, segment the whole tomogram.

Painting convention (shown in the dock): in the painted Labels layer 0 = not painted
(ignored), 1 = background, 2 = the second class name, 3 = the third, …; the predicted
Labels layer uses the same values (background left at 0, transparent).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._napari.layers import (
    PAINTING_KEY,
    RESULT_KEY,
    class_colormap,
    is_plausibly_painted,
    layer_voxel_size_A,
    scale_kwargs,
)
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._model import FROM_FILE, chosen_model
from tomolens._widgets._fields import show_whole_path
from tomolens._widgets._painting import LossPlot
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._runner import JobRunner, computing
from tomolens.models.card import read_card, resolve_model, shipped_models
from tomolens.segment.labels import DEFAULT_CLASSES, check_painted_labels, label_value, parse_class_names
from tomolens.segment.predict import (
    DEFAULT_MODEL,
    POSTPROCESS_PARAMS,
    PREDICT_PARAMS,
    SegmentationResult,
    check_model_classes,
    segment_tomogram,
)
from tomolens.segment.settings import NEW_NETWORK, TRAIN_PARAMS, WIDGET_TRAIN_VALUES, train_kwargs
from tomolens.segment.start import start_note
from tomolens.segment.train import save_segmenter, train_segmenter

log = logging.getLogger(__name__)


class SegmentWidget(Container):
    """Train a segmentation U-Net on painted slices and segment the whole tomogram.

    Adds ``<image> segmentation`` (Labels) and one ``<image> P(<class>)`` probability Image
    per class; threshold and clean-up controls re-apply live without the network.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.result: SegmentationResult | None = None
        self.trained = None
        self._source = ""
        self._history: list[dict] = []
        self.image = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.image.tooltip = "The tomogram to paint on and segment (3D, protein bright)."
        self.class_names = LineEdit(
            value=", ".join(DEFAULT_CLASSES), label="classes", tooltip="Class names, background first, comma-separated."
        )
        self.legend = Label(value="")
        # nullable: pre-selected only when a Labels layer looks painted (never a detect/segment result)
        self.painted = create_widget(annotation=Optional[napari.layers.Labels], label="painted labels")
        self.painted.tooltip = (
            "A Labels layer of the tomogram's shape with a few painted slices ('New painting layer' makes one). "
            "Results of Detect / Segment are not pre-selected."
        )
        self.new_labels = PushButton(
            text="New painting layer", tooltip="Add an empty Labels layer of the tomogram's shape to paint in."
        )
        self.train_params = ParamPanel(TRAIN_PARAMS)
        # fine-tune the shipped default whatever the class names (other classes: a new output layer)
        start = DEFAULT_MODEL if DEFAULT_MODEL in shipped_models("segment") else NEW_NETWORK
        self.train_params.set_values(WIDGET_TRAIN_VALUES | {"segment_start_from": start})
        self._start_from = self.train_params.controls["segment_start_from"]
        self._start_tooltip = self._start_from.tooltip or ""
        self.save_path = FileEdit(
            mode="w",
            filter="*.pt",
            label="save model as",
            value=str(Path(tempfile.gettempdir()) / "tomolens_segment_user.pt"),
            tooltip="Trained model file (.pt + .json card); the checkpoint goes beside it.",
        )
        show_whole_path(self.save_path)
        self.resume = CheckBox(
            value=False,
            text="resume from checkpoint",
            tooltip="Continue the training saved in the checkpoint beside 'save model as'.",
        )
        self.train_runner = JobRunner("Train", title="Segmentation training")
        self.loss_plot = LossPlot()
        self.loss_text = Label(value="")
        shipped = list(shipped_models("segment"))
        self.model_choice = ComboBox(
            choices=shipped + [FROM_FILE],
            value=DEFAULT_MODEL if DEFAULT_MODEL in shipped else FROM_FILE,
            label="model",
            tooltip="A shipped segmentation model, or a model file.",
        )
        self.model_file = FileEdit(
            mode="r",
            filter="*.pt *.json",
            label="model file",
            tooltip="A tomolens segmentation model (.pt with its .json card).",
        )
        show_whole_path(self.model_file)
        self.model_info = Label(value="")
        for label in (self.legend, self.loss_text, self.model_info):
            label.native.setWordWrap(True)  # long lines would widen every tabbed dock
        self.predict_params = ParamPanel(tuple(p for p in PREDICT_PARAMS if p.name != "model"))
        self.predict_runner = JobRunner("Predict", title="Segmentation")
        train_box = Container(
            widgets=[self.train_params, self.save_path, self.resume, self.train_runner, self.loss_text], label="train"
        )
        train_box.native.layout().addWidget(self.loss_plot)
        super().__init__(
            widgets=[
                self.image,
                self.class_names,
                self.legend,
                self.painted,
                self.new_labels,
                train_box,
                self.model_choice,
                self.model_file,
                self.model_info,
                self.predict_params,
                self.predict_runner,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.class_names.changed.connect(self._update_legend)
        self._start_from.changed.connect(self._update_legend)
        self.new_labels.changed.connect(self.add_painting_layer)
        self.train_runner.run_button.changed.connect(self.start_training)
        self.predict_runner.run_button.changed.connect(self.start_prediction)
        self.model_choice.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._model_changed)
        for p in POSTPROCESS_PARAMS:
            self.predict_params.controls[p.name].changed.connect(self.reapply)
        self._update_legend()
        self._model_changed()
        self._preselect_painted()

    def reset_choices(self, *args) -> None:
        """Refresh the layer choices (napari calls this when layers change); pre-select a painted layer."""
        super().reset_choices(*args)
        self._preselect_painted()

    def _preselect_painted(self) -> None:
        """With no painted layer chosen, choose the newest plausibly painted one of the tomogram's shape."""
        if self.painted.value is not None:
            return
        image = self.image.value
        for layer in reversed(self.viewer.layers):
            if (
                isinstance(layer, napari.layers.Labels)
                and layer in self.painted.choices
                and is_plausibly_painted(layer)
                and (image is None or layer.data.shape == image.data.shape)
            ):
                self.painted.value = layer
                return

    # ---------------------------------------------------------------- classes
    def names(self) -> list[str]:
        """Class names from the text field (ValueError if fewer than two or duplicated)."""
        return parse_class_names(self.class_names.value)

    def _update_legend(self, *_) -> None:
        try:
            names = self.names()
        except ValueError as err:
            self.legend.value = str(err)
            return
        self.legend.value = "paint: 0 = not painted, " + ", ".join(
            f"{label_value(k)} = {n}" for k, n in enumerate(names)
        )
        # fine-tuning a model whose classes differ: say which output channels start from it
        note = start_note(self._start_from.value, names)
        self._start_from.tooltip = self._start_tooltip + (f"\n\n{note}" if note else "")
        if note:
            self.legend.value += f"\nTrain: {note}"

    def add_painting_layer(self, *_) -> None:
        """An empty Labels layer with the tomogram's shape and scale, selected for painting."""
        image = self.image.value
        if image is None:
            show_warning("Choose a tomogram first.")
            return
        layer = self.viewer.add_labels(
            np.zeros(image.data.shape, np.uint8),
            name=f"{image.name} painted",
            metadata={PAINTING_KEY: True},
            scale=image.scale,
            units=image.units,
            axis_labels=image.axis_labels,
            colormap=class_colormap(),
        )
        layer.selected_label = 1
        layer.brush_size = 5
        layer.mode = "paint"
        self.painted.reset_choices()
        self.painted.value = layer

    # ------------------------------------------------------------------ model
    def model_path(self) -> str:
        return chosen_model(
            self.model_choice.value,
            self.model_file.value,
            "Choose a model file (.pt or .json), train one, or pick a shipped model.",
        )

    def _model_changed(self, *_) -> None:
        try:
            card = read_card(resolve_model(self.model_path()))
        except ValueError as err:
            self.model_info.value = str(err)
            return
        held = card.metrics.get("held_out_dice", {}) if isinstance(card.metrics, dict) else {}
        figures = "; ".join(
            f"{k}: " + ", ".join(f"{n} {v:.2f}" for n, v in d.items() if n in card.classes[1:])
            for k, d in held.items()
            if isinstance(d, dict)
        )
        self.model_info.value = (
            f"{card.extra.get('model_kind', '?')} U-Net, classes {', '.join(card.classes)}, "
            f"{card.voxel_size_A} Å" + (f"\nheld-out Dice {figures}" if figures else "")
        )

    # --------------------------------------------------------------- training
    def start_training(self, *_) -> None:
        """Snapshot tomogram and painted labels, then train in a worker thread."""
        image, painted = self.image.value, self.painted.value
        if image is None or painted is None:
            show_warning("Choose a tomogram and a painted Labels layer (or press 'New painting layer').")
            return
        try:
            voxel = layer_voxel_size_A(image)
            names = self.names()
            labels = check_painted_labels(np.asarray(painted.data), image.data.shape, names)
            params = self.train_params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        volume = np.asarray(image.data, np.float32)
        out = Path(self.save_path.value).with_suffix(".pt")
        self._history = []
        self.loss_plot.set_history([])
        self.loss_text.value = "training…"
        # the training tomogram's contrast: the same polarity setting as prediction (auto by default)
        job = train_segmenter(
            [(volume, labels)],
            names,
            voxel,
            checkpoint=out.with_suffix(".ckpt"),
            resume=bool(self.resume.value),
            name=out.stem,
            training_command="napari 'Segment' widget: Train",
            polarity=self.predict_params.values().get("polarity", "auto"),
            **train_kwargs(params),
        )
        self.train_runner.start(self._train_and_save(job, out), self._trained, on_progress=self._train_progress)

    @staticmethod
    def _train_and_save(job, out: Path):
        trained = yield from job
        save_segmenter(trained, out)
        return trained, out

    def _train_progress(self, progress) -> None:
        if not progress.info:
            return
        self._history.append(progress.info)
        self.loss_plot.set_history(self._history)
        self.loss_text.value = (
            f"epoch {progress.info['epoch']}: loss {progress.info['loss']:.4f}, "
            + ("fit on the painted voxels" if progress.info.get("val_is_fit") else "validation")
            + f" {progress.info['val_loss']:.4f}"
        )

    def _trained(self, result) -> None:
        self.trained, out = result
        self.model_file.value = str(out)
        self.model_choice.value = FROM_FILE
        self._model_changed()
        show_info(f"Model saved to {out}; it is now selected for prediction.")

    # ------------------------------------------------------------- prediction
    def start_prediction(self, *_) -> None:
        """Check the model's classes, then segment the tomogram in a worker thread."""
        image = self.image.value
        if image is None:
            show_warning("Choose a tomogram first.")
            return
        if image.ndim != 3:
            show_warning(f"Segmentation needs a 3D tomogram; {image.name!r} has {image.ndim} dimensions.")
            return
        try:
            voxel = layer_voxel_size_A(image)
            names = self.names()
            model = self.model_path()
            check_model_classes(read_card(resolve_model(model)), names)
            params = self.predict_params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        self._source = source = image.name
        self.predict_runner.start(
            segment_tomogram(image.data, voxel, model=model, class_names=names, **params),
            self._show,
            prepare=lambda result: (result, segmentation_layers(result, source), class_voxels(result)),
        )

    def _show(self, prepared: tuple[SegmentationResult, list, np.ndarray]) -> Iterator[None]:
        """Place one layer per event-loop turn (built in the worker; the runner advances this generator)."""
        result, layers, voxels = prepared
        self.result = result
        for layer in layers:
            place_layer(self.viewer, layer)
            yield
        counts = ", ".join(f"{n} {int(voxels[k])}" for k, n in enumerate(result.class_names[1:], 1))
        show_info(f"Segmented {self._source}: voxels {counts}. {result.info.get('polarity', {}).get('message', '')}")

    def reapply(self, *_) -> None:
        """Re-apply threshold and clean-up on the kept probabilities (no network), in the worker."""
        if self.result is None:
            return
        try:
            values = self.predict_params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        post = {p.name: values[p.name] for p in POSTPROCESS_PARAMS}
        source = self._source
        self.predict_runner.start_latest(
            lambda: computing("re-applying the threshold and clean-up", self.result.reapply, **post),
            self._show_reapplied,
            prepare=lambda result: (result, segmentation_layers(result, source, probabilities=False)),
        )

    def _show_reapplied(self, prepared: tuple[SegmentationResult, list]) -> Iterator[None]:
        """Update the segmentation layer with a re-applied result (built in the worker)."""
        self.result, layers = prepared
        for layer in layers:
            place_layer(self.viewer, layer)
            yield


def class_voxels(result: SegmentationResult) -> np.ndarray:
    """Voxels per class (int64, one per class name), counted in one ``bincount`` pass."""
    return np.bincount(np.asarray(result.classes).ravel(), minlength=len(result.class_names))


def segmentation_layers(
    result: SegmentationResult, source: str, probabilities: bool = True
) -> list[napari.layers.Layer]:
    """One hidden Image per class probability (if ``probabilities``), then the segmentation Labels, named after
    the tomogram ``source``; built without a viewer (:func:`tomolens._widgets._layers.build_layer`).
    The docks run a model only on a tomogram with a voxel size (in Å)."""
    scale = scale_kwargs(result.voxel_size_A, 3)
    layers = []
    if probabilities:
        style = {"colormap": "inferno", "blending": "additive", "contrast_limits": (0.0, 1.0), "visible": False}
        for k, name in enumerate(result.class_names):
            layers.append(
                build_layer(result.probabilities[k], {"name": f"{source} P({name})", **style, **scale}, "image")
            )
    labels = {
        "name": f"{source} segmentation",
        "opacity": 0.5,
        "colormap": class_colormap(),
        "metadata": {RESULT_KEY: "segment"},
        **scale,
    }
    layers.append(build_layer(result.labels, labels, "labels"))
    return layers


__all__ = ["LossPlot", "SegmentWidget"]
