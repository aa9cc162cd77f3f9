import time

import numpy as np
import pytest
import torch

from detect_helpers import make_spheres
from tomolens._widgets.detect import FROM_FILE, DetectWidget, sparkline
from tomolens.models.card import ModelCard, save_model
from tomolens.models.unet import UNet3D


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    net = UNet3D(1, 2, base_channels=2, depth=2)
    card = ModelCard(
        name="tiny",
        task="detect",
        architecture="tomolens.models.unet:UNet3D",
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": 2, "depth": 2},
        classes=["mask", "centre"],
        voxel_size_A=10.0,
        patch_size=[16, 16, 16],
    )
    weights, _ = save_model(net, card, tmp_path / "tiny.pt")
    return weights


@pytest.fixture
def widget(make_napari_viewer):
    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    tomo, inst, centres = make_spheres(shape=(32, 48, 48), n=10, min_sep=9.0, seed=4)
    scale = {"scale": (10.0, 10.0, 10.0), "units": ("angstrom",) * 3}
    image = viewer.add_image(tomo, name="tomo", **scale)
    viewer.add_labels(inst, name="truth labels", **scale)
    viewer.add_points(centres, name="truth", **scale)
    w = DetectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    w.image.value = image
    return w, viewer


def detect_with(w, model_path, qtbot):
    """Run the dock's detection with a model file and permissive thresholds; wait for it."""
    w.model_choice.value = FROM_FILE
    w.model_file.value = str(model_path)
    w.params.controls["mask_threshold"].value = 0.3
    w.params.controls["centre_threshold"].value = 0.0
    w.start_detection()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)


def test_sparkline():
    assert sparkline([3, 2, 1]) == "█▅▁"
    assert sparkline([]) == ""


def test_detect_with_model_file_adds_layers_and_reapplies(widget, tiny_model, qtbot):
    w, viewer = widget
    detect_with(w, tiny_model, qtbot)
    assert w.result is not None, w.runner.status.value
    for name in ("tomo mask", "tomo instances", "tomo centres"):
        assert name in viewer.layers
    points = viewer.layers["tomo centres"]
    assert list(points.features.columns[:3]) == ["score", "volume_A3", "instance_id"]
    np.testing.assert_allclose(points.scale, (10.0, 10.0, 10.0))
    n_before = len(points.data)
    # evaluation against the ground-truth Points layer appears in the widget
    w.truth.value = viewer.layers["truth"]
    assert "F1" in w.evaluation.value
    # the radius is estimated per particle unless typed, and the dock says which
    if len(points.data):
        median = float(np.median(points.features["radius_A"]))
        assert f"median {median:.0f} Å in this run" in w.radius_note.value
        assert f"tolerance {median / 2:.0f} Å" in w.evaluation.value
    w.params.controls["particle_radius_A"].value = 80.0
    assert "80 Å, typed" in w.radius_note.value
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)  # re-applied in the worker
    assert "tolerance 40 Å" in w.evaluation.value
    assert np.all(viewer.layers["tomo centres"].features["radius_A"] == 80.0)
    assert max(len(line) for line in w.evaluation.value.splitlines()) < 60  # does not widen the dock
    # thresholds re-apply from the kept maps (no network) in the worker; only the last of a
    # quick series of changes is computed, and the same layers are updated
    maps, centres = w.result.prob_maps, viewer.layers["tomo centres"]
    w.params.controls["centre_threshold"].value = 0.9
    assert w.runner.running  # the GUI thread did not compute it
    w.params.controls["centre_threshold"].value = 1.0
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert w.result.prob_maps is maps and w.result.params["centre_threshold"] == 1.0
    assert viewer.layers["tomo centres"] is centres
    assert len(centres.data) <= n_before
    assert len(centres.data) == 0


