import time

import numpy as np
import pytest

from tomolens import preprocess
from tomolens._widgets.tomogram import TomogramWidget


@pytest.fixture
def widget_and_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data = np.random.default_rng(0).normal(size=(64, 64, 64)).astype(np.float32)
    layer = viewer.add_image(data, name="tomo")
    widget = TomogramWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.layer_picker.value = layer
    # choosing a tomogram starts measuring its contrast: let that finish before the test drives the widget
    qtbot.waitUntil(lambda: not widget.contrast_runner.running, timeout=20000)
    assert widget.contrast.value.startswith("contrast: undecided")  # pure noise
    return widget, viewer, layer


def test_info_and_voxel_size(widget_and_viewer, monkeypatch):
    import tomolens._widgets.tomogram as tomogram_module

    widget, viewer, layer = widget_and_viewer
    assert "(64, 64, 64)" in widget.info.value and "unknown" in widget.info.value
    # unknown: the box says so (no made-up 10.00), and 'Set voxel size' without a typed value sets nothing
    assert widget.voxel_size.value == 0 and widget.voxel_size.native.text() == "unknown"
    said = []
    monkeypatch.setattr(tomogram_module, "show_warning", said.append)
    widget.set_voxel_size()
    assert said and "Type the voxel size" in said[0]
    np.testing.assert_allclose(layer.scale, (1.0,) * 3)
    widget.voxel_size.value = 13.5
    widget.set_voxel_size()
    np.testing.assert_allclose(layer.scale, (13.5,) * 3)
    assert "13.5" in widget.info.value
    layer.scale, layer.units = (1.0,) * 3, ("pixel",) * 3  # a tomogram without a voxel size again
    widget._refresh()
    assert widget.voxel_size.native.text() == "unknown"  # not the 13.5 it showed before


def test_binning_job_adds_binned_layer(widget_and_viewer, qtbot):
    widget, viewer, layer = widget_and_viewer
    layer.scale = (10.0, 10.0, 10.0)
    widget.bin_factor.value = 2
    widget.start_binning()
    assert not widget.runner.run_button.enabled
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    binned = viewer.layers["tomo bin2"]
    assert binned.data.shape == (32, 32, 32)
    np.testing.assert_allclose(binned.scale, (20.0, 20.0, 20.0))
    np.testing.assert_allclose(binned.data[0, 0, 0], layer.data[:2, :2, :2].mean(), rtol=1e-5)
    assert widget.runner.progress.value == 1000 and widget.runner.run_button.enabled
    # binning again updates the binned layer in place (built in the worker, placed on the GUI thread)
    n_layers = len(viewer.layers)
    layer.data = layer.data * 2
    widget.start_binning()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    assert len(viewer.layers) == n_layers and viewer.layers["tomo bin2"] is binned
    np.testing.assert_allclose(binned.data[0, 0, 0], layer.data[:2, :2, :2].mean(), rtol=1e-5)
    assert binned.contrast_limits[1] > binned.contrast_limits[0]


def test_cancel_stops_binning_without_a_layer(widget_and_viewer, qtbot):
    widget, viewer, layer = widget_and_viewer
    big = np.random.default_rng(1).normal(size=(256, 128, 128)).astype(np.float32)
    layer.data = big
    calls = []

    def slow_bin(data, factor, slab=1):
        for progress in preprocess.bin_volume(data, factor, slab=1):
            calls.append(progress)
            time.sleep(0.02)
            yield progress
        return None

    widget.runner.start(slow_bin(big, 2), lambda result: viewer.add_image(result, name="should not appear"))
    qtbot.waitUntil(lambda: len(calls) >= 2, timeout=10000)
    widget.runner.cancel()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=10000)
    assert "should not appear" not in [l.name for l in viewer.layers]
    assert len(calls) < 128
    assert widget.runner.status.value == "Cancelled"


def test_errors_become_notifications_not_crashes(widget_and_viewer, qtbot, monkeypatch):
    widget, viewer, layer = widget_and_viewer
    shown = []
    monkeypatch.setattr("tomolens._widgets._runner.show_error", shown.append)

    def failing():
        yield from ()
        raise ValueError("the volume is constant")

    widget.runner.start(failing(), lambda r: None)
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=10000)
    assert shown and "the volume is constant" in shown[0]
    assert widget.runner.run_button.enabled


def test_contrast_is_measured_and_shown_for_a_dark_tomogram(make_napari_viewer, qtbot, blobs):
    viewer = make_napari_viewer()
    layer = viewer.add_image(-blobs(seed=5), name="raw", scale=(10.0, 10.0, 10.0))
    widget = TomogramWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.layer_picker.value = layer
    widget.start_contrast()
    qtbot.waitUntil(lambda: widget.estimate is not None and not widget.contrast_runner.running, timeout=20000)
    assert widget.contrast.value.startswith("contrast: dark") and "raw cryo-ET" in widget.contrast.value
    assert layer.metadata["polarity_estimate"]["polarity"] == "dark"


def test_display_filters_leave_the_data_alone(widget_and_viewer, qtbot):
    widget, viewer, layer = widget_and_viewer
    layer.scale = (10.0, 10.0, 10.0)
    before = layer.data.copy()
    widget.display_filter.value = "slab mean"
    widget.slab_slices.value = 7
    widget.apply_display_filter()
    assert layer.projection_mode == "mean" and viewer.dims.thickness[0] == pytest.approx(70.0)
    widget.display_filter.value = "Gaussian low-pass"
    widget.sigma_A.value = 20.0
    widget.apply_display_filter()
    qtbot.waitUntil(lambda: not widget.filter_runner.running, timeout=20000)
    copy = viewer.layers["tomo display σ=20Å"]
    assert copy.metadata["display_only"] and copy.data.std() < 0.2 * layer.data.std()
    n_layers, blurred = len(viewer.layers), copy.data.copy()
    layer.data = layer.data * 3  # the data of the display copy only: restored below
    widget.apply_display_filter()  # again: the copy is updated in place, not removed and added
    qtbot.waitUntil(lambda: not widget.filter_runner.running, timeout=20000)
    assert len(viewer.layers) == n_layers and viewer.layers["tomo display σ=20Å"] is copy
    np.testing.assert_allclose(copy.data, blurred * 3, rtol=1e-4, atol=1e-6)
    layer.data = before.copy()
    widget.display_filter.value = "none"
    widget.apply_display_filter()
    assert layer.projection_mode == "none"
    np.testing.assert_array_equal(layer.data, before)


def test_choosing_another_tomogram_while_measuring_shows_the_chosen_ones_contrast(make_napari_viewer, qtbot, blobs):
    viewer = make_napari_viewer()
    bright = viewer.add_image(blobs(seed=5), name="bright", scale=(10.0, 10.0, 10.0))
    widget = TomogramWidget(viewer)
    dock = viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.layer_picker.value = bright
    widget.start_contrast()
    assert widget.contrast_runner.running
    dark = viewer.add_image(-blobs(seed=5), name="dark", scale=(10.0, 10.0, 10.0))
    widget.layer_picker.value = dark  # while the bright one is measured (its result must not be shown for it)
    qtbot.waitUntil(lambda: "polarity_estimate" in dark.metadata and not widget.contrast_runner.running, timeout=30000)
    assert widget.contrast.value.startswith("contrast: dark")
    assert bright.metadata["polarity_estimate"]["polarity"] == "bright"
    viewer.window.remove_dock_widget(dock)  # closing the viewer (removing its layers) must not start another
