"""OME-Zarr, TIFF, Dynamo, multi-tomogram STAR and copick through napari's plugin machinery."""

import numpy as np
import pandas as pd
import starfile

from tomolens.io.copick_io import CopickObject, create_project, open_project, write_copick_picks
from tomolens.io.coords import ParticleTable
from tomolens.io.zarr_io import read_ome_zarr, write_ome_zarr


def test_open_ome_zarr_as_multiscale_and_save_back(make_napari_viewer, tmp_path):
    vol = np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    write_ome_zarr(tmp_path / "tomo.zarr", vol, 12.0, levels=3)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "tomo.zarr"), plugin="napari-tomolens")
    assert layer.multiscale and len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, (12.0,) * 3)
    layer.save(str(tmp_path / "copy.zarr"), plugin="napari-tomolens")
    back = read_ome_zarr(tmp_path / "copy.zarr")
    np.testing.assert_array_equal(back.data.compute(), vol)
    assert back.voxel_size_A == (12.0, 12.0, 12.0)


def test_open_tiff_and_save_labels_as_tiff(make_napari_viewer, tmp_path):
    import tifffile

    vol = np.random.default_rng(1).normal(size=(5, 16, 16)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "stack.tif",
        vol,
        imagej=True,
        resolution=(0.1, 0.1),
        metadata={"spacing": 10.0, "unit": "angstrom", "axes": "ZYX"},
    )
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "stack.tif"), plugin="napari-tomolens")
    np.testing.assert_allclose(layer.scale, (10.0,) * 3)
    labels = viewer.add_labels((vol > 0).astype(np.uint8), scale=(10.0,) * 3, units=("angstrom",) * 3)
    labels.save(str(tmp_path / "labels.tif"), plugin="napari-tomolens")
    [back] = viewer.open(str(tmp_path / "labels.tif"), plugin="napari-tomolens")
    assert back._type_string == "labels"
    np.testing.assert_array_equal(back.data, labels.data)


def test_multi_tomogram_star_opens_one_layer_per_tomogram(make_napari_viewer, tmp_path):
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1", "TS_1", "TS_2"],
            "rlnCoordinateX": [1.0, 2.0, 3.0],
            "rlnCoordinateY": [4.0, 5.0, 6.0],
            "rlnCoordinateZ": [7.0, 8.0, 9.0],
            "rlnImagePixelSize": [4.0] * 3,
        }
    )
    starfile.write({"particles": particles}, tmp_path / "all.star")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "all.star"), plugin="napari-tomolens")
    assert [layer.name for layer in layers] == ["all TS_1", "all TS_2"]
    assert len(layers[0].data) == 2 and len(layers[1].data) == 1
    np.testing.assert_allclose(layers[0].size, 37.5)  # the 150 Å default diameter in 4 Å voxels
    layers[1].save(str(tmp_path / "ts2.star"), plugin="napari-tomolens")
    assert list(starfile.read(tmp_path / "ts2.star")["rlnTomoName"]) == ["TS_2"]


def test_dynamo_table_written_from_a_layer_reopens_with_orientations(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    features = pd.DataFrame({"rot": [10.0, 20.0], "tilt": [30.0, 40.0], "psi": [50.0, 60.0], "score": [0.5, 0.6]})
    layer = viewer.add_points(
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], features=features, scale=(8.0,) * 3, units=("angstrom",) * 3, name="picks"
    )
    layer.save(str(tmp_path / "picks.tbl"), plugin="napari-tomolens")
    back, arrows = viewer.open(str(tmp_path / "picks.tbl"), plugin="napari-tomolens")
    np.testing.assert_allclose(back.data, layer.data, atol=1e-4)
    np.testing.assert_allclose(back.features[["rot", "tilt", "psi"]], features[["rot", "tilt", "psi"]], atol=1e-4)
    assert arrows._type_string == "vectors" and back.scale[0] == 8.0


def test_open_copick_config_gives_tomogram_picks_and_segmentation(make_napari_viewer, tmp_path):
    cfg = create_project(tmp_path / "copick_config.json", [CopickObject("ribosome", 1, 120.0, True)])
    root = open_project(cfg)
    run = root.new_run("TS_01")
    run.new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(np.ones((8, 16, 16), np.float32))
    write_copick_picks(
        root,
        "TS_01",
        "ribosome",
        ParticleTable([[1.0, 2.0, 3.0]], pd.DataFrame({"rot": [0.0], "tilt": [90.0], "psi": [0.0]}), 10.0),
    )
    seg = run.new_segmentation(10.0, "ribosome", "0", is_multilabel=False, user_id="tomolens")
    seg.from_numpy(np.ones((8, 16, 16), np.uint8))
    viewer = make_napari_viewer()
    layers = viewer.open(str(cfg), plugin="napari-tomolens")
    kinds = [(layer.name, layer._type_string) for layer in layers]
    assert kinds == [
        ("TS_01 wbp", "image"),
        ("TS_01 ribosome (tomolens/0)", "points"),
        ("TS_01 ribosome (tomolens/0) orientation", "vectors"),
        ("TS_01 ribosome segmentation (tomolens/0)", "labels"),
    ]
    picks = layers[1]
    np.testing.assert_allclose(picks.data, [[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(picks.size, 24.0)  # 2 x 120 Å / 10 Å
