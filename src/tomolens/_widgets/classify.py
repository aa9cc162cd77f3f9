"""The "Classify" and "Subdivide" dock widgets.

Classify: run a classifier on a Points layer's particles (class, ``prob_<class>`` and
``confidence`` become point features, points are coloured by class, a slider hides
points below a confidence), or train one — from a dataset folder or from a
class-labelled Points layer — with live loss and validation accuracy.

Subdivide: cluster particles by the classifier's learned features (or an embedding); a ``cluster``
feature, a gallery of the cluster averages in the dock (click a tile to select its particles; a button
adds them as Image layers), and a 2D embedding plot linked both ways to the Points layer's selection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, LineEdit, PushButton, create_widget
from napari.utils.notifications import show_info, show_warning

from tomolens._napari.layers import _CATEGORICAL, UNKNOWN_COLOUR, category_colours, layer_voxel_size_A
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._fields import show_whole_path
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._painting import LossPlot
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._runner import JobRunner
from tomolens._widgets.classify_scatter import ScatterPlot
from tomolens._widgets.cluster_gallery import ClusterGallery
from tomolens.classify.predict import CLASSIFY_PARAMS, classify_points
from tomolens.classify.train import TRAIN_PARAMS
from tomolens.classify.unknown import UNKNOWN_CLASS
from tomolens.cluster.subdivide import SUBDIVIDE_PARAMS, subdivide_points

log = logging.getLogger(__name__)


def _snapshot(image, points):
    """Tomogram array, point positions in the tomogram's voxels (z, y, x), voxel size (Å).

    Raises ValueError (shown as a notification) without both layers, or when the tomogram's voxel size is
    unknown (the models need it; :func:`tomolens._napari.layers.layer_voxel_size_A`).
    """
    if image is None or points is None:
        raise ValueError("Choose a tomogram (Image) and a particles (Points) layer.")
    if image.ndim != 3:
        raise ValueError(f"The tomogram must be 3D; {image.name!r} has {image.ndim} dimensions.")
    voxel = layer_voxel_size_A(image)
    data = np.asarray(points.data, float).reshape(-1, points.ndim)[:, -3:]
    world = data * np.asarray(points.scale[-3:]) + np.asarray(points.translate[-3:])
    coords = (world - np.asarray(image.translate[-3:])) / np.asarray(image.scale[-3:])
    return image.data, coords, voxel


def cluster_colour(cluster: int) -> str:
    """The colour of a cluster number, on the layer and in the plot alike (-1, no cluster: grey)."""
    return _CATEGORICAL[cluster % len(_CATEGORICAL)] if cluster >= 0 else UNKNOWN_COLOUR


def colour_by(layer, column: str, fixed: dict | None = None) -> None:
    """Colour a Points layer by a categorical feature with the project's palette.

    ``fixed`` maps values to their own colours (``{"unknown": UNKNOWN_COLOUR}``); the other
    values take the palette without its greys (:func:`~tomolens._napari.layers.category_colours`).
    Integer columns (cluster numbers) take :func:`cluster_colour`, the subdivision plot's colours.
    A layer coloured before (by score, by class) keeps no colours of the earlier column.
    """
    values = layer.features[column]
    # Leave the layer's colour mode first: in colormap mode (the detector's centres, coloured by score) napari
    # cannot take a text column, and in cycle mode a new cycle is spent on the earlier column's values.
    layer.face_color_mode = "direct"
    if fixed:
        layer.face_color_cycle = category_colours(values, fixed)
    elif pd.api.types.is_integer_dtype(values):  # napari gives a list cycle's colours in order of first appearance
        layer.face_color_cycle = [cluster_colour(int(v)) for v in pd.unique(values)]
    else:
        layer.face_color_cycle = _CATEGORICAL
    layer.face_color = column
    layer.refresh_colors(update_color_mapping=True)


def merge_features(layer, new: pd.DataFrame) -> None:
    """Replace/add feature columns of a Points layer (one row per point)."""
    old = layer.features.reset_index(drop=True).drop(columns=[c for c in new.columns if c in layer.features])
    layer.features = pd.concat([old, new.reset_index(drop=True)], axis=1)


class ClassifyWidget(Container):
    """Classify particles with a 3D CNN, filter by confidence, or train a classifier."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image_picker = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.image_picker.tooltip = "The tomogram the particles were picked on."
        self.points_picker = create_widget(annotation=napari.layers.Points, label="particles")
        self.points_picker.tooltip = "Points layer of picked particles; gets class/probability/confidence features."
        self.params = ParamPanel(CLASSIFY_PARAMS)
        self.runner = JobRunner("Classify", title="Classification")
        self.min_confidence = FloatSlider(
            value=0.0,
            min=0.0,
            max=1.0,
            step=0.01,
            label="min confidence",
            tooltip="Hide particles whose confidence is below this value.",
        )
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)  # a long class list would widen every tabbed dock
        self.train_params = ParamPanel(TRAIN_PARAMS)
        self.train_source = ComboBox(
            choices=["labelled points", "dataset folder"],
            value="labelled points",
            label="train from",
            tooltip="Class-labelled particles of the chosen layers, "
            "or a folder with train.npz/val.npz/test.npz from the simulator.",
        )
        self.dataset_dir = FileEdit(
            mode="d", label="dataset folder", tooltip="Folder with train.npz, val.npz, test.npz."
        )
        self.train_out = LineEdit(
            value=str(Path.home() / "tomolens_classifier.pt"),
            label="save as",
            tooltip="Where to write the trained model (.pt, with its .json card beside it).",
        )
        show_whole_path(self.train_out)
        self.train_runner = JobRunner("Train classifier", title="Training")
        self.train_log = Label(value="")
        self.train_log.native.setWordWrap(True)
        self.loss_plot = LossPlot()
        train_box = Container(
            widgets=[
                self.train_source,
                self.dataset_dir,
                self.train_params,
                self.train_out,
                self.train_runner,
                self.train_log,
            ],
            label="training",
        )
        train_box.native.layout().addWidget(self.loss_plot)  # loss and validation loss per epoch
        super().__init__(
            widgets=[
                self.image_picker,
                self.points_picker,
                self.params,
                self.runner,
                self.min_confidence,
                self.summary,
                Label(value="<b>Train a classifier</b>"),
                train_box,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.runner.run_button.changed.connect(self.start_classification)
        self.min_confidence.changed.connect(self.apply_confidence_filter)
        self.train_runner.run_button.changed.connect(self.start_training)
        self.history: list[dict] = []
        self.last_training = None

    # ---------------------------------------------------------------- inference
    def start_classification(self, *_) -> None:
        try:
            tomo, coords, voxel = _snapshot(self.image_picker.value, self.points_picker.value)
            values = self.params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        layer = self.points_picker.value
        job = classify_points(
            tomo,
            coords,
            values["model"],
            voxel,
            box_A=values["box_A"] or None,
            edge=values["edge"],
            batch_size=values["batch_size"],
            device=values["device"],
            polarity=values["polarity"],
            unknown_scale=values["unknown_scale"],
        )
        self.runner.start(job, lambda result: self.show_classification(layer, result))

    def show_classification(self, layer, result) -> Iterator[None]:
        """Put the classifier's output on the layer as features and colours, then (next event-loop turn, the
        runner advances this generator) the summary and the confidence filter."""
        merge_features(layer, result.features)
        layer.metadata["tomolens_classify"] = result.info
        colour_by(layer, "class", fixed={UNKNOWN_CLASS: UNKNOWN_COLOUR})
        yield
        counts = result.features["class"].astype(str).value_counts()
        unknown = result.info["unknown"]
        self.summary.value = (
            f"{len(result.indices)} classified, {len(result.padded)} padded, "
            f"{len(result.skipped)} skipped at the edge, {unknown['n_unknown']} unknown\n"
            + ", ".join(f"{k or '(skipped)'}: {v}" for k, v in counts.items())
            + f"\n{unknown['message']}"
            + f"\n{result.info['polarity']['message']}"
        )
        self.apply_confidence_filter()

    def apply_confidence_filter(self, *_) -> None:
        """Show only particles whose confidence reaches the slider's value."""
        layer = self.points_picker.value
        if layer is None or "confidence" not in layer.features:
            return
        layer.shown = layer.features["confidence"].to_numpy(float) >= float(self.min_confidence.value)

    # ---------------------------------------------------------------- training
    def _training_data(self, values):
        from tomolens.classify.data import dataset_from_points, load_dataset
        from tomolens.classify.extract import box_in_voxels

        if self.train_source.value == "dataset folder":
            folder = Path(self.dataset_dir.value)
            ds = load_dataset(folder)  # read on the GUI thread: small npz files
            return ds, None
        tomo, coords, voxel = _snapshot(self.image_picker.value, self.points_picker.value)
        layer = self.points_picker.value
        column = values["classify_label_column"]
        if column not in layer.features:
            raise ValueError(
                f"The layer {layer.name!r} has no feature {column!r}; label the particles first "
                f"(features: {list(layer.features.columns)})."
            )
        labels = layer.features[column].to_numpy()
        return None, dataset_from_points(tomo, coords, labels, box_in_voxels(values["classify_box_A"], voxel), voxel)

    def start_training(self, *_) -> None:
        from tomolens.classify.train import TrainConfig

        try:
            values = self.train_params.values()
            ds, extract_job = self._training_data(values)
        except ValueError as err:
            show_warning(str(err))
            return
        config = TrainConfig(
            architecture=values["classify_arch"],
            epochs=values["epochs"],
            patience=values["patience"],
            min_epochs=values["min_epochs"],
            stop_window=values["stop_window"],
            batch_size=values["batch_size"],
            learning_rate=values["learning_rate"],
            max_minutes=values["max_minutes"] or None,
        )
        out = self.train_out.value
        self.history = []
        self.loss_plot.set_history([])
        self.train_log.value = "extracting…" if extract_job is not None else "training…"
        self.train_runner.start(
            self._train_job(ds, extract_job, config, out), self._trained, on_progress=self._show_epoch
        )

    @staticmethod
    def _train_job(ds, extract_job, config, out):
        from tomolens.classify.train import evaluate, save_classifier, train_classifier

        if ds is None:
            ds = yield from extract_job
        result = yield from train_classifier(ds.train.x, ds.train.y, ds.val.x, ds.val.y, ds.class_names, config)
        test = evaluate(result.model, ds.test.x, ds.test.y, ds.class_names)
        metrics = {
            "test_accuracy": round(test["accuracy"], 4),
            "test_n": test["n"],
            "test_confusion": test["confusion"],
            "best_epoch": result.best_epoch,
        }
        save_classifier(
            result,
            out,
            ds.class_names,
            ds.voxel_size_A,
            training_command=f"napari Classify widget: {config}",
            training_data=ds.source,
            metrics=metrics,
        )
        unknown = (
            f"unknown detection: distance threshold {result.unknown['threshold']:.3g}"
            if result.unknown
            else result.unknown_note
        )
        return out, metrics, unknown

    def _show_epoch(self, progress) -> None:
        if not progress.info or "val_acc" not in progress.info:
            return
        self.history.append(progress.info)
        lines = [
            f"epoch {h['epoch']:3d}  loss {h['loss']:.3f}  val loss {h['val_loss']:.3f}  val acc {h['val_acc']:.3f}"
            for h in self.history[-8:]
        ]
        self.train_log.value = "\n".join(lines)
        self.loss_plot.set_history(self.history)

    def _trained(self, result) -> None:
        out, metrics, unknown = result
        self.last_training = result
        self.train_log.value += (
            f"\ntest accuracy {metrics['test_accuracy']:.3f} on {metrics['test_n']} held-out particles; saved {out}"
            f"\n{unknown}"
        )
        self.params.controls["model"].value = str(Path(out).with_suffix(".pt"))
        show_info(f"Classifier saved to {out}")


class SubdivideWidget(Container):
    """Cluster particles by learned features; averages; embedding plot linked to the layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image_picker = create_widget(annotation=napari.layers.Image, label="tomogram")
        self.image_picker.tooltip = "The tomogram the particles were picked on."
        self.points_picker = create_widget(annotation=napari.layers.Points, label="particles")
        self.points_picker.tooltip = "Points layer to subdivide; gets a 'cluster' feature."
        self.params = ParamPanel(CLASSIFY_PARAMS[:1] + SUBDIVIDE_PARAMS + CLASSIFY_PARAMS[1:])
        self.runner = JobRunner("Subdivide", title="Subdivision")
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        self.plot = ScatterPlot()
        self.gallery = ClusterGallery(self.select_cluster)
        self.averages_button = PushButton(text="Add averages as layers", enabled=False)
        self.averages_button.tooltip = "One Image layer per cluster average (to look at it in 3D)."
        super().__init__(widgets=[self.image_picker, self.points_picker, self.params, self.runner, self.summary])
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.native.layout().addWidget(self.gallery)
        self.append(self.averages_button)
        self.native.layout().addWidget(self.plot)
        self.averages_button.changed.connect(self.add_average_layers)
        self.runner.run_button.changed.connect(self.start)
        self.plot.selection_changed.connect(self._plot_selected)
        self.linked_layer = None
        self.result = None
        self._result_layers = (None, None)
        self._syncing = False

    def start(self, *_) -> None:
        try:
            tomo, coords, voxel = _snapshot(self.image_picker.value, self.points_picker.value)
            v = self.params.values()
        except ValueError as err:
            show_warning(str(err))
            return
        layer, image = self.points_picker.value, self.image_picker.value
        job = subdivide_points(
            tomo,
            coords,
            v["model"],
            voxel,
            method=v["method"],
            n_clusters=v["n_clusters"],
            k_max=v["k_max"],
            min_cluster_size=v["min_cluster_size"],
            embedding=v["embedding"],
            edge=v["edge"],
            batch_size=v["batch_size"],
            seed=v["seed"],
            device=v["device"],
            polarity=v["polarity"],
            unknown_scale=v["unknown_scale"],
            features=v["features"],
            embed_model=v["embed_model"],
        )
        self.runner.start(job, lambda result: self.show_result(layer, image, result))

    def show_result(self, layer, image, result) -> Iterator[None]:
        """Cluster feature and colours, the gallery of averages, embedding plot, selection link: one part per
        event-loop turn (the runner advances this generator)."""
        self.result = result
        self._result_layers = (layer, image)
        merge_features(layer, result.features[["cluster"]])
        colour_by(layer, "cluster")
        yield
        clusters = result.features["cluster"].to_numpy()
        self.gallery.set_averages(result.averages, {k: int(np.sum(clusters == k)) for k in result.averages})
        self.averages_button.enabled = bool(result.averages)
        yield
        colours = [cluster_colour(int(c)) for c in clusters]
        tips = [f"particle {i}, cluster {c}" for i, c in enumerate(clusters)]
        self.plot.set_data(result.embedding_2d, colours, tips)
        self.link(layer)
        sizes = np.bincount(clusters[clusters >= 0]) if np.any(clusters >= 0) else []
        self.summary.value = (
            f"{result.clustering.n_clusters} clusters ({result.clustering.method}): "
            + ", ".join(f"{k}: {n}" for k, n in enumerate(sizes))
            + (f"; noise {int(np.sum(clusters < 0))}" if np.any(clusters < 0) else "")
        )

    def select_cluster(self, cluster: int) -> None:
        """Select the particles of one cluster in the linked layer (the plot follows)."""
        if self.result is None or self.linked_layer is None:
            return
        members = np.flatnonzero(self.result.features["cluster"].to_numpy() == cluster)
        self.linked_layer.selected_data = {int(i) for i in members}

    def add_average_layers(self, *_) -> None:
        """One (hidden) Image layer per cluster average, at the averages' voxel size."""
        if self.result is None:
            return
        layer, image = self._result_layers
        result = self.result
        scale = tuple(image.scale[-3:]) if image is not None else (1.0, 1.0, 1.0)
        model_vs, vs = result.info.get("model_voxel_size_A"), result.info.get("voxel_size_A")
        if model_vs and vs and result.info.get("resampled_by", 1.0) != 1.0:  # averages are on the model's grid
            scale = tuple(s * model_vs / vs for s in scale)
        for k, cube in result.averages.items():  # small cubes: built here; an earlier average is updated in place
            spec = {
                "name": f"{layer.name} cluster {k} average",
                "scale": scale,
                "units": image.units if image else None,
                "visible": False,
                "metadata": {"cluster": k, "n": int(np.sum(result.features["cluster"] == k))},
            }
            place_layer(self.viewer, build_layer(cube, spec, "image"))

    def link(self, layer) -> None:
        """Link the plot's selection with ``layer.selected_data`` both ways."""
        if self.linked_layer is not None:
            self.linked_layer.selected_data.events.items_changed.disconnect(self._layer_selected)
        self.linked_layer = layer
        layer.selected_data.events.items_changed.connect(self._layer_selected)

    def _plot_selected(self, indices: np.ndarray) -> None:
        if self.linked_layer is None or self._syncing:
            return
        self._syncing = True
        try:
            self.linked_layer.selected_data = {int(i) for i in indices}
        finally:
            self._syncing = False

    def _layer_selected(self, *_) -> None:
        if self._syncing or self.linked_layer is None:
            return
        self._syncing = True
        try:
            self.plot.select(sorted(self.linked_layer.selected_data))
        finally:
            self._syncing = False
