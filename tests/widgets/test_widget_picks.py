"""The Picks and copick widget: one tomogram's rows of a multi-tomogram file; copick open and save."""

import numpy as np
import pandas as pd
import pytest
import starfile

from tomolens._widgets.picks import ONE_TOMOGRAM, PER_TOMOGRAM, PicksWidget
from tomolens.io.copick_io import (
    CopickObject,
    create_project,
    open_project,
    read_copick_picks,
    read_copick_segmentations,
)


@pytest.fixture
def widget_and_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = PicksWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return widget, viewer


def _star(tmp_path):
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_01"] * 3 + ["TS_02"] * 2,
            "rlnCoordinateX": np.arange(5.0),
            "rlnCoordinateY": np.arange(5.0),
            "rlnCoordinateZ": np.arange(5.0),
            "rlnAngleRot": np.zeros(5),
            "rlnAngleTilt": np.full(5, 90.0),
            "rlnAnglePsi": np.zeros(5),
        }
    )
    starfile.write({"particles": particles}, tmp_path / "run_data.star")
    return tmp_path / "run_data.star"


def test_open_only_the_chosen_tomograms_rows(widget_and_viewer, tmp_path):
    widget, viewer = widget_and_viewer
    star = _star(tmp_path)
    tomo = viewer.add_image(np.zeros((8, 8, 8), np.float32), name="TS_02")
    widget.reset_choices()
    widget.pick_file.value = star
    widget.mode.value = ONE_TOMOGRAM
    widget.tomogram.value = tomo
    widget.open_picks()
    assert [layer.name for layer in viewer.layers] == ["TS_02", "run_data", "run_data orientation"]
    np.testing.assert_allclose(viewer.layers["run_data"].data[:, 2], [3.0, 4.0])
    widget.mode.value = PER_TOMOGRAM
    widget.open_picks()
    assert {"run_data TS_01", "run_data TS_02"} <= {layer.name for layer in viewer.layers}


def test_several_tomograms_and_no_tomogram_open_is_a_message_not_a_layer(widget_and_viewer, tmp_path):
    widget, viewer = widget_and_viewer
    widget.pick_file.value = _star(tmp_path)
    widget.mode.value = ONE_TOMOGRAM
    widget.reset_choices()
    widget.open_picks()  # no tomogram layer: an error notification
    assert len(viewer.layers) == 0


def test_copick_open_run_and_save_picks_and_labels(widget_and_viewer, tmp_path):
    widget, viewer = widget_and_viewer
    cfg = create_project(
        tmp_path / "copick_config.json",
        [CopickObject("ribosome", 1, 100.0, True), CopickObject("proteasome", 2, 80.0, True)],
    )
    open_project(cfg).new_run("TS_01").new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(
        np.zeros((8, 16, 16), np.float32)
    )
    widget.config.value = cfg
    assert widget.object.choices == ("ribosome", "proteasome") and widget.run.choices == ("TS_01",)
    assert widget.spacing.choices == (10.0,)
    widget.open_copick_run()
    assert [layer.name for layer in viewer.layers] == ["TS_01 wbp"]
    points = viewer.add_points([[1.0, 2.0, 3.0]], scale=(10.0,) * 3, units=("angstrom",) * 3, name="mine")
    viewer.layers.selection.active = points
    widget.object.value = "proteasome"
    widget.user.value = "alice"
    widget.save_copick_picks()
    [table] = read_copick_picks(open_project(cfg), "TS_01", 10.0, user_id="alice").values()
    np.testing.assert_allclose(table.coords_zyx, [[1.0, 2.0, 3.0]])
    assert table.features["object"][0] == "proteasome"
    labels = viewer.add_labels(
        np.ones((8, 16, 16), np.uint8), scale=(10.0,) * 3, units=("angstrom",) * 3, name="membranes"
    )
    viewer.layers.selection.active = labels
    widget.save_copick_segmentation()
    [(name, user, _, seg)] = read_copick_segmentations(open_project(cfg), "TS_01", 10.0)
    assert (name, user) == ("membranes", "alice") and int(seg.data.sum().compute()) == 8 * 16 * 16


def test_relion5_centred_picks_use_the_chosen_tomogram(widget_and_viewer, tmp_path):
    widget, viewer = widget_and_viewer
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1", "TS_2"],
            "rlnCenteredCoordinateXAngst": [100.0, 0.0],
            "rlnCenteredCoordinateYAngst": [0.0, 0.0],
            "rlnCenteredCoordinateZAngst": [-50.0, 0.0],
        }
    )
    starfile.write({"particles": particles}, tmp_path / "centred.star")
    tomo = viewer.add_image(
        np.zeros((100, 200, 200), np.float32), name="TS_1", scale=(10.0,) * 3, units=("angstrom",) * 3
    )
    widget.reset_choices()
    widget.pick_file.value = tmp_path / "centred.star"
    widget.mode.value = ONE_TOMOGRAM
    widget.tomogram.value = tomo
    widget.open_picks()
    picks = viewer.layers["centred"]
    np.testing.assert_allclose(picks.data, [[45.0, 100.0, 110.0]])  # Å / 10 + size / 2
    np.testing.assert_allclose(picks.scale, (10.0,) * 3)
