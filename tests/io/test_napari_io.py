"""Reader and writers through napari's own plugin machinery."""

import numpy as np
import pandas as pd
import pytest
import starfile

from tomolens.io.mrc import read_mrc, write_mrc


def test_open_mrc_gives_layer_scaled_in_angstrom(make_napari_viewer, tmp_path):
    vol = np.random.default_rng(0).normal(size=(12, 20, 30)).astype(np.float32)
    write_mrc(tmp_path / "t.mrc", vol, voxel_size_A=(9.0, 8.0, 7.0))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "t.mrc"), plugin="napari-tomolens")
    assert layer.data.shape == (12, 20, 30)
    np.testing.assert_allclose(layer.scale, (9.0, 8.0, 7.0))
    assert [str(u) for u in layer.units] == ["angstrom"] * 3
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    lo, hi = layer.contrast_limits
    assert lo < 0 < hi


def test_painted_labels_saved_as_mrc_reopen_identically(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros((10, 16, 16), np.uint8)
    layer = viewer.add_labels(labels, scale=(10.0, 10.0, 10.0), units=("angstrom",) * 3, name="painted")
    layer.paint((5, 8, 8), 3)  # a brush stroke, as a user paints
    layer.save(str(tmp_path / "painted.mrc"), plugin="napari-tomolens")
    vol = read_mrc(tmp_path / "painted.mrc")
    assert vol.is_labels and vol.voxel_size_A == pytest.approx((10.0, 10.0, 10.0))
    [back] = viewer.open(str(tmp_path / "painted.mrc"), plugin="napari-tomolens")
    assert back._type_string == "labels"
    np.testing.assert_array_equal(back.data, layer.data)
    assert (back.data == 3).sum() > 0
    np.testing.assert_allclose(back.scale, layer.scale)


def test_image_layer_saved_as_mrc_float32(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    layer = viewer.add_image(data, scale=(5.0, 5.0, 5.0), units=("angstrom",) * 3)
    layer.save(str(tmp_path / "img.mrc"), plugin="napari-tomolens")
    vol = read_mrc(tmp_path / "img.mrc")
    assert vol.data.dtype == np.float32 and vol.voxel_size_A == pytest.approx((5.0,) * 3)
    np.testing.assert_array_equal(vol.data, data)


def test_points_saved_as_star_reopen_with_features(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    coords = np.array([[1.0, 2.0, 3.0], [10.5, 20.25, 30.0]])
    features = pd.DataFrame(
        {"score": [0.9, 0.4], "class": [1, 2], "rot": [10.0, 20.0], "tilt": [30.0, 40.0], "psi": [50.0, 60.0]}
    )
    layer = viewer.add_points(coords, features=features, scale=(10.0,) * 3, units=("angstrom",) * 3)
    layer.save(str(tmp_path / "picks.star"), plugin="napari-tomolens")
    df = starfile.read(tmp_path / "picks.star")
    np.testing.assert_allclose(df["rlnCoordinateX"], [3.0, 30.0])
    np.testing.assert_allclose(df["rlnAngleTilt"], [30.0, 40.0])
    np.testing.assert_allclose(df["rlnAutopickFigureOfMerit"], [0.9, 0.4])
    back, arrows = viewer.open(str(tmp_path / "picks.star"), plugin="napari-tomolens")
    assert arrows._type_string == "vectors" and arrows.name == "picks orientation"
    np.testing.assert_allclose(back.data, coords, atol=1e-5)
    np.testing.assert_allclose(back.scale, (10.0,) * 3)
    for name in features.columns:
        np.testing.assert_allclose(back.features[name].to_numpy(float), features[name].to_numpy(float))


@pytest.mark.parametrize("ext", [".csv", ".txt"])
def test_points_csv_and_txt(make_napari_viewer, tmp_path, ext):
    viewer = make_napari_viewer()
    coords = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    layer = viewer.add_points(coords, features=pd.DataFrame({"score": [0.5, 0.7]}))
    layer.save(str(tmp_path / f"p{ext}"), plugin="napari-tomolens")
    [back] = viewer.open(str(tmp_path / f"p{ext}"), plugin="napari-tomolens")
    np.testing.assert_allclose(back.data, coords, atol=1e-3)
    if ext == ".csv":
        np.testing.assert_allclose(back.features["score"], [0.5, 0.7])


def test_bad_file_gives_clear_error_and_no_layer(make_napari_viewer, tmp_path):
    (tmp_path / "fake.mrc").write_bytes(b"not an mrc" * 200)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="not an MRC file"):
        viewer.open(str(tmp_path / "fake.mrc"), plugin="napari-tomolens")
    assert len(viewer.layers) == 0


def test_stack_opens_as_image_stack(make_napari_viewer, tmp_path):
    stack = np.random.default_rng(0).normal(size=(6, 16, 16)).astype(np.float32)
    write_mrc(tmp_path / "s.mrcs", stack, voxel_size_A=2.5)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "s.mrcs"), plugin="napari-tomolens")
    assert tuple(layer.axis_labels) == ("image", "y", "x")
    np.testing.assert_allclose(layer.scale, (1.0, 2.5, 2.5))


