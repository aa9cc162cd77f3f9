"""Classify and Subdivide dock widgets: features, colours, confidence filter, plot↔layer link."""

import numpy as np
import pytest
from classify_phantoms import labelled_tomogram, phantom_set

from tomolens.jobs import run_job

KINDS = ["sphere", "rod", "ring"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A small classifier trained once for these tests (box 16, 10 Å/voxel), under pytest's temporary folder."""
    import torch

    from tomolens.classify.train import TrainConfig, save_classifier, train_classifier

    torch.set_num_threads(1)
    xtr, ytr = phantom_set(KINDS, 20, 16, seed=11)
    xva, yva = phantom_set(KINDS, 5, 16, seed=12)
    cfg = TrainConfig(epochs=5, patience=5, batch_size=8, learning_rate=3e-3, device="cpu")
    result = run_job(train_classifier(xtr, ytr, xva, yva, KINDS, cfg))
    path = tmp_path_factory.mktemp("classify_model") / "tiny.pt"
    save_classifier(result, str(path), KINDS, 10.0, "test fixture", "phantoms")
    return str(path)


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer()
    tomo, centres, names = labelled_tomogram(KINDS, 8, 16, seed=21)
    image = viewer.add_image(tomo, scale=(10, 10, 10), units=("angstrom",) * 3, name="tomo")
    points = viewer.add_points(centres, scale=(10, 10, 10), units=("angstrom",) * 3, name="picks")
    return viewer, image, points, names


def classify_in_widget(viewer, image, points, model: str, qtbot):
    """A Classify dock on ``viewer`` that has classified ``points`` on ``image`` with ``model`` (on the CPU)."""
    from tomolens._widgets.classify import ClassifyWidget

    widget = ClassifyWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    widget.params.controls["model"].value = model
    widget.params.controls["device"].value = "cpu"
    widget.start_classification()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    return widget


def test_classify_widget_features_colours_and_confidence_filter(scene, qtbot, tiny_model):

    viewer, image, points, names = scene
    widget = classify_in_widget(viewer, image, points, tiny_model, qtbot)
    f = points.features
    assert {"class", "confidence", "prob_sphere", "prob_rod", "prob_ring"} <= set(f.columns)
    assert np.mean(f["class"].astype(str).to_numpy() == names) >= 0.8
    # coloured by class: points of one class share a colour, different classes differ
    colours = {tuple(np.round(c, 3)) for c in points.face_color}
    assert len(colours) == len(set(f["class"].astype(str)))
    threshold = float(np.median(f["confidence"]))
    widget.min_confidence.value = threshold
    np.testing.assert_array_equal(points.shown, f["confidence"].to_numpy() >= threshold)
    assert 0 < points.shown.sum() < len(points.data) or np.all(f["confidence"] == threshold)


def test_classification_is_shown_over_two_event_loop_turns(scene, tiny_model):
    from tomolens._widgets.classify import ClassifyWidget, _snapshot
    from tomolens.classify.predict import classify_points

    viewer, image, points, names = scene
    widget = ClassifyWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    tomo, coords, voxel = _snapshot(image, points)
    result = run_job(classify_points(tomo, coords, tiny_model, voxel, device="cpu"))
    widget.min_confidence.value = 0.99  # no confidence feature yet: nothing is hidden
    steps = widget.show_classification(points, result)  # what the runner advances, one step per turn
    next(steps)  # first turn: the features and colours on the layer
    assert {"class", "confidence"} <= set(points.features.columns) and widget.summary.value == ""
    assert points.shown.all()
    assert list(steps) == []  # second turn: the summary and the confidence filter
    assert f"{len(result.indices)} classified" in widget.summary.value
    np.testing.assert_array_equal(points.shown, points.features["confidence"].to_numpy() >= 0.99)


def test_classify_widget_recolours_picks_coloured_by_score(make_napari_viewer, qtbot, tiny_model):
    """The Detect dock's centres come coloured by their score (colormap mode): classifying them recolours them
    by class instead of failing with 'could not show the result'."""
    import pandas as pd

    viewer = make_napari_viewer()
    tomo, centres, _ = labelled_tomogram(KINDS, 8, 16, seed=21)
    image = viewer.add_image(tomo, scale=(10, 10, 10), units=("angstrom",) * 3, name="tomo")
    score = pd.DataFrame({"score": np.linspace(0.1, 0.9, len(centres))})
    points = viewer.add_points(
        centres, scale=(10, 10, 10), features=score, face_color="score", face_colormap="viridis", name="centres"
    )
    widget = classify_in_widget(viewer, image, points, tiny_model, qtbot)
    assert "classified" in widget.summary.value
    assert str(points.face_color_mode) == "cycle"
    classes = points.features["class"].astype(str).to_numpy()
    colours = [tuple(np.round(c, 3)) for c in points.face_color]
    assert len(set(colours)) == len(set(classes))
    for name in set(classes):  # one colour per class
        assert len({c for c, k in zip(colours, classes, strict=True) if k == name}) == 1
    np.testing.assert_allclose(points.features["score"], score["score"])  # the detector's features are kept


def test_classify_widget_colours_unknown_points_grey_and_counts_them(scene, qtbot, tiny_model):
    from napari.utils.colormaps.standardize_color import transform_color

    from tomolens._widgets.classify import UNKNOWN_COLOUR, ClassifyWidget
    from tomolens.classify.unknown import unknown_model_from_card
    from tomolens.models.card import read_card

    viewer, image, points, _ = scene
    widget = ClassifyWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    widget.params.controls["model"].value = tiny_model
    widget.params.controls["device"].value = "cpu"
    widget.params.controls["unknown_scale"].value = 0.0  # off: distances only
    widget.start_classification()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    dist = points.features["ood_distance"].to_numpy()
    assert "unknown" not in set(points.features["class"].astype(str)) and "0 unknown" in widget.summary.value
    assert points.metadata["tomolens_classify"]["unknown"]["available"]
    # a scale that puts the threshold at the median distance: about half the particles become unknown
    threshold = unknown_model_from_card(read_card(tiny_model))[0].threshold
    widget.params.controls["unknown_scale"].value = round(float(np.median(dist)) / threshold, 2)
    scale = widget.params.values()["unknown_scale"]
    widget.start_classification()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    unknown = points.features["class"].astype(str).to_numpy() == "unknown"
    np.testing.assert_array_equal(unknown, dist > threshold * scale)
    assert 0 < unknown.sum() < len(unknown)
    grey = np.all(np.isclose(points.face_color, transform_color(UNKNOWN_COLOUR)[0]), axis=1)
    np.testing.assert_array_equal(grey, unknown)
    assert f"{unknown.sum()} unknown" in widget.summary.value


def test_classify_widget_trains_from_labelled_points(scene, qtbot, tmp_path):
    from tomolens._widgets.classify import ClassifyWidget
    from tomolens.models.card import read_card

    viewer, image, points, names = scene
    points.features = {"class": names}
    widget = ClassifyWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    widget.train_params.controls["epochs"].value = 2
    widget.train_params.controls["batch_size"].value = 8
    widget.train_params.controls["classify_box_A"].value = 160.0
    widget.train_out.value = str(tmp_path / "trained.pt")
    widget.start_training()
    qtbot.waitUntil(lambda: not widget.train_runner.running, timeout=60000)
    assert len(widget.history) == 2 and {"loss", "val_loss", "val_acc"} <= set(widget.history[-1])
    assert "val acc" in widget.train_log.value and "test accuracy" in widget.train_log.value
    # 24 particles leave too few validation ones to calibrate unknown detection: the log says so
    assert "calibration needs at least 10 validation particles" in widget.train_log.value
    assert len(widget.loss_plot.series["loss"]) == len(widget.loss_plot.series["val_loss"]) == 2  # the live curve
    card = read_card(tmp_path / "trained.json")
    assert card.classes == sorted(KINDS) and card.metrics["test_n"] > 0
    assert widget.params.controls["model"].value == str(tmp_path / "trained.pt")


def test_subdivide_widget_plot_and_layer_selection_are_linked(scene, qtbot, tiny_model):
    from tomolens._widgets.classify import SubdivideWidget

    viewer, image, points, names = scene
    widget = SubdivideWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    assert widget.params.controls["features"].value == "classifier"  # the default
    widget.params.controls["features"].value = "classifier"
    widget.params.controls["model"].value = tiny_model
    widget.params.controls["device"].value = "cpu"
    widget.params.controls["n_clusters"].value = 3
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    clusters = points.features["cluster"].to_numpy()
    assert sorted(set(clusters)) == [0, 1, 2]
    # the averages are a gallery in the dock, not layers, until asked for
    assert not [layer for layer in viewer.layers if layer.name.startswith("picks cluster")]
    assert sorted(widget.gallery.tiles) == [0, 1, 2]
    n1 = int(np.sum(clusters == 1))
    assert widget.gallery.tiles[1].text() == f"cluster 1 ({n1})" and not widget.gallery.tiles[1].icon().isNull()
    widget.gallery.tiles[1].click()  # a tile selects its cluster's particles, and the plot follows
    assert set(points.selected_data) == set(np.flatnonzero(clusters == 1).tolist())
    assert set(widget.plot.selected_indices()) == set(points.selected_data)
    points.selected_data = set()
    widget.averages_button.native.click()
    averages = [layer for layer in viewer.layers if layer.name.startswith("picks cluster")]
    assert len(averages) == 3 and averages[0].data.shape == (16, 16, 16)
    widget.averages_button.native.click()  # again: the same layers, updated in place (no remove and re-add)
    again = [layer for layer in viewer.layers if layer.name.startswith("picks cluster")]
    assert len(again) == 3 and all(a is b for a, b in zip(again, averages))
    assert widget.plot.n_points == len(points.data)

    # plot → layer: a rubber band around the dots of particles 0 and 1 selects exactly them
    (x0, y0), (x1, y1) = widget.plot.scene_position(0), widget.plot.scene_position(1)
    others = [widget.plot.scene_position(i) for i in range(2, len(points.data))]
    inside = [
        p for p in others if min(x0, x1) - 4 <= p[0] <= max(x0, x1) + 4 and min(y0, y1) - 4 <= p[1] <= max(y0, y1) + 4
    ]
    widget.plot.select_rect(min(x0, x1) - 1, min(y0, y1) - 1, max(x0, x1) + 1, max(y0, y1) + 1)
    assert {0, 1} <= set(points.selected_data)
    assert len(points.selected_data) == 2 + len(inside) or len(points.selected_data) >= 2
    assert set(points.selected_data) == set(widget.plot.selected_indices())

    # layer → plot
    points.selected_data = {3, 5, 7}
    assert list(widget.plot.selected_indices()) == [3, 5, 7]
    points.selected_data = set()
    assert len(widget.plot.selected_indices()) == 0


def test_gallery_thumbnails_show_the_central_slice_and_the_projection():
    from tomolens._widgets.cluster_gallery import thumbnail_pair, to_uint8

    cube = np.zeros((8, 10, 12))
    cube[4, 2:5, 3:6] = 1.0  # only in the central slice
    cube[0, 7, 9] = 5.0  # off-centre: only in the projection
    pair = thumbnail_pair(cube)
    assert pair.shape == (10, 12 + 2 + 12) and pair.dtype == np.uint8
    central, projection = pair[:, :12], pair[:, 14:]
    assert central[3, 4] == 255 and central[7, 9] == 0
    assert projection[7, 9] == 255
    assert np.all(to_uint8(np.full((3, 3), 2.0)) == 0)
    with pytest.raises(ValueError, match="3D"):
        thumbnail_pair(np.zeros((4, 4)))


def test_subdivide_after_classify_colours_the_layer_like_the_plot(scene, qtbot, tiny_model):
    """Subdividing particles already coloured by class gives each point its cluster's colour in the plot, not a
    colour left over from the class cycle."""
    from napari.utils.colormaps.standardize_color import transform_color

    from tomolens._widgets.classify import SubdivideWidget, cluster_colour

    viewer, image, points, _ = scene
    classify_in_widget(viewer, image, points, tiny_model, qtbot)
    widget = SubdivideWidget(viewer)
    widget.image_picker.value, widget.points_picker.value = image, points
    widget.params.set_values({"model": tiny_model, "device": "cpu", "n_clusters": 3})
    widget.start()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=60000)
    clusters = points.features["cluster"].to_numpy()
    expected = transform_color([cluster_colour(int(c)) for c in clusters])
    np.testing.assert_allclose(points.face_color, expected, atol=1e-6)
    assert len(set(clusters)) == 3


