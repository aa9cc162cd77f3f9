"""Regenerate the README screenshots: ``xvfb-run -a python docs/screenshots.py [NAME ...]``.

Opens the crowded sample, runs each widget's main job through its own buttons the way a
user would, waits for the worker, and saves the window as ``docs/img/<widget>.png``.
Names: tomogram, detect, segment, segment_painted, classify, subdivide, orient (default: all).
``segment_painted`` paints 5 z-slices of a simulated tomogram's truth (validation seed 7102,
not a benchmark test seed) into a Labels layer and trains a new network with the Train box's
defaults (5 minutes on 2 cores) before predicting.  The
orientation shot simulates 1,000 projections of ``../shared/data/5j0n.mrc`` (skipped when
the shared data is absent).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).parent / "img"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALL = ["tomogram", "detect", "segment", "segment_painted", "classify", "subdivide", "orient"]


def wait_for(runner, timeout_s: float = 600.0) -> None:
    start = time.time()
    while runner.running and time.time() - start < timeout_s:
        QApplication.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)


def shoot(viewer, name: str) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    OUT.mkdir(parents=True, exist_ok=True)
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):  # noqa: SLF001
        toast.close()  # no toasts over the canvas
    QApplication.processEvents()

    viewer.screenshot(str(OUT / f"{name}.png"), canvas_only=False)
    print("saved", OUT / f"{name}.png")


def only(viewer, visible: list[str]) -> None:
    """Show only the layers whose names are in ``visible``."""
    for layer in viewer.layers:
        layer.visible = layer.name in visible


def add_dock(viewer, widget, name: str):
    """Dock ``widget`` on the right and refresh its layer pickers."""
    d = viewer.window.add_dock_widget(widget, name=name)
    widget.reset_choices()
    return d


def main(which: list[str]) -> None:
    from tomolens._widgets.classify import ClassifyWidget, SubdivideWidget
    from tomolens._widgets.detect import DetectWidget
    from tomolens._widgets.orient import OrientationWidget
    from tomolens._widgets.segment import SegmentWidget
    from tomolens._widgets.tomogram import TomogramWidget

    viewer = napari.Viewer(title="napari-tomolens")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-tomolens", "crowded")
    tomo = viewer.layers["sample tomogram"] if "sample tomogram" in viewer.layers else viewer.layers[0]
    from tomolens._napari.layers import show_layer_particles

    show_layer_particles(viewer, viewer.layers["sample particles"])  # as the workbench does
    if "tomogram" in which:
        # as a user has it: the raw (dark) contrast, measured by the widget, seen through a slab mean
        raw = viewer.add_image(
            -tomo.data,
            name="sample tomogram (raw, dark)",
            scale=tomo.scale,
            units=tomo.units,
            contrast_limits=tuple(-c for c in reversed(tomo.contrast_limits)),
        )
        only(viewer, [raw.name])
        widget = TomogramWidget(viewer)
        d = add_dock(viewer, widget, "Tomogram")
        widget.layer_picker.value = raw
        wait_for(widget.contrast_runner)
        widget.display_filter.value = "slab mean"
        widget.slab_slices.value = 5
        widget.apply_display_filter()
        wait_for(widget.runner)
        shoot(viewer, "tomogram")
        widget.display_filter.value = "none"
        widget.apply_display_filter()
        viewer.layers.remove(raw)
        only(viewer, [tomo.name, "sample particles"])
        viewer.window.remove_dock_widget(d)
    if "detect" in which:
        widget = DetectWidget(viewer)
        d = add_dock(viewer, widget, "Detect particles")
        widget.start_detection()
        wait_for(widget.runner)
        widget.truth.value = viewer.layers["sample particles"]  # precision, recall and their curve in the dock
        for _ in range(20):  # let the dock lay out the three evaluation lines and the plot
            QApplication.processEvents()
            time.sleep(0.05)
        for name in ("sample particles", "sample instances", "sample semantic"):
            if name in viewer.layers:
                viewer.layers[name].visible = False
        for layer in viewer.layers:
            if layer.name.endswith(("instances", "centres")) and layer.name.startswith(tomo.name):
                layer.visible = True
        shoot(viewer, "detect")
        viewer.window.remove_dock_widget(d)
    if "segment" in which:
        widget = SegmentWidget(viewer)
        d = add_dock(viewer, widget, "Segment")
        widget.image.value = tomo
        widget.start_prediction()
        wait_for(widget.predict_runner)
        only(viewer, [tomo.name, f"{tomo.name} segmentation"])
        viewer.reset_view()
        shoot(viewer, "segment")
        viewer.window.remove_dock_widget(d)
    if "segment_painted" in which:
        shoot_painted_training(viewer, SegmentWidget)
    if "classify" in which:
        widget = ClassifyWidget(viewer)
        d = add_dock(viewer, widget, "Classify")
        widget.image_picker.value = tomo
        widget.points_picker.value = viewer.layers["sample particles"]
        widget.start_classification()
        wait_for(widget.runner)
        only(viewer, [tomo.name, "sample particles"])
        viewer.layers.selection.active = viewer.layers["sample particles"]
        shoot(viewer, "classify")
        viewer.window.remove_dock_widget(d)
    if "subdivide" in which:
        widget = SubdivideWidget(viewer)
        d = add_dock(viewer, widget, "Subdivide")
        widget.image_picker.value = tomo
        points = viewer.layers["sample particles"]
        widget.points_picker.value = points
        widget.start()
        wait_for(widget.runner)
        only(viewer, [tomo.name, "sample particles"])
        viewer.layers.selection.active = points
        widget.plot.select(list(range(0, len(points.data), 4))[:12])  # a selection made in the plot
        wait_for(widget.runner)
        shoot(viewer, "subdivide")
        viewer.window.remove_dock_widget(d)
    if "orient" in which and (SHARED / "5j0n.mrc").is_file():
        shoot_orientation(viewer, OrientationWidget)
    viewer.close()


def shoot_painted_training(viewer, widget_class) -> None:
    """Train a new network from 5 painted slices in the Segment widget, predict, and shoot."""
    from tomolens._napari.layers import scale_kwargs
    from tomolens.segment.labels import evenly_spaced_slices, sparse_from_classes
    from tomolens.segment.simulated import simulate_sample

    sample = simulate_sample(7102, snr=0.05)
    for layer in list(viewer.layers):
        layer.visible = False
    tomo = viewer.add_image(sample.tomogram, name="seed 7102", **scale_kwargs(10.0, 3))
    slices = evenly_spaced_slices(5, sample.tomogram.shape[0])
    painted = viewer.add_labels(sparse_from_classes(sample.classes, slices), name="painted", **scale_kwargs(10.0, 3))
    widget = widget_class(viewer)
    d = add_dock(viewer, widget, "Segment")
    widget.image.value, widget.painted.value = tomo, painted
    widget.train_params.controls["segment_start_from"].value = "none"  # a new network: only the 5 slices
    widget.save_path.value = str(Path(tempfile.gettempdir()) / "tomolens_screenshot_painted.pt")
    widget.start_training()
    wait_for(widget.train_runner, timeout_s=900)
    widget.start_prediction()
    wait_for(widget.predict_runner)
    only(viewer, [tomo.name, f"{tomo.name} segmentation"])
    viewer.reset_view()
    viewer.dims.set_point(0, 10.0 * 27)  # a slice that was not painted, crossed by a microtubule
    shoot(viewer, "segment_painted")
    viewer.window.remove_dock_widget(d)


def shoot_orientation(viewer, widget_class) -> None:
    """1,000 projections of 5j0n at noise variance 16, recovered (and refined) with the default settings."""
    from tomolens.io import read_mrc
    from tomolens.jobs import run_job
    from tomolens.orient.files import write_projection_set
    from tomolens.orient.project import simulate_projections

    tmp = Path(tempfile.mkdtemp())
    vol = read_mrc(SHARED / "5j0n.mrc")
    pset = run_job(simulate_projections(vol.data, float(vol.voxel_size_A[0]), 1000, seed=1, noise_variance=16.0))
    write_projection_set(tmp / "5j0n.mrcs", tmp / "5j0n_truth.star", pset)
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    viewer.open(str(tmp / "5j0n.mrcs"), plugin="napari-tomolens")
    widget = widget_class(viewer)
    d = add_dock(viewer, widget, "Orientation recovery")
    widget.stack_picker.value = viewer.layers["5j0n"]
    widget.truth_star.value = str(tmp / "5j0n_truth.star")
    widget.reference.value = str(SHARED / "5j0n.mrc")
    widget.start_recovery()
    wait_for(widget.runner)
    only(viewer, ["5j0n orientations"])
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0, 30, 60)
    viewer.reset_view()
    shoot(viewer, "orient")
    viewer.dims.ndisplay = 2
    viewer.window.remove_dock_widget(d)


if __name__ == "__main__":
    main(sys.argv[1:] or ALL)
