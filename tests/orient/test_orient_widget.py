"""The Orientation recovery dock widget: train a tiny model, recover, show layers, export, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomolens.io import write_mrc
from tomolens.jobs import run_job
from tomolens.orient.files import read_angles_star, write_projection_set
from tomolens.orient.project import simulate_projections


def _blob_map(n=24, seed=0):
    rng = np.random.default_rng(seed)
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(6):
        vol[tuple(rng.integers(n // 4, 3 * n // 4, 3))] += rng.uniform(0.5, 2.0)
    return ndimage.gaussian_filter(vol, 1.5) * 10


@pytest.fixture
def orient_widget(make_napari_viewer, tmp_path):
    import torch

    torch.set_num_threads(1)
    from tomolens._widgets.orient import OrientationWidget

    viewer = make_napari_viewer()
    vol = _blob_map()
    write_mrc(tmp_path / "train.mrc", _blob_map(seed=1), 8.0)
    pset = run_job(simulate_projections(vol, 8.0, 40, seed=3))
    write_projection_set(tmp_path / "stack.mrcs", tmp_path / "truth.star", pset)
    from tomolens._napari.reader import read_mrc_layers

    data, kwargs, _ = read_mrc_layers(str(tmp_path / "stack.mrcs"))[0]
    layer = viewer.add_image(np.asarray(data), **kwargs)
    widget = OrientationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.reset_choices()
    widget.stack_picker.value = layer
    return widget, viewer, tmp_path, vol


def test_train_recover_show_and_export(orient_widget, qtbot):
    widget, viewer, tmp_path, vol = orient_widget
    widget.train_maps.value = [str(tmp_path / "train.mrc")]
    widget.train_panel.set_values(
        {"pixel_size_A": 8.0, "input_size": 24, "projections_per_map": 100, "train_steps": 10, "batch_size": 16}
    )
    widget.start_training()
    qtbot.waitUntil(lambda: not widget.train_runner.running, timeout=600000)
    assert widget.trained_model is not None and widget.model_choice.value == "(trained here)"

    widget.truth_star.value = str(tmp_path / "truth.star")
    widget.panel.set_values({"recover_steps": 20, "pairs_per_step": 500, "n_anchors": 20})
    widget.start_recovery()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=600000)
    assert widget.result is not None, widget.runner.status.value
    points = viewer.layers["stack orientations"]
    assert points.data.shape == (40, 3)
    radius = np.linalg.norm(points.data - 12.0, axis=1)
    np.testing.assert_allclose(radius, 12.0, atol=1e-6)  # on a sphere around the box centre
    errors = points.features["error_deg"].to_numpy()
    assert errors.shape == (40,) and np.all((errors >= 0) & (errors <= 180))
    recon = viewer.layers["stack reconstruction"]
    assert recon.data.shape == (24, 24, 24)
    assert "mean orientation error" in widget.summary.value

    widget.export_star.value = str(tmp_path / "out.star")
    widget.export_map.value = str(tmp_path / "out.mrc")
    widget.export()
    quats, _ = read_angles_star(tmp_path / "out.star")
    assert quats.shape == (40, 4)
    assert (tmp_path / "out.mrc").is_file()


def test_volume_layer_is_refused_with_a_clear_message(orient_widget):
    widget, viewer, tmp_path, vol = orient_widget
    layer = viewer.add_image(vol, name="map", scale=(8.0,) * 3, units=("angstrom",) * 3, metadata={"kind": "volume"})
    widget.reset_choices()
    widget.stack_picker.value = layer
    with pytest.raises(ValueError, match="not a stack of projections"):
        widget.snapshot_stack()
    widget.start_recovery()  # shows a warning instead of starting
    assert not widget.runner.running and "Not started" in widget.runner.status.value


def test_model_choice_without_a_model_says_what_to_do(orient_widget):
    from tomolens._widgets._model import FROM_FILE

    widget, viewer, tmp_path, vol = orient_widget
    widget.model_choice.value = FROM_FILE
    widget.model_file.value = str(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="Choose a model file"):
        widget._model()
    widget.model_choice.value = "(trained here)"
    with pytest.raises(ValueError, match="No model has been trained here yet"):
        widget._model()
    widget.start_recovery()
    assert not widget.runner.running and "Not started" in widget.runner.status.value


def test_symmetry_chooser_suggestion_and_fsc_plot(orient_widget, qtbot):
    """'Suggest symmetry' measures the true map and sets the chooser; the FSC curve is drawn."""
    from tomolens.orient.reconstruct import fourier_shell_correlation
    from tomolens.orient.symmetry import symmetrise_volume

    widget, viewer, tmp_path, vol = orient_widget
    assert "D7" in widget.panel.controls["symmetry"].choices and widget.panel.values()["symmetry"] == "C1"
    widget.suggest_symmetry()  # nothing to measure yet: a warning, no job
    assert not widget.symmetry_runner.running
    write_mrc(tmp_path / "c3.mrc", symmetrise_volume(vol, "C3"), 8.0)
    widget.reference.value = str(tmp_path / "c3.mrc")
    widget.suggest_symmetry()
    qtbot.waitUntil(lambda: not widget.symmetry_runner.running, timeout=600000)
    assert widget.symmetry_report is not None and widget.symmetry_report.suggested.name == "C3"
    assert widget.panel.values()["symmetry"] == "C3"
    fsc = fourier_shell_correlation(vol, vol + 0.1 * np.random.default_rng(0).normal(size=vol.shape), 8.0)
    widget.fsc_plot.set_curve(fsc.frequency_per_A, fsc.fsc, "test")
    freq, corr = widget.fsc_plot.curve
    assert len(freq) == 11 and corr[0] > 0.9 and len(widget.fsc_plot.scene().items()) > 5


def test_result_layers_are_built_off_the_viewer_and_placed_one_per_step(orient_widget):
    from tomolens._widgets.orient import orientation_layers
    from tomolens.orient.pipeline import OrientationResult

    widget, viewer, tmp_path, vol = orient_widget
    rng = np.random.default_rng(5)

    def result(seed_errors):
        quats = rng.normal(size=(40, 4))
        quats /= np.linalg.norm(quats, axis=1, keepdims=True)
        return OrientationResult(quats, np.full(40, seed_errors), vol.copy() * seed_errors, warnings=[])

    meta = {"name": "stack", "pixel": 8.0, "n": 24, "has_truth": True}
    widget._result_meta = dict(meta)
    first = result(1.0)
    layers = orientation_layers(first, meta)  # no viewer needed: what the worker runs
    assert [layer.name for layer in layers] == ["stack orientations", "stack reconstruction"]
    assert layers[1].contrast_limits[1] > layers[1].contrast_limits[0]
    n_before = len(viewer.layers)
    steps = widget.show_result((first, layers))
    next(steps)  # first turn: the orientations only
    assert "stack orientations" in viewer.layers and "stack reconstruction" not in viewer.layers
    assert widget.summary.value == ""
    next(steps)  # second turn: the slab as thick as the sphere (24 pixels of 8 Å)
    assert max(viewer.dims.thickness) >= 24 * 8.0 and "stack reconstruction" not in viewer.layers
    next(steps)  # third turn: the reconstruction
    assert "stack reconstruction" in viewer.layers
    assert list(steps) == [] and "40 orientations" in widget.summary.value
    points, recon = viewer.layers["stack orientations"], viewer.layers["stack reconstruction"]
    # a second run updates the two layers in place instead of adding "stack orientations [1]"
    second = result(2.0)
    list(widget.show_result((second, orientation_layers(second, meta))))
    assert len(viewer.layers) == n_before + 2
    assert viewer.layers["stack orientations"] is points and viewer.layers["stack reconstruction"] is recon
    np.testing.assert_allclose(recon.data, vol * 2.0)
    np.testing.assert_allclose(points.features["error_deg"], 2.0)
