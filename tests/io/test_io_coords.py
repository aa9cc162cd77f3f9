import numpy as np
import pandas as pd
import pytest
import starfile

from tomolens.io.coords import CoordinateFileError, ParticleTable, read_coordinates, write_coordinates


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(7, 3))
    features = pd.DataFrame(
        {
            "score": rng.uniform(size=7),
            "class": rng.integers(1, 4, size=7),
            "rot": rng.uniform(-180, 180, 7),
            "tilt": rng.uniform(0, 180, 7),
            "psi": rng.uniform(-180, 180, 7),
            "cluster": rng.integers(0, 3, size=7),
        }
    )
    return ParticleTable(coords, features, pixel_size_A=10.0)


def test_star_pixel_form_follows_relion_columns(tmp_path, table):
    write_coordinates(tmp_path / "p.star", table)
    df = starfile.read(tmp_path / "p.star")
    for col in (
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnCoordinateZ",
        "rlnAngleRot",
        "rlnAngleTilt",
        "rlnAnglePsi",
        "rlnClassNumber",
        "rlnAutopickFigureOfMerit",
    ):
        assert col in df.columns
    # x in the file is the last axis inside.
    np.testing.assert_allclose(df["rlnCoordinateX"], table.coords_zyx[:, 2], atol=1e-5)
    np.testing.assert_allclose(df["rlnCoordinateZ"], table.coords_zyx[:, 0], atol=1e-5)
    back = read_coordinates(tmp_path / "p.star")
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-5)
    assert back.pixel_size_A == pytest.approx(10.0)
    for name in table.features.columns:
        np.testing.assert_allclose(back.features[name].to_numpy(float), table.features[name].to_numpy(float), atol=1e-5)


def test_star_relion5_centred_form(tmp_path, table):
    shape = (100, 200, 300)
    write_coordinates(tmp_path / "c.star", table, star_form="centred", tomogram_shape_zyx=shape)
    df = starfile.read(tmp_path / "c.star")
    expected_x = (table.coords_zyx[:, 2] - 150.0) * 10.0
    np.testing.assert_allclose(df["rlnCenteredCoordinateXAngst"], expected_x, atol=1e-4)
    with pytest.raises(CoordinateFileError, match="tomogram size"):
        read_coordinates(tmp_path / "c.star")
    back = read_coordinates(tmp_path / "c.star", tomogram_shape_zyx=shape)
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-4)


def test_csv_round_trip_with_features_and_unit(tmp_path, table):
    write_coordinates(tmp_path / "p.csv", table)
    raw = pd.read_csv(tmp_path / "p.csv")
    assert list(raw.columns[:4]) == ["x", "y", "z", "unit"] and raw["unit"].iloc[0] == "px"
    back = read_coordinates(tmp_path / "p.csv")
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx)
    pd.testing.assert_frame_equal(back.features, table.features, check_dtype=False)


def test_csv_in_angstrom_needs_and_uses_pixel_size(tmp_path):
    pd.DataFrame({"x": [100.0], "y": [200.0], "z": [300.0], "unit": ["A"]}).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(CoordinateFileError, match="pixel size"):
        read_coordinates(tmp_path / "a.csv")
    t = read_coordinates(tmp_path / "a.csv", pixel_size_A=10.0)
    np.testing.assert_allclose(t.coords_zyx, [[30.0, 20.0, 10.0]])


def test_txt_round_trip(tmp_path, table):
    write_coordinates(tmp_path / "p.txt", table)
    back = read_coordinates(tmp_path / "p.txt")
    np.testing.assert_allclose(back.coords_zyx, table.coords_zyx, atol=1e-3)


def test_star_without_coordinates_is_refused(tmp_path):
    starfile.write({"particles": pd.DataFrame({"rlnAngleRot": [1.0, 2.0]})}, tmp_path / "x.star")
    with pytest.raises(CoordinateFileError, match="no coordinate columns"):
        read_coordinates(tmp_path / "x.star")


@pytest.mark.parametrize("name", ["e.star", "e.csv", "e.txt"])
def test_empty_file_is_refused(tmp_path, name):
    (tmp_path / name).write_text("")
    with pytest.raises(CoordinateFileError, match="empty"):
        read_coordinates(tmp_path / name)


def test_txt_with_only_comments_holds_no_particles(tmp_path):
    (tmp_path / "c.txt").write_text("# x y z\n")
    with pytest.raises(CoordinateFileError, match="no particles"):
        read_coordinates(tmp_path / "c.txt")


def test_unwritable_export_path_leaves_nothing(tmp_path, table):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_coordinates(tmp_path / "nope" / "p.star", table)
    assert list(tmp_path.iterdir()) == []