def test_docks_refuse_a_tomogram_without_voxel_size(make_napari_viewer, monkeypatch):
    """A tomogram in pixels (header voxel size 0): Classify, Subdivide and Pick by example refuse with a
    notification naming 'Set voxel size' instead of running the model at its own voxel size."""
    import tomolens._widgets.classify as classify_module
    import tomolens._widgets.pick_example as pick_module
    from tomolens._widgets.classify import ClassifyWidget, SubdivideWidget
    from tomolens._widgets.pick_example import PickByExampleWidget

    viewer = make_napari_viewer()
    tomo, centres, _ = labelled_tomogram(KINDS, 2, 16, seed=21)
    image, points = viewer.add_image(tomo, name="pixels"), viewer.add_points(centres, name="picks")
    said = []
    monkeypatch.setattr(classify_module, "show_warning", said.append)
    monkeypatch.setattr(pick_module, "show_warning", said.append)
    classify, subdivide = ClassifyWidget(viewer), SubdivideWidget(viewer)
    pick = PickByExampleWidget(viewer)
    for widget, start in ((classify, classify.start_classification), (subdivide, subdivide.start)):
        widget.image_picker.value, widget.points_picker.value = image, points
        start()
    pick.image_picker.value, pick.examples_picker.value = image, points
    pick.start()
    assert not any(w.runner.running for w in (classify, subdivide, pick))
    assert len(said) == 3 and all("The voxel size of 'pixels' is unknown" in m for m in said), said
    assert "Set voxel size" in said[0] and list(points.features.columns) == []
