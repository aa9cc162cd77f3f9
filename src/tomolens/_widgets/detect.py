"""The "Detect particles" dock widget: detect, re-threshold live, evaluate, train."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._napari.layers import (
    RESULT_KEY,
    layer_voxel_size_A,
    points_layer_data,
    scale_kwargs,
    show_particles_in_slab,
    voxel_size_from_layer,
)
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._model import FROM_FILE, chosen_model
from tomolens._widgets._fields import show_whole_path
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._runner import JobRunner, computing
from tomolens._widgets.detect_points import START_CURRENT, PointsTrainingBox
from tomolens._widgets.pr_plot import PrecisionRecallPlot
from tomolens.detect.detector import DEFAULT_MODEL, DETECT_PARAMS, DetectionResult, detect_particles
from tomolens.detect.postprocess import POSTPROCESS_PARAMS, card_postprocess_defaults, card_radius_A
from tomolens.detect.train import TRAIN_PARAMS
from tomolens.evaluate import match_centres, precision_recall_curve
from tomolens.io.provenance import jsonable as provenance
from tomolens.models.card import read_card, resolve_model, shipped_models

log = logging.getLogger(__name__)

_SPARK = "▁▂▃▄▅▆▇█"
#: Choices of the Train box's source.
FROM_LABELS, FROM_POINTS = "instance Labels layer", "Points layer (clicks)"


def sparkline(values: list[float], width: int = 30) -> str:
    """A one-line text plot of ``values`` (last ``width`` of them) with block characters."""
    vals = [v for v in values[-width:] if np.isfinite(v)]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(_SPARK[int(round((v - lo) / span * (len(_SPARK) - 1)))] for v in vals)


#: Name fragments of Labels layers that hold one value per class, not per particle (ranked last).
_SEMANTIC_NAMES = ("mask", "semantic", "segmentation", "painted")


def labels_rank(name: str) -> int:
    """Sort key of a Labels layer for detection training: 0 instance labels, 1 unknown, 2 masks/semantic."""
    lowered = name.lower()
    if "instance" in lowered:
        return 0
    return 2 if any(word in lowered for word in _SEMANTIC_NAMES) else 1


class DetectWidget(Container):
    """Detect particles with a mask + centre network; thresholds re-apply live.

    Adds ``<image> mask`` and ``<image> instances`` Labels and a ``<image> centres``
    Points layer (features score, volume_A3, instance_id; coloured by score).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.result: DetectionResult | None = None
        self._source_name = ""
        self.image = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.image.tooltip = "Tomogram to analyse (particles bright; 3D)."
        names = list(shipped_models("detect")) + [FROM_FILE]
        self.model_choice = ComboBox(
            choices=names,
            value=DEFAULT_MODEL if DEFAULT_MODEL in names else names[0],
            label="model",
            tooltip="A shipped detection model, or a model file below.",
        )
        self.model_file = FileEdit(
            mode="r", filter="*.pt *.json", label="model file", tooltip="A tomolens model (.pt with its .json card)."
        )
        show_whole_path(self.model_file)
        self.params = ParamPanel(tuple(p for p in DETECT_PARAMS if p.name != "model"))
        self.radius_note = Label(value="")
        self._card_radius: float | None = None
        self.runner = JobRunner("Detect particles", title="Particle detection")
        self.truth = create_widget(
            annotation=napari.layers.Points | None, label="ground truth", options={"nullable": True}
        )
        self.truth.tooltip = "Optional Points layer of true centres: precision/recall/F1 are shown."
        self.tolerance = FloatSpinBox(
            value=0.0,
            min=0.0,
            max=1000.0,
            step=5.0,
            label="tolerance (Å)",
            tooltip="Match distance in Å (0 = half the particle radius).",
        )
        self.evaluation = Label(value="")
        self.evaluation.native.setWordWrap(True)
        self.pr_plot = PrecisionRecallPlot()
        self.pr_curve = None
        self.train_source = ComboBox(
            choices=[FROM_LABELS, FROM_POINTS],
            value=FROM_LABELS,
            label="train from",
            tooltip="Painted instance labels, or a few clicked particles (a Points layer).",
        )
        self.train_labels = ComboBox(
            label="train labels",
            choices=self._instance_labels_first,
            nullable=True,
            tooltip="Instance labels of the tomogram: one integer per particle (a "
            "corrected '… instances' layer, simulated truth, painted particles). "
            "Not a semantic mask.",
        )
        self._labels_picked_by_hand = False
        self.train_labels.changed.connect(self._train_labels_chosen)
        self.train_params = ParamPanel(TRAIN_PARAMS)
        self.points_box = PointsTrainingBox(viewer)
        self.train_out = FileEdit(
            mode="w",
            filter="*.pt",
            label="save model as",
            value=str(Path(tempfile.gettempdir()) / "tomolens_detect_user.pt"),
            tooltip="Where the trained model (.pt + .json card) is written.",
        )
        show_whole_path(self.train_out)
        self.train_runner = JobRunner("Train", title="Detection training")
        self.loss_text = Label(value="")
        self.loss_text.native.setWordWrap(True)
        self._history: list[dict] = []
        self._train_started = 0.0
        train_box = Container(
            widgets=[
                self.train_source,
                self.train_labels,
                self.train_params,
                self.points_box,
                self.train_out,
                self.train_runner,
                self.loss_text,
            ],
            label="train",
        )
        pr_box = Container(widgets=[], labels=False)
        pr_box.native.layout().addWidget(self.pr_plot)
        self.pr_plot.setVisible(False)
        super().__init__(
            widgets=[
                self.image,
                self.model_choice,
                self.model_file,
                self.params,
                self.radius_note,
                self.runner,
                self.truth,
                self.tolerance,
                self.evaluation,
                pr_box,
                train_box,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.runner.run_button.changed.connect(self.start_detection)
        self.train_runner.run_button.changed.connect(self.start_training)
        self.model_choice.changed.connect(self._model_changed)
        self.train_source.changed.connect(self._source_changed)
        for p in POSTPROCESS_PARAMS:
            self.params.controls[p.name].changed.connect(self.reapply)
        self.truth.changed.connect(self.update_evaluation)
        self.tolerance.changed.connect(self.update_evaluation)
        self.params.controls["particle_radius_A"].changed.connect(self._show_radius_source)
        self._model_changed()
        self._source_changed()

    def _source_changed(self, *_) -> None:
        points = self.train_source.value == FROM_POINTS
        self.points_box.visible = points
        self.train_labels.visible = not points
        self.train_params.visible = not points

    # ------------------------------------------------------- training labels
    def _instance_labels_first(self, _widget=None) -> list[tuple[str, napari.layers.Labels]]:
        """The viewer's Labels layers, instance-like names first, masks and semantic labels last."""
        layers = [layer for layer in self.viewer.layers if isinstance(layer, napari.layers.Labels)]
        return [(layer.name, layer) for layer in sorted(layers, key=lambda layer: labels_rank(layer.name))]

    def _train_labels_chosen(self, *_) -> None:
        self._labels_picked_by_hand = True

    def reset_choices(self, *_) -> None:
        """Refresh the layer pickers; while the user has not chosen training labels, prefer instance labels
        (a detection adds its '… mask' before its '… instances')."""
        with self.train_labels.changed.blocked():  # filling the list is not the user's choice
            super().reset_choices()
        choices = self._instance_labels_first()
        current = self.train_labels.value
        if choices and (current is None or not self._labels_picked_by_hand):
            with self.train_labels.changed.blocked():
                self.train_labels.value = choices[0][1]

    # ----------------------------------------------------------------- model
    def model_path(self) -> str:
        return chosen_model(
            self.model_choice.value, self.model_file.value, "Choose a model file (.pt or .json) or a shipped model."
        )

    def _model_changed(self, *_) -> None:
        """Load the model card's tuned thresholds into the controls (not its radius: that is the run's)."""
        try:
            card = read_card(resolve_model(self.model_path()))
        except ValueError as err:
            log.debug("no card to read defaults from: %s", err)
            return
        self._card_radius = card_radius_A(card)
        self.params.set_values(card_postprocess_defaults(card))
        self._show_radius_source()

    def radius_A(self) -> float | None:
        """The radius in use: the typed one, else the median estimated in the last run (None before)."""
        typed = float(self.params.controls["particle_radius_A"].value or 0)
        if typed > 0:
            return typed
        if self.result is not None and len(self.result.particles):
            return float(np.median(self.result.particles.features["radius_A"]))
        return None

    def _show_radius_source(self, *_) -> None:
        """Say where the particle radius comes from: typed, or estimated (with the last run's median)."""
        typed = float(self.params.controls["particle_radius_A"].value or 0)
        card = (
            f"\nmodel card: {self._card_radius:.0f} Å (equivalent radius\nof its training particles' masks)"
            if self._card_radius
            else ""
        )
        if typed > 0:
            self.radius_note.value = f"radius: {typed:g} Å, typed\n(0 = estimate per particle){card}"
            return
        est = self.radius_A()
        found = f"\n(median {est:.0f} Å in this run)" if est else ""
        self.radius_note.value = f"radius: estimated per particle{found}{card}"

    # ------------------------------------------------------------- detection
    def start_detection(self, *_) -> None:
        layer = self.image.value
        if layer is None:
            show_warning("Choose a tomogram layer first.")
            return
        if layer.ndim != 3:
            show_warning(f"Detection needs a 3D tomogram; {layer.name!r} has {layer.ndim} dimensions.")
            return
        try:
            voxel = layer_voxel_size_A(layer)
        except ValueError as err:
            show_warning(str(err))
            return
        data = layer.data
        self._source_name = layer.name
        params = self.params.values()
        model = self.model_path()
        name = layer.name
        self.runner.start(
            detect_particles(data, voxel, model=model, **params),
            self._show,
            prepare=lambda result: (result, detection_layers(result, name)),
        )

    def _show(self, prepared: tuple[DetectionResult, list]) -> Iterator[None]:
        """Place the result's layers (built in the worker) one per event-loop turn (the runner advances this)."""
        result, layers = prepared
        self.result = result
        yield from self._layer_steps(layers)
        show_info(
            f"Detected {len(result.particles)} particles; "
            f"{result.params.get('polarity_decision', {}).get('message', '')}"
        )

    def _show_reapplied(self, prepared: tuple[DetectionResult, list]) -> Iterator[None]:
        """Update the layers with a re-applied result (built in the worker), one per event-loop turn."""
        self.result, layers = prepared
        yield from self._layer_steps(layers)

    def _layer_steps(self, layers: list) -> Iterator[None]:
        """Create or update the mask, instances and centres layers, yielding after each, then the slab and the
        evaluation."""
        for layer in layers:
            placed, updated = place_layer(self.viewer, layer)
            if updated and isinstance(placed, napari.layers.Points) and len(placed.data):
                placed.face_colormap = "viridis"  # the new features: colour them again
                placed.face_color = "score"
            yield
        if len(self.result.particles):
            show_particles_in_slab(self.viewer, 2 * (self.radius_A() or 0))
        self._show_radius_source()
        self.update_evaluation()

    def reapply(self, *_) -> None:
        """Re-run post-processing on the kept probability maps (no network), in the worker."""
        if self.result is None:
            return
        try:
            post = {p.name: self.params.values()[p.name] for p in POSTPROCESS_PARAMS}
        except ValueError as err:
            show_warning(str(err))
            return
        name = self._source_name
        self.runner.start_latest(
            lambda: computing("re-applying the post-processing to the kept maps", self.result.reapply, **post),
            self._show_reapplied,
            prepare=lambda result: (result, detection_layers(result, name)),
        )

    def update_evaluation(self, *_) -> None:
        """Precision/recall/F1 of the current centres against the ground-truth layer."""
        truth = self.truth.value
        if truth is None or self.result is None:
            self.evaluation.value = ""
            self.pr_curve = None
            self.pr_plot.set_curve(None)
            self.pr_plot.setVisible(False)
            return
        vs = self.result.voxel_size_A
        truth_vs = voxel_size_from_layer(truth.scale, truth.units)
        true_A = np.asarray(truth.data)[:, -3:] * (np.asarray(truth_vs[-3:]) if truth_vs else vs)
        tol = self.tolerance.value or (self.radius_A() or 0) / 2
        if tol <= 0:
            self.evaluation.value = "set a tolerance (Å): no particle radius is known"
            return
        picks = self.result.particles
        m = match_centres(picks.coords_zyx * vs, true_A, tol)
        scores = picks.features["score"].to_numpy(float) if "score" in picks.features else np.ones(len(picks))
        self.pr_curve = precision_recall_curve(picks.coords_zyx * vs, scores, true_A, tol)
        self.pr_plot.set_curve(self.pr_curve)
        self.pr_plot.setVisible(True)
        min_score = self.params.values()["min_score"]
        best = (
            f"best F1 {self.pr_curve.best_f1:.3f} at min score {self.pr_curve.best_threshold:.2f}"
            if len(self.pr_curve.thresholds)
            else "no picks"
        )
        # one short line per fact: a long line would widen the dock (or be clipped to its first line)
        self.evaluation.value = (
            f"vs {truth.name[:30]} (tolerance {tol:.0f} Å), min score {min_score:.2f}:\n"
            f"precision {m.precision:.3f}  recall {m.recall:.3f}  F1 {m.f1:.3f}\n"
            f"TP {m.true_positives}, FP {m.false_positives}, FN {m.false_negatives}\n{best}"
        )
        self.evaluation.native.updateGeometry()

    # -------------------------------------------------------------- training
    def start_training(self, *_) -> None:
        if self.train_source.value == FROM_POINTS:
            self.start_points_training()
            return
        from tomolens.detect.train import train_and_save

        image, labels = self.image.value, self.train_labels.value
        if image is None or labels is None:
            show_warning("Choose a tomogram and an instance Labels layer to train on.")
            return
        if image.data.shape != labels.data.shape or image.ndim != 3:
            show_warning(f"The tomogram {image.data.shape} and labels {labels.data.shape} must be 3D of one shape.")
            return
        if int(np.asarray(labels.data).max()) <= 1:
            show_warning(
                f"{labels.name!r} holds one label value (a mask); training needs instance labels, one "
                "integer per particle — choose an '… instances' layer or paint each particle its own value."
            )
            return
        try:
            voxel = layer_voxel_size_A(image)
        except ValueError as err:
            show_warning(str(err))
            return
        volume, instances = np.asarray(image.data, np.float32), np.asarray(labels.data)
        out = Path(self.train_out.value)
        self._history = []
        self.loss_text.value = "training…"
        job = train_and_save(
            volume, instances, voxel, out, device=self.params.values()["device"], **self.train_params.values()
        )
        self.train_runner.start(job, self._trained, on_progress=self._train_progress)

    def _train_progress(self, progress) -> None:
        if not progress.info:
            return
        self._history.append(progress.info)
        loss = [h["loss"] for h in self._history]
        val = [h["val_loss"] for h in self._history]
        self.loss_text.value = (
            f"epoch {progress.info['epoch']}: loss {loss[-1]:.4f}  val {val[-1]:.4f}\n"
            f"loss {sparkline(loss)}\nval  {sparkline(val)}"
        )

    def start_points_training(self) -> None:
        """Train (fine-tune) the detector from the clicked Points layers: snapshot on the GUI thread, job in a
        worker."""
        import time

        from tomolens.detect.points_train import train_from_points

        try:
            inputs = self.points_box.job_inputs(self.image.value)
            start = self.model_path() if self.points_box.start_choice.value == START_CURRENT else None
        except ValueError as err:
            show_warning(str(err))
            return
        out = Path(self.train_out.value)
        self._history = []
        self._train_started = time.time()
        self.loss_text.value = "training…"
        job = train_from_points(
            out=out,
            start_from=start,
            polarity=self.params.values()["polarity"],
            device=self.params.values()["device"],
            command="napari 'Detect particles' widget: Train from Points layers",
            **inputs,
        )
        self.train_runner.start(
            job,
            self._points_trained,
            on_progress=self._points_progress,
            on_finish=lambda: self._after_points_training(job, out),
        )

    def _points_progress(self, progress) -> None:
        if not progress.info or "val_f1" not in progress.info:
            return
        self._history.append(progress.info)
        loss = [h["loss"] for h in self._history]
        f1 = [h["val_f1"] for h in self._history]
        self.loss_text.value = (
            f"step {progress.info['step']}: loss {loss[-1]:.4f}  held-out F1 {f1[-1]:.2f}\n"
            f"loss {sparkline(loss)}\nF1   {sparkline(f1)}"
        )

    def _points_trained(self, result) -> None:
        info = result.card.extra["points_training"]
        radii = ", ".join(
            f"{k + ' ' if k else ''}{v:.0f} Å ({info['radius_source'][k]})" for k, v in info["radius_A"].items()
        )
        self.loss_text.value += (
            f"\nradius {radii}; {info['steps_run']} steps in {info['seconds']:.0f} s; "
            f"held-out F1 {result.card.metrics['validation_f1_tuned']:.2f}"
        )
        self._trained(result.path)

    def _after_points_training(self, job, out: Path) -> None:
        """After Cancel: close the job now (it saves the best weights so far; the worker stopped without
        closing it) and select that model, if one was saved."""
        if self.train_runner.status.value != "Cancelled":
            return
        job.close()
        card = out.with_suffix(".json")
        if not card.is_file():
            return
        if card.stat().st_mtime >= self._train_started - 1:
            self._trained(out.with_suffix(".pt"))
            show_info(f"Training cancelled: the best weights so far are in {out.with_suffix('.pt')} (selected).")

    def _trained(self, path: Path) -> None:
        self.model_file.value = str(path)
        self.model_choice.value = FROM_FILE
        show_info(f"Model saved to {path}; it is now selected for detection.")


def detection_layers(result: DetectionResult, name: str) -> list[napari.layers.Layer]:
    """The mask and instances Labels and the centres Points of a detection, named after the tomogram ``name``.

    Built without a viewer (:func:`tomolens._widgets._layers.build_layer`), so a worker thread can build them;
    the centres are coloured by score.  The docks run a model only on a tomogram with a voxel size (in Å).
    """
    scale = scale_kwargs(result.voxel_size_A, 3)
    meta = {"tomolens": provenance(result.params), RESULT_KEY: "detect"}
    layers = [
        build_layer(
            data,
            {"name": f"{name} {suffix}", "opacity": 0.4, "visible": suffix == "instances", "metadata": meta, **scale},
            "labels",
        )
        for suffix, data in (("mask", result.mask), ("instances", result.instances))
    ]
    data, kwargs, kind = points_layer_data(result.particles, name=f"{name} centres", color_by=None)
    kwargs.update(scale)
    kwargs["metadata"] = {**kwargs["metadata"], **meta}
    if len(data):
        kwargs.update(face_colormap="viridis", face_color="score")
    layers.append(build_layer(data, kwargs, kind))
    return layers
