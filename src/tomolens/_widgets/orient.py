"""The "Orientation recovery" dock widget: distance model, recovery, symmetry, reconstruction, FSC, export."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, create_widget
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QGraphicsScene, QGraphicsView

from tomolens._napari.layers import ANGSTROM, show_particles_in_slab, voxel_size_from_layer
from tomolens._widgets._docking import tabify_when_docked
from tomolens._widgets._model import FROM_FILE, chosen_model
from tomolens._widgets._fields import show_whole_path
from tomolens._widgets._layers import build_layer, place_layer
from tomolens._widgets._params import ParamPanel
from tomolens._widgets._runner import JobRunner
from tomolens.models.card import shipped_models
from tomolens.orient.pipeline import DEFAULT_MODEL, RECOVER_PARAMS, TRAIN_PARAMS

log = logging.getLogger(__name__)

TRAINED_HERE = "(trained here)"


class FSCPlot(QGraphicsView):
    """The FSC curve against resolution, with the 0.5 and 0.143 thresholds (plain Qt, no matplotlib)."""

    WIDTH, HEIGHT = 300.0, 160.0

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.Antialiasing)
        self.setMinimumHeight(190)
        self.setToolTip("Fourier shell correlation of the reconstruction with the true map; dashed: 0.5 and 0.143.")
        self.curve: tuple[np.ndarray, np.ndarray] | None = None

    def set_curve(self, frequency_per_A: np.ndarray, fsc: np.ndarray, title: str = "") -> None:
        """Draw an FSC curve: frequencies (Å⁻¹) on x, correlation (−0.2…1) on y."""
        scene = self.scene()
        scene.clear()
        freq = np.asarray(frequency_per_A, float)
        corr = np.clip(np.asarray(fsc, float), -0.2, 1.0)
        self.curve = (freq, corr)
        if len(freq) < 2:
            return
        w, h = self.WIDTH, self.HEIGHT

        def xy(f, c):
            return float(f / freq[-1] * w), float(h - (c + 0.2) / 1.2 * h)

        axes = QPen(QColor("#909090"), 1.0)
        scene.addLine(0, h, w, h, axes)
        scene.addLine(0, 0, 0, h, axes)
        for level in (0.5, 0.143):
            pen = QPen(QColor("#c08040"), 1.0, Qt.DashLine)
            y = xy(0, level)[1]
            scene.addLine(0, y, w, y, pen)
            scene.addSimpleText(f"{level}").setPos(w + 2, y - 8)
        path = QPainterPath()
        path.moveTo(*xy(freq[0], corr[0]))
        for f, c in zip(freq[1:], corr[1:]):
            path.lineTo(*xy(f, c))
        scene.addPath(path, QPen(QColor("#40a0ff"), 2.0))
        for f in (freq[len(freq) // 2], freq[-1]):
            label = scene.addSimpleText(f"{1 / f:.0f} Å")
            label.setPos(xy(f, -0.2)[0] - 15, h + 2)
        if title:
            scene.addSimpleText(title).setPos(5, -18)
        self.fitInView(scene.itemsBoundingRect().adjusted(-10, -10, 10, 10), Qt.KeepAspectRatio)


class OrientationWidget(Container):
    """Recover projection orientations with a Siamese distance network (Banjac et al. 2021).

    Pick an ``.mrcs`` stack layer, a distance model (shipped, from a file, or trained
    here on maps), press *Recover orientations*.  The result is a Points layer of the
    viewing directions on a sphere (coloured by error when a truth STAR is given) and,
    optionally, the reconstruction as an Image layer; *Export* writes a STAR with the
    angles and the reconstruction as MRC.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.stack_picker = create_widget(annotation=napari.layers.Image, label="stack")
        self.stack_picker.tooltip = "The projection stack (an .mrcs opened as an image stack: axis 0 = image)."
        names = list(shipped_models("orient")) or [DEFAULT_MODEL]
        self.model_choice = ComboBox(
            choices=names + [FROM_FILE, TRAINED_HERE],
            value=DEFAULT_MODEL if DEFAULT_MODEL in names else names[0],
            label="model",
            tooltip="Distance network: shipped, from a .pt file, or trained below. A "
            "distance network knows the particle it was trained on "
            "(orient_distance_5j0n: 5j0n): for another particle, train one on "
            "its map (a few CPU minutes).",
        )
        self.model_file = FileEdit(
            mode="r", filter="*.pt *.json", label="model file", tooltip="A distance model (.pt with its .json card)."
        )
        self.train_maps = FileEdit(
            mode="rm",
            filter="*.mrc *.map",
            label="training maps",
            tooltip="3D maps (.mrc) whose simulated projections train a new distance network.",
        )
        self.train_panel = ParamPanel(TRAIN_PARAMS)
        self.train_runner = JobRunner("Train distance model", title="Training the distance model")
        self.truth_star = FileEdit(
            mode="r",
            filter="*.star",
            label="truth STAR (optional)",
            tooltip="True angles (RELION STAR): align the result and colour points by error.",
        )
        self.reference = FileEdit(
            mode="r",
            filter="*.mrc *.map",
            label="true map (optional)",
            tooltip="The true map at the stack's pixel size, for the FSC of the reconstruction.",
        )
        self.panel = ParamPanel([p for p in RECOVER_PARAMS if p.name != "model"])
        self.symmetry_runner = JobRunner("Suggest symmetry", title="Symmetry detection")
        self.symmetry_runner.tooltip = (
            "Measure the point group of the true map (or, without it, of the last "
            "reconstruction) and set the symmetry setting to it."
        )
        self.runner = JobRunner("Recover orientations", title="Orientation recovery")
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        self.fsc_plot = FSCPlot()
        self.export_star = FileEdit(
            mode="w", filter="*.star", label="export STAR", tooltip="Where to write the recovered angles (RELION STAR)."
        )
        show_whole_path(self.export_star)
        self.export_map = FileEdit(
            mode="w", filter="*.mrc", label="export map", tooltip="Where to write the reconstruction (MRC)."
        )
        show_whole_path(self.export_map)
        self.export_button = PushButton(text="Export", tooltip="Write the STAR and the reconstruction")
        super().__init__(
            widgets=[
                self.stack_picker,
                self.model_choice,
                self.model_file,
                self.train_maps,
                self.train_panel,
                self.train_runner,
                self.truth_star,
                self.reference,
                self.panel,
                self.symmetry_runner,
                self.runner,
                self.summary,
                self.export_star,
                self.export_map,
                self.export_button,
            ]
        )
        tabify_when_docked(self)  # from the Plugins menu: a tab beside the open tomolens docks
        self.native.layout().addWidget(self.fsc_plot)
        self.symmetry_report = None
        self.trained_model = None
        self.result = None
        self._result_meta: dict = {}
        self.runner.run_button.changed.connect(self.start_recovery)
        self.train_runner.run_button.changed.connect(self.start_training)
        self.symmetry_runner.run_button.changed.connect(self.suggest_symmetry)
        self.export_button.changed.connect(self.export)

    # -- inputs ---------------------------------------------------------------------------
    def snapshot_stack(self) -> tuple[np.ndarray, float, str]:
        """The selected stack's images (N, n, n) float32, pixel size (Å) and name.

        Raises
        ------
        ValueError
            No layer, a 3D volume instead of a stack, non-square or too few images, or an
            unknown pixel size.
        """
        from tomolens.orient.files import check_stack

        layer = self.stack_picker.value
        if layer is None:
            raise ValueError("Choose the projection stack layer (open an .mrcs file).")
        kind = layer.metadata.get("kind")
        if layer.ndim != 3 or kind not in (None, "stack"):
            raise ValueError(
                f"{layer.name!r} is a {kind or f'{layer.ndim}D image'}, not a stack of projections. "
                "Open a particle stack (.mrcs); a 3D map can be projected with `tomolens orient simulate`."
            )
        images = check_stack(np.asarray(layer.data), repr(layer.name))
        vs = voxel_size_from_layer(layer.scale, layer.units)
        if not vs:
            raise ValueError(f"{layer.name!r} has no pixel size; set it (Å) in the Tomogram widget first.")
        return images, float(vs[-1]), layer.name

    def _model(self):
        from tomolens.models.card import load_model

        choice = self.model_choice.value
        if choice == TRAINED_HERE:
            if self.trained_model is None:
                raise ValueError("No model has been trained here yet; train one or choose another model.")
            return self.trained_model
        source = chosen_model(
            choice, self.model_file.value, "Choose a model file (.pt or .json), train one, or pick a shipped model."
        )
        return load_model(source, "cpu", expected_task="orient")

    # -- actions --------------------------------------------------------------------------
    def start_training(self, *_) -> None:
        from tomolens.orient.pipeline import load_training_maps, training_job

        paths = [p for p in (self.train_maps.value or []) if Path(p).is_file()]
        if not paths:
            show_warning("Choose one or more 3D maps (.mrc) to train on.")
            return
        v = self.train_panel.values()
        try:
            maps = load_training_maps(paths, v["symmetry"])
        except ValueError as err:
            show_warning(str(err))
            return
        job = training_job(maps, v, name="orient_trained_in_napari")

        def done(result) -> None:
            self.trained_model = result
            self.model_choice.value = TRAINED_HERE
            show_info(f"Distance model trained ({result[1].metrics.get('train_steps')} steps).")

        self.train_runner.start(job, done)

    def start_recovery(self, *_) -> None:
        from tomolens.io import read_mrc
        from tomolens.orient.files import read_angles_star
        from tomolens.orient.pipeline import recover_from_stack

        try:
            images, pixel, name = self.snapshot_stack()
            model = self._model()
            truth = None
            if self.truth_star.value and Path(self.truth_star.value).is_file():
                truth = read_angles_star(self.truth_star.value)[0]
            reference = None
            if self.reference.value and Path(self.reference.value).is_file():
                reference = np.asarray(read_mrc(self.reference.value).data, np.float32)
        except ValueError as err:
            show_warning(str(err))
            self.runner.status.value = f"Not started: {err}"
            return
        values = {"model": "unused", **self.panel.values()}
        self._result_meta = {"name": name, "pixel": pixel, "n": images.shape[1], "has_truth": truth is not None}
        meta = dict(self._result_meta)
        self.runner.start(
            recover_from_stack(images, pixel, values, truth, reference, model=model),
            self.show_result,
            prepare=lambda result: (result, orientation_layers(result, meta)),
        )

    def suggest_symmetry(self, *_) -> None:
        """Measure the symmetry of the true map (or the last reconstruction) and set it (job)."""
        from tomolens.io import read_mrc
        from tomolens.orient.symmetry import detect_symmetry

        if self.reference.value and Path(self.reference.value).is_file():
            try:
                vol = read_mrc(self.reference.value)
            except (ValueError, OSError) as err:
                show_warning(f"Could not read the true map: {err}")
                return
            if vol.kind != "volume":
                show_warning(
                    f"{Path(self.reference.value).name} is a {vol.kind}, not a 3D map; symmetry is measured on a map."
                )
                return
            volume, source = np.asarray(vol.data, np.float32), Path(self.reference.value).name
        elif self.result is not None and self.result.reconstruction is not None:
            volume, source = self.result.reconstruction, "the last reconstruction"
        else:
            show_warning(
                "Choose the true map (optional field above) or recover orientations first: the symmetry "
                "is measured on a 3D map."
            )
            return

        def done(report) -> None:
            self.symmetry_report = report
            name = report.suggested.name
            if name in self.panel.controls["symmetry"].choices:
                self.panel.set_values({"symmetry": name})
            show_info(f"{source}: {report.summary()}")

        self.symmetry_runner.start(detect_symmetry(volume), done)

    def show_result(self, prepared: tuple) -> Iterator[None]:
        """Place the orientations (Points on a sphere), widen the slab, and place the reconstruction (Image), built
        in the worker, one per event-loop turn (the runner advances this generator); then the summary and FSC."""
        result, layers = prepared
        self.result = result
        for layer in layers:
            place_layer(self.viewer, layer)
            yield
            if isinstance(layer, napari.layers.Points):  # the slab re-slices every layer: a turn of its own
                show_particles_in_slab(self.viewer, self._result_meta["n"] * self._result_meta["pixel"])
                yield
        self.summary.value = result.summary()
        if result.fsc is not None:
            self.fsc_plot.set_curve(
                result.fsc.frequency_per_A,
                result.fsc.fsc,
                f"FSC {result.fsc.resolution_05_A:.0f} Å (0.5), {result.fsc.resolution_0143_A:.0f} Å (0.143)",
            )
        for warning in result.warnings:
            show_warning(warning)

    def export(self, *_) -> None:
        """Write the recovered angles (STAR) and the reconstruction (MRC)."""
        from tomolens.io import write_mrc
        from tomolens.orient.files import write_angles_star

        if self.result is None:
            show_warning("Recover orientations first.")
            return
        written = []
        star = self.export_star.value
        if star and not Path(star).is_dir():
            extra = {"tlOrientErrorDeg": self.result.errors_deg} if self.result.errors_deg is not None else None
            write_angles_star(
                star,
                self.result.quats,
                f"{self._result_meta['name']}.mrcs",
                self._result_meta["pixel"],
                shifts_A=self.result.shifts_A,
                extra=extra,
                symmetry=self.result.symmetry,
            )
            written.append(str(star))
        mrc = self.export_map.value
        if mrc and not Path(mrc).is_dir() and self.result.reconstruction is not None:
            write_mrc(mrc, self.result.reconstruction, self._result_meta["pixel"])
            written.append(str(mrc))
        if written:
            show_info("Wrote " + ", ".join(written))
        else:
            show_warning("Choose where to write the STAR and/or the map.")