def test_detection_on_a_tomogram_without_voxel_size_is_refused_until_it_is_set(widget, tiny_model, qtbot, monkeypatch):
    """A tomogram layer in pixels (header voxel size 0): the dock refuses with a notification instead of running
    the detector on the model's voxel size (1421 nonsense picks on the real microtubule); once 'Set voxel size'
    is pressed in the Tomogram dock it runs, and the results lie on the tomogram."""
    import tomolens._widgets.detect as detect_module
    from tomolens._widgets.tomogram import TomogramWidget

    w, viewer = widget
    pixels = viewer.add_image(viewer.layers["tomo"].data, name="pixels")  # scale 1, units pixel
    w.reset_choices()
    w.image.value = pixels
    said = []
    monkeypatch.setattr(detect_module, "show_warning", said.append)
    detect_with(w, tiny_model, qtbot)
    assert w.result is None and "pixels mask" not in viewer.layers
    assert len(said) == 1 and "The voxel size of 'pixels' is unknown" in said[0] and "Set voxel size" in said[0]
    tomogram_dock = TomogramWidget(viewer)
    tomogram_dock.reset_choices()
    tomogram_dock.layer_picker.value = pixels
    tomogram_dock.voxel_size.value = 10.0
    tomogram_dock.set_voxel_size()
    detect_with(w, tiny_model, qtbot)
    assert w.result is not None and w.result.voxel_size_A == 10.0, w.runner.status.value
    for suffix in ("mask", "instances", "centres"):
        np.testing.assert_allclose(viewer.layers[f"pixels {suffix}"].scale, pixels.scale)
    qtbot.waitUntil(lambda: not tomogram_dock.contrast_runner.running, timeout=20000)


def test_cancel_leaves_no_partial_layers(widget, tiny_model, qtbot):
    w, viewer = widget
    w.model_choice.value = FROM_FILE
    w.model_file.value = str(tiny_model)
    w.params.controls["batch_size"].value = 1
    w.params.controls["patch"].value = 16
    w.params.controls["overlap"].value = 0.75
    n_layers = len(viewer.layers)
    w.start_detection()
    qtbot.waitUntil(lambda: w.runner.last_progress is not None, timeout=30000)
    w.runner.cancel()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=30000)
    assert w.runner.status.value == "Cancelled"
    assert len(viewer.layers) == n_layers and w.result is None


