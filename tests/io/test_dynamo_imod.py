"""Dynamo tables and IMOD models, each made by its community's library."""

import dynamotable
import imodmodel
import numpy as np
import pandas as pd
import pytest

from tomolens.io.coords import CoordinateFileError, ParticleTable
from tomolens.io.imod_io import read_imod_model, read_tlt, read_xf, write_imod_model, write_tlt
from tomolens.io.orientation import matrices_from_angles
from tomolens.io.picks import read_picks, write_picks


def test_dynamo_table_made_by_dynamotable_reads_positions_shifts_and_angles(tmp_path):
    df = pd.DataFrame(
        {
            "tag": [1, 2],
            "x": [10.0, 40.0],
            "y": [20.0, 50.0],
            "z": [30.0, 60.0],
            "dx": [0.5, -1.0],
            "dy": [0.0, 2.0],
            "dz": [1.0, 0.0],
            "tdrot": [-47.2730, 0.0],
            "tilt": [1.1777, 90.0],
            "narot": [-132.3, 0.0],
            "cc": [0.8, 0.3],
            "tomo": [1, 2],
            "apix": [6.0, 6.0],
        }
    )
    dynamotable.write(df, str(tmp_path / "crop.tbl"))
    table = read_picks(tmp_path / "crop.tbl")
    np.testing.assert_allclose(table.coords_zyx, [[31.0, 20.0, 10.5], [60.0, 52.0, 39.0]])
    np.testing.assert_allclose(
        table.features.loc[0, ["rot", "tilt", "psi"]].to_numpy(float), [137.7, 1.1777, 42.727], atol=1e-3
    )  # the published equivalent pair
    assert table.pixel_size_A == 6.0 and list(table.features["tomo_name"]) == ["1", "2"]
    np.testing.assert_allclose(table.features["score"], [0.8, 0.3])


def test_dynamo_round_trip_keeps_orientation_matrices_and_tomogram_names(tmp_path):
    rng = np.random.default_rng(5)
    mats = np.stack([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(6)])
    mats *= np.sign(np.linalg.det(mats))[:, None, None]
    from tomolens.io.orientation import angles_from_matrices

    angles = angles_from_matrices(mats)
    features = pd.DataFrame(
        {
            "rot": angles[:, 0],
            "tilt": angles[:, 1],
            "psi": angles[:, 2],
            "score": rng.uniform(size=6),
            "tomo_name": ["TS_01"] * 3 + ["TS_07"] * 3,
        }
    )
    table = ParticleTable(rng.uniform(0, 200, (6, 3)), features, pixel_size_A=7.5)
    write_picks(tmp_path / "out.tbl", table)
    assert (tmp_path / "out.doc").read_text().split() == ["1", "TS_01", "2", "TS_07"]
    raw = dynamotable.read(str(tmp_path / "out.tbl"))
    assert raw.shape[1] >= 35 and list(raw["tomo"]) == [1, 1, 1, 2, 2, 2]
    back = read_picks(tmp_path / "out.tbl")
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-4)
    back_mats = matrices_from_angles(back.features[["rot", "tilt", "psi"]].to_numpy(float))
    np.testing.assert_allclose(back_mats, mats, atol=1e-5)
    assert list(back.features["tomo_name"]) == list(features["tomo_name"]) and back.pixel_size_A == 7.5


def test_bad_dynamo_table_is_named(tmp_path):
    (tmp_path / "bad.tbl").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(CoordinateFileError, match="bad.tbl is not a Dynamo table with particles"):
        read_picks(tmp_path / "bad.tbl")


def test_imod_model_made_by_imodmodel_reads_objects_and_contours(tmp_path):
    df = pd.DataFrame(
        {
            "object_id": [0, 0, 0, 1],
            "contour_id": [0, 0, 1, 0],
            "x": [1.0, 2.0, 3.0, 4.0],
            "y": [5.0, 6.0, 7.0, 8.0],
            "z": [9.0, 10.0, 11.0, 12.0],
        }
    )
    imodmodel.write(df, tmp_path / "picks.mod")
    table = read_picks(tmp_path / "picks.mod")
    np.testing.assert_allclose(table.coords_zyx[:, ::-1], df[["x", "y", "z"]].to_numpy(), atol=1e-5)
    assert list(table.features["object"]) == [1, 1, 1, 2] and list(table.features["contour"]) == [1, 1, 2, 1]
    assert table.pixel_size_A is None  # imodmodel writes "pixels" units
    write_imod_model(tmp_path / "back.mod", ParticleTable(table.coords_zyx, table.features, pixel_size_A=13.2))
    back = read_imod_model(tmp_path / "back.mod")
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-5)
    assert back.pixel_size_A == pytest.approx(13.2, rel=1e-5)
    pd.testing.assert_frame_equal(back.features, table.features)
    assert len(imodmodel.ImodModel.from_file(tmp_path / "back.mod").objects) == 2


def test_imod_model_without_points_is_named(tmp_path):
    model = imodmodel.ImodModel()
    model.to_file(tmp_path / "empty.mod")
    with pytest.raises(CoordinateFileError, match="empty.mod is an IMOD model with 0 object.*no points"):
        read_picks(tmp_path / "empty.mod")
    (tmp_path / "junk.mod").write_bytes(b"not imod" * 10)
    with pytest.raises(CoordinateFileError, match="junk.mod is not a readable IMOD model"):
        read_picks(tmp_path / "junk.mod")


def test_tlt_and_xf(tmp_path):
    write_tlt(tmp_path / "ts.tlt", np.arange(-60, 61, 3.0))
    np.testing.assert_allclose(read_tlt(tmp_path / "ts.tlt"), np.arange(-60, 61, 3.0))
    (tmp_path / "ts.xf").write_text("1 0 0 1 2.5 -3\n0.9 -0.1 0.1 0.9 0 1\n")
    xf = read_xf(tmp_path / "ts.xf")
    assert xf.shape == (2, 2, 3) and xf[0, 0, 2] == 2.5 and xf[0, 1, 2] == -3.0 and xf[1, 0, 1] == -0.1


def test_simulated_tilt_series_saved_with_its_tlt(tmp_path):
    from tomolens.io.mrc import read_mrc
    from tomolens.jobs import run_job
    from tomolens.simulate import SimulationConfig, simulate_tomogram

    cfg = SimulationConfig(
        shape_zyx=(32, 48, 48),
        templates=("globule",),
        n_particles=2,
        snr=1.0,
        tilt_range_deg=30.0,
        tilt_step_deg=10.0,
        mode="tiltseries",
        seed=3,
    )
    sim = run_job(simulate_tomogram(cfg))
    paths = sim.save(tmp_path)
    np.testing.assert_allclose(read_tlt(paths["tilt_angles"]), [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0, 30.0])
    stack = read_mrc(paths["tilt_series"])
    assert stack.kind == "stack" and stack.data.shape == (7, 48, 48)
    np.testing.assert_allclose(stack.data, sim.tilt_series)
