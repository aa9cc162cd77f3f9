"""OME-Zarr (ome-zarr), TIFF (tifffile) and copick projects (copick), each made by its own library."""

import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from scipy.spatial.transform import Rotation

from tomolens.io.coords import ParticleTable
from tomolens.io.copick_io import (
    CopickObject,
    CopickProjectError,
    create_project,
    open_project,
    project_objects,
    read_copick_picks,
    read_copick_segmentations,
    read_copick_tomogram,
    write_copick_picks,
    write_copick_segmentation,
)
from tomolens.io.orientation import angles_from_matrices, matrices_from_angles
from tomolens.io.tiff_io import TiffFormatError, read_tiff, write_tiff
from tomolens.io.zarr_io import ZarrFormatError, read_ome_zarr, write_ome_zarr


def test_ome_zarr_written_by_ome_zarr_is_read_lazily_with_voxel_size_in_angstrom(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_multiscale

    vol = np.random.default_rng(0).normal(size=(16, 24, 32)).astype(np.float32)
    group = zarr.group(parse_url(str(tmp_path / "portal.zarr"), mode="w").store)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    write_multiscale(
        [vol, vol[::2, ::2, ::2]],
        group,
        axes=axes,
        coordinate_transformations=[
            [{"type": "scale", "scale": [1.2, 1.1, 1.0]}],
            [{"type": "scale", "scale": [2.4, 2.2, 2.0]}],
        ],
    )
    opened = read_ome_zarr(tmp_path / "portal.zarr")
    assert isinstance(opened.data, da.Array) and [lv.shape for lv in opened.levels] == [(16, 24, 32), (8, 12, 16)]
    assert opened.voxel_size_A == pytest.approx((12.0, 11.0, 10.0))  # nm -> Å
    np.testing.assert_array_equal(opened.data[3].compute(), vol[3])


def test_write_ome_zarr_round_trip_pyramid_and_labels(tmp_path):
    vol = np.random.default_rng(1).normal(size=(20, 30, 40)).astype(np.float32)
    write_ome_zarr(tmp_path / "out.zarr", vol, 8.0, levels=3)
    back = read_ome_zarr(tmp_path / "out.zarr")
    assert len(back.levels) == 3 and back.voxel_size_A == (8.0, 8.0, 8.0) and not back.is_labels
    np.testing.assert_array_equal(back.data.compute(), vol)
    np.testing.assert_allclose(back.levels[1][0, 0, 0].compute(), vol[:2, :2, :2].mean(), rtol=1e-5)
    labels = (vol > 1).astype(np.uint8) * 3
    write_ome_zarr(tmp_path / "out.zarr", labels, 8.0, levels=2, is_labels=True)  # replaces the folder
    back = read_ome_zarr(tmp_path / "out.zarr")
    assert back.is_labels and back.levels[1].dtype == np.uint8 and len(back.levels) == 2
    np.testing.assert_array_equal(back.levels[1].compute(), labels[::2, ::2, ::2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # no temporary folder left


def test_zarr_without_multiscales_is_named(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_dataset("0", data=np.zeros((4, 4, 4)))
    with pytest.raises(ZarrFormatError, match="without OME-Zarr 'multiscales' metadata"):
        read_ome_zarr(tmp_path / "plain.zarr")
    (tmp_path / "folder.zarr").mkdir()
    with pytest.raises(ZarrFormatError, match="is not a Zarr store"):
        read_ome_zarr(tmp_path / "folder.zarr")


def test_tiff_stack_by_tifffile_and_round_trip(tmp_path):
    vol = np.random.default_rng(2).normal(size=(6, 10, 12)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "fiji.tif",
        vol,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.5),
        metadata={"spacing": 0.6, "unit": "nm", "axes": "ZYX"},
    )
    opened = read_tiff(tmp_path / "fiji.tif")
    assert opened.voxel_size_A == pytest.approx((6.0, 5.0, 5.0))
    np.testing.assert_array_equal(opened.data, vol)
    tifffile.imwrite(tmp_path / "plain.tif", vol)
    assert read_tiff(tmp_path / "plain.tif").voxel_size_A is None
    write_tiff(tmp_path / "labels.tif", (vol > 0).astype(np.int64) * 2, 10.0, is_labels=True)
    back = read_tiff(tmp_path / "labels.tif")
    assert back.is_labels and back.data.dtype == np.uint8 and back.voxel_size_A == pytest.approx((10.0,) * 3)
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(TiffFormatError, match="3D stacks"):
        read_tiff(tmp_path / "rgb.tif")


@pytest.fixture
def project(tmp_path):
    """A copick project made by copick: one run, a tomogram, ribosome picks with known rotations."""
    cfg = create_project(
        tmp_path / "proj" / "copick_config.json",
        [CopickObject("ribosome", 1, 130.0, True), CopickObject("membrane", 2, None, False)],
    )
    root = open_project(cfg)
    run = root.new_run("TS_01")
    run.new_voxel_spacing(10.0).new_tomogram("wbp").from_numpy(np.ones((16, 32, 32), np.float32))
    mats = Rotation.from_euler("x", [[0.0], [90.0]], degrees=True).as_matrix()
    transforms = np.tile(np.eye(4), (2, 1, 1))
    transforms[:, :3, :3] = mats
    transforms[1, :3, 3] = [5.0, 0.0, 0.0]  # a 5 Å refined shift in x
    picks = run.new_picks("ribosome", session_id="1", user_id="curator")
    picks.from_numpy(np.array([[100.0, 200.0, 50.0], [150.0, 100.0, 80.0]]), transforms, scores=np.array([0.9, 0.4]))
    return cfg, mats


def test_copick_picks_made_by_copick_read_with_orientations(project):
    cfg, mats = project
    root = open_project(cfg)
    assert [o.name for o in project_objects(root)] == ["ribosome", "membrane"]
    [(key, table)] = read_copick_picks(root, "TS_01", 10.0).items()
    assert key == ("ribosome", "curator", "1")
    np.testing.assert_allclose(table.coords_zyx, [[5.0, 20.0, 10.0], [8.0, 10.0, 15.5]])
    got = matrices_from_angles(table.features[["rot", "tilt", "psi"]].to_numpy(float))
    np.testing.assert_allclose(got, mats, atol=1e-9)
    assert list(table.features["radius_A"]) == [130.0, 130.0] and list(table.features["score"]) == [0.9, 0.4]
    vol = read_copick_tomogram(root, "TS_01", 10.0, "wbp")
    assert vol.data.shape == (16, 32, 32) and vol.voxel_size_A == (10.0, 10.0, 10.0)


def test_copick_write_picks_and_segmentation_round_trip(project, tmp_path):
    cfg, _ = project
    root = open_project(cfg)
    rng = np.random.default_rng(4)
    mats = Rotation.random(5, random_state=rng).as_matrix()
    angles = angles_from_matrices(mats)
    table = ParticleTable(
        rng.uniform(0, 30, (5, 3)),
        pd.DataFrame({"rot": angles[:, 0], "tilt": angles[:, 1], "psi": angles[:, 2], "score": rng.uniform(size=5)}),
        10.0,
    )
    write_copick_picks(root, "TS_01", "ribosome", table, user_id="tomolens", session_id="7")
    labels = np.zeros((16, 32, 32), np.uint8)
    labels[4:8, 10:20, 10:20] = 2
    write_copick_segmentation(root, "TS_01", "tomolens-labels", labels, 10.0, user_id="tomolens", session_id="7")
    root = open_project(cfg)
    back = read_copick_picks(root, "TS_01", 10.0, user_id="tomolens")[("ribosome", "tomolens", "7")]
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-9)
    np.testing.assert_allclose(
        matrices_from_angles(back.features[["rot", "tilt", "psi"]].to_numpy(float)), mats, atol=1e-9
    )
    [(name, user, session, seg)] = read_copick_segmentations(root, "TS_01", 10.0)
    assert (name, user, session) == ("tomolens-labels", "tomolens", "7")
    np.testing.assert_array_equal(seg.data.compute(), labels)
    with pytest.raises(CopickProjectError, match="'virus' is not one of the project's objects: ribosome, membrane"):
        write_copick_picks(root, "TS_01", "virus", table)


def test_copick_config_errors(tmp_path):
    with pytest.raises(CopickProjectError, match="No copick config"):
        open_project(tmp_path / "missing.json")
    cfg = tmp_path / "copick_config.json"
    cfg.write_text(
        json.dumps({"config_type": "filesystem", "pickable_objects": [], "overlay_root": "local:///nowhere/at/all"})
    )
    with pytest.raises(CopickProjectError, match="points to '/nowhere/at/all'.*does not exist"):
        open_project(cfg)
    cfg.write_text("{not json")
    with pytest.raises(CopickProjectError, match="not JSON"):
        open_project(cfg)