def orientation_layers(result, meta: dict) -> list[napari.layers.Layer]:
    """The viewing directions as Points on a sphere and, if there is one, the reconstruction as an Image.

    Parameters
    ----------
    result : tomolens.orient.pipeline.OrientationResult
        Quaternions (N, 4), errors in degrees (N,) or None, reconstruction (n, n, n) float32 or None.
    meta : dict
        ``name`` (the stack layer's), ``pixel`` (Å) and ``n`` (the image size in pixels).

    Returns
    -------
    list of napari layers
        Built without a viewer (:func:`tomolens._widgets._layers.build_layer`), for a worker thread.
    """
    from tomolens.orient.rotations import matrices

    pixel, n = meta["pixel"], meta["n"]
    radius = 0.5 * n
    directions = matrices(result.quats)[:, 2, :]  # viewing directions Aᵀ e_z (x, y, z)
    points = directions[:, ::-1] * radius + radius  # z, y, x in pixels around the box centre
    features = {"index": np.arange(len(points))}
    kwargs = {}
    if result.errors_deg is not None:
        features["error_deg"] = result.errors_deg
        kwargs = {"face_color": "error_deg", "face_colormap": "viridis"}
    # projection_mode "all" with a slab as thick as the sphere: in 2D every direction
    # shows (the sphere seen along z); the 3D view (Ctrl+Y) shows the sphere itself.
    scale = {"scale": (pixel,) * 3, "units": (ANGSTROM,) * 3}
    spec = {"name": f"{meta['name']} orientations", "features": features, "size": 1.5, "projection_mode": "all"}
    layers = [build_layer(points, {**spec, **scale, **kwargs}, "points")]
    if result.reconstruction is not None:
        image = {"name": f"{meta['name']} reconstruction", "projection_mode": "none", **scale}
        layers.append(build_layer(result.reconstruction, image, "image"))
    return layers
