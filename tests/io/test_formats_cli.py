"""tomolens info and convert-coords across formats (including Euler conventions)."""

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from tomolens.cli import main
from tomolens.io.copick_io import CopickObject, create_project, open_project, read_copick_picks
from tomolens.io.coords import ParticleTable, write_coordinates
from tomolens.io.orientation import angles_from_matrices, matrices_from_angles
from tomolens.io.picks import read_picks
from tomolens.io.zarr_io import write_ome_zarr


@pytest.fixture
def star_two_tomograms(tmp_path):
    mats = Rotation.random(6, random_state=np.random.default_rng(8)).as_matrix()
    angles = angles_from_matrices(mats)
    features = pd.DataFrame(
        {"tomo_name": ["TS_01"] * 4 + ["TS_02"] * 2, "rot": angles[:, 0], "tilt": angles[:, 1], "psi": angles[:, 2]}
    )
    coords = np.random.default_rng(9).uniform(0, 100, (6, 3))
    write_coordinates(tmp_path / "all.star", ParticleTable(coords, features, 5.0))
    return tmp_path / "all.star", coords, mats


def test_convert_star_per_tomogram_to_dynamo_keeps_orientations(star_two_tomograms, tmp_path, capsys):
    src, coords, mats = star_two_tomograms
    assert main(["convert-coords", str(src), str(tmp_path / "per"), "--per-tomogram", ".tbl"]) == 0
    assert "wrote 6 particles to 2 files" in capsys.readouterr().out
    ts02 = read_picks(tmp_path / "per" / "all_TS_02.tbl")
    np.testing.assert_allclose(ts02.coords_zyx, coords[4:], atol=1e-4)
    np.testing.assert_allclose(
        matrices_from_angles(ts02.features[["rot", "tilt", "psi"]].to_numpy(float)), mats[4:], atol=1e-5
    )
    assert main(["convert-coords", str(src), str(tmp_path / "one.csv"), "--tomogram", "TS_01.mrc"]) == 0
    assert len(read_picks(tmp_path / "one.csv")) == 4
    assert main(["convert-coords", str(src), str(tmp_path / "none.star"), "--tomogram", "TS_09"]) != 0
    assert "None of the 2 tomograms in all.star (TS_01, TS_02) matches 'TS_09'" in capsys.readouterr().err


def test_convert_into_and_out_of_a_copick_project(star_two_tomograms, tmp_path):
    src, coords, mats = star_two_tomograms
    cfg = create_project(tmp_path / "proj" / "copick_config.json", [CopickObject("ribosome", 1, 120.0, True)])
    assert (
        main(
            [
                "convert-coords",
                str(src),
                str(cfg),
                "--tomogram",
                "TS_01",
                "--run",
                "TS_01",
                "--object",
                "ribosome",
                "--user",
                "me",
                "--session",
                "3",
            ]
        )
        == 0
    )
    [table] = read_copick_picks(open_project(cfg), "TS_01", 5.0, user_id="me").values()
    np.testing.assert_allclose(table.coords_zyx, coords[:4], atol=1e-5)  # STAR keeps 6 decimals
    assert main(["convert-coords", str(cfg), str(tmp_path / "back.star"), "--voxel-size", "5"]) == 0
    back = read_picks(tmp_path / "back.star")
    np.testing.assert_allclose(
        matrices_from_angles(back.features[["rot", "tilt", "psi"]].to_numpy(float)), mats[:4], atol=1e-5
    )
    assert main(["convert-coords", str(cfg), str(tmp_path / "x.star")]) != 0  # no voxel size for copick's Å


def test_info_reads_ome_zarr_copick_and_picks(star_two_tomograms, tmp_path, capsys):
    write_ome_zarr(tmp_path / "t.zarr", np.zeros((8, 32, 32), np.float32), 7.0, levels=2)
    assert main(["info", str(tmp_path / "t.zarr")]) == 0
    out = capsys.readouterr().out
    assert "OME-Zarr image" in out and "7 × 7 × 7 Å" in out and "levels:      2: (8, 32, 32), (4, 16, 16)" in out
    cfg = create_project(tmp_path / "p" / "copick_config.json", [CopickObject("ribosome", 1, 120.0, True)])
    open_project(cfg).new_run("TS_05").new_voxel_spacing(7.0).new_tomogram("wbp").from_numpy(np.zeros((8, 8, 8)))
    assert main(["info", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "ribosome (label 1, radius 120 Å)" in out and "run TS_05:" in out and "voxel spacing 7 Å: wbp" in out
    assert main(["info", str(star_two_tomograms[0])]) == 0
    assert "holds 2 tomograms (TS_01 4, TS_02 2), 6 rows in all" in capsys.readouterr().out
    starfile.write({"particles": pd.DataFrame({"a": [1]})}, tmp_path / "bad.star")
    assert main(["info", str(tmp_path / "bad.star")]) != 0


def test_convert_to_relion5_names_the_tomogram(tmp_path, capsys):
    coords = np.array([[10.0, 20.0, 30.0], [5.0, 6.0, 7.0]])
    write_coordinates(tmp_path / "picks.csv", ParticleTable(coords, pd.DataFrame({"score": [0.9, 0.4]}), 10.0))
    out = tmp_path / "relion5.star"
    assert (
        main(
            [
                "convert-coords",
                str(tmp_path / "picks.csv"),
                str(out),
                "--pixel-size",
                "10",
                "--tomogram-shape",
                "64",
                "48",
                "40",
                "--star-form",
                "centred",
                "--tomo-name",
                "TS_01",
            ]
        )
        == 0
    )
    df = starfile.read(out)
    assert list(df["rlnTomoName"]) == ["TS_01", "TS_01"]
    # RELION 5 centred Å: (x - size_x / 2) * pixel size
    np.testing.assert_allclose(df["rlnCenteredCoordinateXAngst"], (coords[:, 2] - 32) * 10, atol=1e-3)


def test_info_on_an_mrc_speaks_like_the_tomogram_dock(tmp_path, capsys):
    """Voxel size without float32 noise (10.52, not 10.520000110973012), the real value range of the sample (not
    a display window: a constant volume is 'all 0', not '0 .. 1')."""
    import mrcfile

    data = np.random.default_rng(0).uniform(49, 190, (6, 10, 8)).astype(np.float32)
    with mrcfile.new(tmp_path / "t.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 10.52  # stored as float32 cell lengths / sizes: 10.520000110973012 when read back
    assert main(["info", str(tmp_path / "t.mrc")]) == 0
    out = capsys.readouterr().out
    assert "shape:       6 × 10 × 8 (z, y, x)" in out and "voxel size:  10.52 × 10.52 × 10.52 Å (z, y, x)" in out
    assert f"values:      {data.min():.4g} .. {data.max():.4g} (sampled)" in out
    with mrcfile.new(tmp_path / "c.mrc") as mrc:
        mrc.set_data(np.zeros((4, 4, 4), np.float32))
        mrc.voxel_size = 10.0
    assert main(["info", str(tmp_path / "c.mrc")]) == 0
    assert "values:      all 0 (sampled)" in capsys.readouterr().out
