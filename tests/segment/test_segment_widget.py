"""The Segment dock widget through the viewer: paint, train, predict, re-threshold, cancel, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_toy import TOY_CLASSES, make_toy

from tomolens._widgets.segment import FROM_FILE, SegmentWidget
from tomolens.segment.labels import sparse_from_classes

SMALL = {
    "segment_start_from": "none",  # a new network (the shipped default is fine-tuned unless told otherwise)
    "segment_model": "2d",
    "epochs": 2,
    "steps_per_epoch": 6,
    "patch": 32,
    "batch_size": 4,
    "base_channels": 4,
    "learning_rate": 5e-3,
    "device": "cpu",
}


@pytest.fixture
def setup(make_napari_viewer, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    shown = []
    monkeypatch.setattr("tomolens._widgets.segment.show_warning", shown.append)
    viewer = make_napari_viewer()
    tomo, classes = make_toy(0)
    image = viewer.add_image(tomo, name="toy", scale=(10.0,) * 3, units=("angstrom",) * 3)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.image.value = image
    widget.class_names.value = ", ".join(TOY_CLASSES)
    widget.train_params.set_values(SMALL)
    widget.save_path.value = str(tmp_path / "painted_model.pt")
    return widget, viewer, classes, shown


def _paint(widget, classes, slices):
    widget.add_painting_layer()
    layer = widget.painted.value
    painted = sparse_from_classes(classes, slices)
    for z in slices:  # as a user would: slice by slice
        layer.data[z] = painted[z]
    layer.refresh()
    return layer


def test_paint_train_predict_and_rethreshold(setup, qtbot, tmp_path):
    widget, viewer, classes, shown = setup
    assert "1 = background, 2 = membrane, 3 = filament" in widget.legend.value
    layer = _paint(widget, classes, [3, 8, 12])
    assert layer.data.shape == classes.shape and layer.name == "toy painted"
    widget.start_training()
    assert not widget.train_runner.run_button.enabled
    qtbot.waitUntil(lambda: not widget.train_runner.running, timeout=300000)
    assert not shown, shown
    assert (tmp_path / "painted_model.pt").is_file() and (tmp_path / "painted_model.json").is_file()
    assert (tmp_path / "painted_model.ckpt").is_file()
    assert len(widget.loss_plot.series["loss"]) == 2 and "epoch 2" in widget.loss_text.value
    assert widget.model_choice.value == FROM_FILE and "2d U-Net" in widget.model_info.value
    widget.predict_params.set_values({"orthogonal": False, "device": "cpu"})
    widget.start_prediction()
    qtbot.waitUntil(lambda: not widget.predict_runner.running, timeout=300000)
    assert not shown, shown
    seg = viewer.layers["toy segmentation"]
    assert seg.data.shape == classes.shape and set(np.unique(seg.data)) <= {0, 2, 3}
    # a class has the same colour in the painted and the predicted layer, and classes differ
    painted_colours, predicted_colours = layer.colormap.map([1, 2, 3]), seg.colormap.map([0, 2, 3])
    np.testing.assert_allclose(painted_colours[1:], predicted_colours[1:])
    assert predicted_colours[0][3] == 0 and np.abs(painted_colours[1] - painted_colours[2]).max() > 0.5
    from napari.utils.colormaps.standardize_color import transform_color

    from tomolens._napari.layers import CLASS_COLOURS

    np.testing.assert_allclose(predicted_colours[2], transform_color(CLASS_COLOURS[2])[0], atol=1e-3)
    for name in TOY_CLASSES:
        prob = viewer.layers[f"toy P({name})"]
        assert prob.data.shape == classes.shape and 0 <= prob.data.min() and prob.data.max() <= 1
    np.testing.assert_allclose(seg.scale, (10.0,) * 3)
    widget.predict_params.controls["threshold"].value = 0.01  # no network, in the worker
    assert widget.predict_runner.running
    qtbot.waitUntil(lambda: not widget.predict_runner.running, timeout=60000)
    low = int((viewer.layers["toy segmentation"].data > 0).sum())
    widget.predict_params.controls["threshold"].value = 0.99
    qtbot.waitUntil(lambda: not widget.predict_runner.running, timeout=60000)
    assert viewer.layers["toy segmentation"] is seg  # updated in place
    high = int((viewer.layers["toy segmentation"].data > 0).sum())
    assert low > high and low > 0
    widget.class_names.value = "background, membrane"  # the model has three classes
    widget.start_prediction()
    assert "segments ['background', 'membrane', 'filament']" in shown[-1] and not widget.predict_runner.running


def test_cancel_training_and_prediction(setup, qtbot, tmp_path):
    widget, viewer, classes, shown = setup
    _paint(widget, classes, [4, 11])
    widget.train_params.set_values({"epochs": 50})
    widget.start_training()
    widget.train_runner.cancel()
    qtbot.waitUntil(lambda: not widget.train_runner.running, timeout=300000)
    assert widget.train_runner.status.value == "Cancelled"
    assert not (tmp_path / "painted_model.pt").exists()
    widget.model_choice.value = FROM_FILE
    widget.model_file.value = str(tmp_path / "painted_model.pt")
    widget.start_prediction()  # no model file yet: a clear warning, nothing starts
    assert "Choose a model file" in shown[-1] and not widget.predict_runner.running


def test_bad_input_messages(setup, qtbot):
    widget, viewer, classes, shown = setup
    widget.add_painting_layer()
    widget.start_training()
    assert "No voxels are painted" in shown[-1]
    widget.painted.value.data[5] = 1
    widget.start_training()
    assert "Only one class" in shown[-1]
    other = viewer.add_labels(np.ones((4, 8, 8), np.uint8), name="wrong shape")
    widget.reset_choices()
    widget.painted.value = other
    widget.start_training()
    assert "labels have shape (4, 8, 8)" in shown[-1]
    widget.class_names.value = "background"
    assert "at least two classes" in widget.legend.value
    assert not widget.train_runner.running


def test_start_from_is_the_shipped_default_whatever_the_classes(make_napari_viewer):
    from tomolens.segment.predict import DEFAULT_MODEL

    viewer = make_napari_viewer()
    widget = SegmentWidget(viewer)
    start = widget.train_params.controls["segment_start_from"]
    assert start.value == DEFAULT_MODEL and "Train:" not in widget.legend.value  # the model's own classes
    widget.class_names.value = ", ".join(TOY_CLASSES)  # other classes: still fine-tuned, with a new output layer
    assert start.value == DEFAULT_MODEL
    assert f"Train: {DEFAULT_MODEL} segments background, membrane, filament, particle" in widget.legend.value
    assert "copied from it: background, membrane, filament" in widget.legend.value
    assert "training keeps its weights" in start.tooltip and start.tooltip.startswith("Fine-tune this model")
    widget.class_names.value = "background, membrane, microtubule, ice"
    assert (
        "microtubule ← filament" in widget.legend.value and "learnt from your painting only: ice" in widget.legend.value
    )
    start.value = "none"  # a new network: nothing to explain, and the class names do not change it back
    assert "Train:" not in widget.legend.value and "training keeps its weights" not in start.tooltip
    widget.class_names.value = "background, membrane, filament, particle"
    assert start.value == "none"
    start.value = "/data/my_model.pt"  # a typed model is kept (unreadable: training will say why)
    widget.class_names.value = "background, membrane"
    assert start.value == "/data/my_model.pt" and "Train:" not in widget.legend.value


def test_segmentation_of_a_tomogram_without_voxel_size_is_refused(make_napari_viewer, qtbot, monkeypatch):
    """A tomogram layer in pixels (header voxel size 0): Predict and Train refuse with a notification naming the
    Tomogram dock's 'Set voxel size' instead of running the model at its own voxel size; with the voxel size set
    the segmentation lies on the tomogram."""
    import tomolens._widgets.segment as segment_module

    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    tomo, _ = make_toy(0)
    pixels = viewer.add_image(tomo[:16, :32, :32], name="pixels")  # scale 1, units pixel
    painted = viewer.add_labels(np.zeros(pixels.data.shape, np.uint8), name="painting")
    widget = SegmentWidget(viewer)
    widget.reset_choices()
    widget.image.value, widget.painted.value = pixels, painted
    widget.predict_params.controls["device"].value = "cpu"
    said = []
    monkeypatch.setattr(segment_module, "show_warning", said.append)
    widget.start_prediction()
    widget.start_training()
    assert not widget.predict_runner.running and not widget.train_runner.running and widget.result is None
    assert len(said) == 2 and all("The voxel size of 'pixels' is unknown" in m and "Set voxel size" in m for m in said)
    pixels.scale, pixels.units = (10.0,) * 3, ("angstrom",) * 3  # what the Tomogram dock's 'Set voxel size' does
    widget.start_prediction()
    qtbot.waitUntil(lambda: not widget.predict_runner.running, timeout=120000)
    assert widget.result is not None, widget.predict_runner.status.value
    np.testing.assert_allclose(viewer.layers["pixels segmentation"].scale, pixels.scale)


def test_painted_labels_are_not_preselected_from_detect_or_segment_results(make_napari_viewer):
    """The Detect dock's mask (a tomolens result) is not offered as 'painted labels' by default (Train would refuse
    it); a Labels layer of the user's, or one made with 'New painting layer', is."""
    from tomolens._widgets.detect import detection_layers
    from tomolens.detect.detector import DetectionResult
    from tomolens.io.coords import ParticleTable

    viewer = make_napari_viewer()
    tomo, classes = make_toy(0)
    scale = {"scale": (10.0,) * 3, "units": ("angstrom",) * 3}
    image = viewer.add_image(tomo, name="tomo", **scale)
    empty = np.zeros(tomo.shape, np.int32)
    result = DetectionResult(np.zeros((2, 1, 1, 1)), empty > 0, empty, ParticleTable(np.empty((0, 3))), 10.0, 10.0)
    for layer in detection_layers(result, "tomo"):  # "tomo mask", "tomo instances", "tomo centres"
        viewer.add_layer(layer)
    widget = SegmentWidget(viewer)
    widget.reset_choices()
    widget.image.value = image
    assert viewer.layers["tomo mask"] in widget.painted.choices  # still choosable by hand
    assert widget.painted.value is None
    mine = viewer.add_labels(np.zeros(tomo.shape, np.uint8), name="my painting", **scale)
    widget.reset_choices()
    assert widget.painted.value is mine
    widget.painted.value = None
    widget.add_painting_layer()
    assert widget.painted.value is viewer.layers["tomo painted"]