def test_points_coloured_by_class_and_shown_within_a_particle_slab(make_napari_viewer):
    from tomolens._napari.layers import particle_slab_A, points_layer_data, show_particles_in_slab
    from tomolens.io.coords import ParticleTable

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 30, 30), np.float32), scale=(10.0,) * 3, units=("angstrom",) * 3)
    feats = pd.DataFrame(
        {"class_name": ["ring", "barrel", "ring"], "score": [0.2, 0.9, 0.5], "radius_A": [40.0, 60.0, 50.0]}
    )
    table = ParticleTable(np.array([[10.0, 5, 5], [20, 15, 15], [30, 25, 25]]), feats, 10.0)
    data, kwargs, kind = points_layer_data(table, name="picks")
    layer = viewer.add_points(data, **kwargs)
    assert str(layer.projection_mode) == "rescale_linear"
    colours = layer.face_color
    assert np.allclose(colours[0], colours[2]) and not np.allclose(colours[0], colours[1])  # by class name
    data, kwargs, _ = points_layer_data(table, name="scored", color_by="score")
    scored = viewer.add_points(data, **kwargs)
    assert len({tuple(c) for c in np.round(scored.face_color, 3)}) == 3  # a colormap over the floats

    assert particle_slab_A(feats["radius_A"]) == 100.0  # median diameter
    assert particle_slab_A([], default_A=80.0) == 80.0
    show_particles_in_slab(viewer, particle_slab_A(feats["radius_A"]))
    assert viewer.dims.thickness[0] == 100.0
    show_particles_in_slab(viewer, 20.0)  # never narrows what is already wider
    assert viewer.dims.thickness[0] == 100.0


def test_workbench_docks_every_widget_and_shows_the_sample_picks(make_napari_viewer, qtbot):
    from tomolens._widgets.launch import open_workbench
    from tomolens._widgets.tomogram import TomogramWidget

    viewer = make_napari_viewer()
    names = open_workbench(viewer)
    tomogram_widget = next(w for w in viewer.window.dock_widgets.values() if isinstance(w, TomogramWidget))
    qtbot.waitUntil(lambda: not tomogram_widget.contrast_runner.running, timeout=30000)
    assert tomogram_widget.contrast.value.startswith("contrast: dark")  # the raw sample, measured on opening
    assert {"Tomogram", "Simulate", "Detect particles", "Classify", "Subdivide", "Segment"} <= set(names)
    assert len(viewer.window.dock_widgets) >= len(names)
    assert viewer.layers[0].name.startswith("crowded_dark")  # the raw (dark) sample of sample_data/
    particles = viewer.layers["crowded_dark particles"]
    expected = 2 * float(particles.features["radius_A"].median())
    # the picks' slab (one particle diameter), which the tomogram shows as a slab mean, in whole slices
    assert abs(viewer.dims.thickness[0] - expected) <= 5.0
    assert viewer.layers["crowded_dark"].projection_mode == "mean"
    assert tomogram_widget.display_filter.value == "slab mean"
    # every dock's tab title is one word, so the eight tabs stay readable side by side
    from napari._qt.widgets.qt_viewer_dock_widget import QtViewerDockWidget

    titles = {dock.windowTitle() for dock in viewer.window._qt_window.findChildren(QtViewerDockWidget)}
    assert {"Tomogram", "Simulate", "Detect", "Segment", "Classify", "Subdivide", "Picks", "Orient"} <= titles


def test_toggle_orientations_from_a_points_layer(make_napari_viewer):
    from tomolens._napari.orientation_layers import toggle_orientations

    viewer = make_napari_viewer()
    features = pd.DataFrame({"rot": [0.0, 30.0], "tilt": [0.0, 90.0], "psi": [0.0, 0.0], "radius_A": [50.0, 50.0]})
    layer = viewer.add_points(
        [[5.0, 5.0, 5.0], [10.0, 10.0, 10.0]],
        features=features,
        size=10.0,
        scale=(10.0,) * 3,
        units=("angstrom",) * 3,
        name="picks",
    )
    toggle_orientations(layer, viewer)
    arrows = viewer.layers["picks orientation"]
    assert arrows._type_string == "vectors" and arrows.visible
    np.testing.assert_allclose(arrows.data[0, 1], [5.0, 0.0, 0.0])  # tilt 0: along z, half the size
    assert abs(arrows.data[1, 1, 0]) < 1e-9  # tilt 90: in the x-y plane
    np.testing.assert_allclose(arrows.scale, layer.scale)
    toggle_orientations(layer, viewer)
    assert not arrows.visible and len(viewer.layers) == 2
    plain = viewer.add_points([[1.0, 1.0, 1.0]], name="plain")
    toggle_orientations(plain, viewer)  # no angles: a notification, no layer
    assert len(viewer.layers) == 3