def test_train_action_shows_loss_and_selects_model(widget, qtbot, tmp_path):
    w, viewer = widget
    w.train_labels.value = viewer.layers["truth labels"]
    w.train_params.set_values({"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "base_channels": 8})
    w.train_out.value = str(tmp_path / "mine.pt")
    t0 = time.monotonic()
    w.start_training()
    qtbot.waitUntil(lambda: not w.train_runner.running, timeout=120000)
    assert (tmp_path / "mine.pt").is_file() and (tmp_path / "mine.json").is_file(), w.train_runner.status.value
    assert "epoch 2" in w.loss_text.value and "val" in w.loss_text.value
    assert w.model_choice.value == FROM_FILE and str(w.model_file.value).endswith("mine.pt")
    assert time.monotonic() - t0 < 120


def test_shipped_model_on_the_sample_through_the_viewer(make_napari_viewer, qtbot):
    torch.set_num_threads(1)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-tomolens", "crowded")
    w = DetectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.reset_choices()
    assert w.model_choice.value == "detect_default"
    w.image.value = viewer.layers["sample tomogram"]
    w.start_detection()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120000)
    assert w.result is not None, w.runner.status.value
    points = viewer.layers["sample tomogram centres"]
    labels = viewer.layers["sample tomogram instances"]
    assert labels.data.shape == viewer.layers["sample tomogram"].data.shape
    assert len(points.data) == labels.data.max() > 0
    np.testing.assert_allclose(points.scale, (10.0, 10.0, 10.0))
    w.truth.value = viewer.layers["sample particles"]
    assert "F1" in w.evaluation.value


def test_save_model_field_shows_its_whole_path(widget):
    w, _ = widget
    line = w.train_out.line_edit.native
    text = line.text()
    assert text.endswith("tomolens_detect_user.pt")
    assert line.minimumWidth() >= line.fontMetrics().horizontalAdvance(text)
    w.train_out.value = "/data/projects/cryo/tomograms/run_2026/models/detector_after_two_rounds.pt"
    assert line.minimumWidth() == 460  # capped; the end of the path (the file name) shows
    assert line.cursorPosition() == len(line.text())


def test_train_labels_default_to_instance_labels_not_the_mask(make_napari_viewer):
    viewer = make_napari_viewer()
    w = DetectWidget(viewer)
    viewer.window.add_dock_widget(w)
    scale = {"scale": (10.0, 10.0, 10.0)}
    viewer.add_image(np.zeros((8, 16, 16), np.float32), name="tomo", **scale)
    # a detection adds its mask before its instances; the widget is already docked
    viewer.add_labels(np.zeros((8, 16, 16), np.uint8), name="tomo mask", **scale)
    viewer.add_labels(np.zeros((8, 16, 16), np.uint16), name="tomo instances", **scale)
    assert w.train_labels.value is viewer.layers["tomo instances"]
    assert [name for name, _ in w._instance_labels_first()] == ["tomo instances", "tomo mask"]
    # a choice made by hand stays when layers change
    w.train_labels.value = viewer.layers["tomo mask"]
    viewer.add_labels(np.zeros((8, 16, 16), np.uint16), name="more instances", **scale)
    assert w.train_labels.value is viewer.layers["tomo mask"]


def test_training_on_a_mask_is_refused_with_a_message(widget, monkeypatch):
    import tomolens._widgets.detect as module

    w, viewer = widget
    warnings = []
    monkeypatch.setattr(module, "show_warning", warnings.append)
    mask = viewer.add_labels(
        (viewer.layers["truth labels"].data > 0).astype(np.uint8), name="tomo mask", scale=(10.0, 10.0, 10.0)
    )
    w.train_labels.value = mask
    w.start_training()
    assert not w.train_runner.running
    assert len(warnings) == 1 and "training needs instance labels" in warnings[0]


def test_evaluation_shows_a_precision_recall_curve_and_the_threshold(widget, tiny_model, qtbot):
    w, viewer = widget
    detect_with(w, tiny_model, qtbot)
    assert w.pr_curve is None and not w.pr_plot.isVisibleTo(w.native)
    w.truth.value = viewer.layers["truth"]
    curve = w.pr_curve
    n = len(viewer.layers["tomo centres"].data)
    assert len(curve.thresholds) == n and w.pr_plot.isVisibleTo(w.native)
    assert "min score 0.00:" in w.evaluation.value and "best F1" in w.evaluation.value
    assert np.all(np.diff(curve.recall) >= 0)  # recall never falls as the threshold is lowered
    w.truth.value = None
    assert w.pr_curve is None and not w.pr_plot.isVisibleTo(w.native)


def _train_from_truth_points(w, viewer, tmp_path, steps: int, out: str) -> None:
    """Start training from the 'truth' Points layer (radius 40 Å), fine-tuning a small untrained detector."""
    from detect_helpers import save_small_detector
    from tomolens._widgets.detect import FROM_POINTS

    w.model_choice.value = FROM_FILE
    w.model_file.value = save_small_detector(tmp_path / "start.pt")
    w.train_source.value = FROM_POINTS
    w.reset_choices()
    w.points_box.clicks.value = [viewer.layers["truth"]]
    w.points_box.radius.value = 40.0
    w.points_box.steps.value = steps
    w.train_out.value = str(tmp_path / out)
    w.start_training()


def test_train_from_points_layer_then_detect_with_the_new_model(widget, qtbot, tmp_path):
    from tomolens.models.card import read_card

    w, viewer = widget
    _train_from_truth_points(w, viewer, tmp_path, 20, "clicked.pt")
    assert not w.points_box.native.isHidden() and w.train_labels.native.isHidden()
    qtbot.waitUntil(lambda: not w.train_runner.running, timeout=120000)
    assert (tmp_path / "clicked.pt").is_file(), w.train_runner.status.value
    assert "step 20" in w.loss_text.value and "held-out F1" in w.loss_text.value
    assert "radius 40 Å (typed)" in w.loss_text.value
    assert w.model_choice.value == FROM_FILE and str(w.model_file.value).endswith("clicked.pt")
    card = read_card(tmp_path / "clicked.json")
    assert card.extra["points_training"]["start_from"]["name"] == "start"
    assert card.extra["points_training"]["clicks_source"] == "napari Points layer 'truth'"
    assert card.extra["points_training"]["kinds"] == {"": {"clicks": 10, "source": "napari Points layer 'truth'"}}
    w.start_detection()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert "tomo centres" in viewer.layers and w.result.params["model"] == "clicked"


def _refused(w, monkeypatch, tmp_path) -> str:
    """Start training from points; assert it did not start nor write; the one warning shown."""
    from tomolens._widgets import detect as module

    warnings = []
    monkeypatch.setattr(module, "show_warning", warnings.append)
    w.train_out.value = str(tmp_path / "never.pt")
    w.start_training()
    assert not w.train_runner.running and not (tmp_path / "never.pt").exists()
    assert len(warnings) == 1
    return warnings[0]


def _choose_points(w, viewer, *names) -> None:
    from tomolens._widgets.detect import FROM_POINTS

    w.reset_choices()
    w.train_source.value = FROM_POINTS
    w.points_box.clicks.value = [viewer.layers[n] for n in names]


def test_points_without_voxel_size_are_refused(widget, monkeypatch, tmp_path):
    w, viewer = widget
    viewer.add_points(np.array([[5, 5, 5]] * 6, float), name="unscaled")
    _choose_points(w, viewer, "unscaled")
    message = _refused(w, monkeypatch, tmp_path)
    assert "'unscaled' has no voxel size" in message


def test_two_points_layers_of_two_kinds_train_with_their_own_radii(widget, qtbot, tmp_path):
    from detect_helpers import save_small_detector
    from tomolens.models.card import read_card

    w, viewer = widget
    truth = viewer.layers["truth"]
    scale = {"scale": tuple(truth.scale), "units": ("angstrom",) * 3}
    viewer.add_points(truth.data[:6], name="ribosome", **scale)
    viewer.add_points(truth.data[6:], name="proteasome", **scale)
    w.model_choice.value = FROM_FILE
    w.model_file.value = save_small_detector(tmp_path / "start.pt")
    _choose_points(w, viewer, "ribosome", "proteasome")
    w.points_box.radius.value = 40.0
    w.points_box.kind_radii.value = "proteasome=30"
    w.points_box.steps.value = 10
    w.train_out.value = str(tmp_path / "kinds.pt")
    w.start_training()
    qtbot.waitUntil(lambda: not w.train_runner.running, timeout=120000)
    assert (tmp_path / "kinds.pt").is_file(), w.train_runner.status.value
    info = read_card(tmp_path / "kinds.json").extra["points_training"]
    assert info["radius_A"] == {"ribosome": 40.0, "proteasome": 30.0}
    assert info["radius_source"] == {"ribosome": "typed", "proteasome": "typed"}
    assert info["kinds"] == {
        "ribosome": {"clicks": 6, "source": "napari Points layer 'ribosome'"},
        "proteasome": {"clicks": 4, "source": "napari Points layer 'proteasome'"},
    }
    assert info["clicks_source"] == "napari Points layers 'ribosome', 'proteasome'"
    assert "ribosome 40 Å (typed), proteasome 30 Å (typed)" in w.loss_text.value


def test_kinds_come_from_a_class_feature_else_the_layer_name(widget):
    w, viewer = widget
    data = viewer.layers["truth"].data
    scale = {"scale": (10.0, 10.0, 10.0), "units": ("angstrom",) * 3}
    viewer.add_points(data[:5], name="mixed", features={"class": ["a", "b", "a", "b", "a"]}, **scale)
    viewer.add_points(data[5:7], name="ribosome", **scale)
    _choose_points(w, viewer, "mixed", "ribosome")
    w.points_box.kind_radii.value = "b=30"
    inputs = w.points_box.job_inputs(viewer.layers["tomo"])
    assert inputs["kinds"] == ["a", "b", "a", "b", "a", "ribosome", "ribosome"]
    np.testing.assert_allclose(inputs["centres_zyx"], data[:7])
    assert inputs["radius_A"] == {"a": None, "b": 30.0, "ribosome": None}
    assert inputs["kind_sources"] == {
        "a": "napari Points layer 'mixed'",
        "b": "napari Points layer 'mixed'",
        "ribosome": "napari Points layer 'ribosome'",
    }
    _choose_points(w, viewer, "mixed")
    w.points_box.kind_radii.value = ""
    w.points_box.radius.value = 50.0
    inputs = w.points_box.job_inputs(viewer.layers["tomo"])
    assert inputs["kinds"] == ["a", "b", "a", "b", "a"] and inputs["radius_A"] == 50.0


def test_the_only_points_layer_is_used_when_none_is_chosen(widget):
    w, viewer = widget
    _choose_points(w, viewer)  # nothing selected, one Points layer ("truth"): it is the one
    inputs = w.points_box.job_inputs(viewer.layers["tomo"])
    np.testing.assert_allclose(inputs["centres_zyx"], viewer.layers["truth"].data)
    viewer.add_points(viewer.layers["truth"].data[:5], name="more", scale=(10.0, 10.0, 10.0), units=("angstrom",) * 3)
    _choose_points(w, viewer)  # two and none selected: the user must choose
    with pytest.raises(ValueError, match="at least one Points layer"):
        w.points_box.job_inputs(viewer.layers["tomo"])


def test_points_layers_of_different_scales_are_refused(widget, monkeypatch, tmp_path):
    w, viewer = widget
    data = viewer.layers["truth"].data
    viewer.add_points(data[:5], name="fine", scale=(10.0, 10.0, 10.0), units=("angstrom",) * 3)
    viewer.add_points(data[5:] / 2, name="coarse", scale=(20.0, 20.0, 20.0), units=("angstrom",) * 3)
    _choose_points(w, viewer, "fine", "coarse")
    message = _refused(w, monkeypatch, tmp_path)
    assert "scales differ" in message and "'fine' (10.0, 10.0, 10.0)" in message and "'coarse'" in message


def test_points_layer_problems_name_the_layer(widget, monkeypatch, tmp_path):
    w, viewer = widget
    scale = {"scale": (10.0, 10.0, 10.0), "units": ("angstrom",) * 3}
    viewer.add_points(np.array([[5, 5, 5], [6, 6, 300]], float), name="far", **scale)
    viewer.add_points(np.array([[5, 5, 5], [9, 9, 9]], float), name="few", **scale)
    _choose_points(w, viewer, "far")
    assert "Points layer 'far': 1 of the 2 points lie outside the tomogram" in _refused(w, monkeypatch, tmp_path)
    _choose_points(w, viewer, "few")
    message = _refused(w, monkeypatch, tmp_path)
    assert "at least 5 clicked particles; napari Points layer 'few' holds 2" in message
    w.points_box.clicks.value = [viewer.layers["few"], viewer.layers["truth"]]
    w.points_box.kind_radii.value = "ribosome=40"
    message = _refused(w, monkeypatch, tmp_path)
    assert "'ribosome', which no chosen layer holds" in message and "'few'" in message and "'truth'" in message


def test_cancel_points_training_keeps_and_selects_the_best_so_far(widget, qtbot, tmp_path):
    from tomolens.models.card import read_card

    w, viewer = widget
    _train_from_truth_points(w, viewer, tmp_path, 5000, "stopped.pt")
    qtbot.waitUntil(lambda: "step 10" in w.loss_text.value, timeout=120000)
    w.train_runner.cancel()
    qtbot.waitUntil(lambda: not w.train_runner.running, timeout=60000)
    assert w.train_runner.status.value == "Cancelled"
    card = read_card(tmp_path / "stopped.json")
    assert card.extra["points_training"]["cancelled"] is True and card.extra["points_training"]["steps_run"] >= 10
    assert str(w.model_file.value).endswith("stopped.pt")
