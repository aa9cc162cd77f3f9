"""RELION 5 particle files covering several tomograms, optics groups, point sizes."""

import numpy as np
import pandas as pd
import pytest
import starfile

from tomolens._napari.layers import DEFAULT_PARTICLE_DIAMETER_A, particle_diameters_px
from tomolens._napari.pick_layers import pick_layers, tomogram_pick_layers
from tomolens.io.coords import CoordinateFileError, ParticleTable, read_coordinates
from tomolens.io.star_tomo import match_tomogram, select_tomogram, split_by_tomogram, write_per_tomogram


@pytest.fixture
def relion5_star(tmp_path):
    """A RELION 5-style particles file made by starfile: 3 tomograms, 2 optics groups."""
    rng = np.random.default_rng(1)
    n = 30
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1, 2],
            "rlnOpticsGroupName": ["opticsGroup1", "opticsGroup2"],
            "rlnTomoTiltSeriesPixelSize": [1.5, 1.5],
            "rlnImagePixelSize": [6.0, 6.0],
            "rlnImageSize": [64, 64],
            "rlnImageDimensionality": [3, 3],
        }
    )
    particles = pd.DataFrame(
        {
            "rlnTomoName": np.repeat(["TS_01", "TS_02", "TS_10"], [12, 10, 8]),
            "rlnCoordinateX": rng.uniform(0, 4000, n),
            "rlnCoordinateY": rng.uniform(0, 4000, n),
            "rlnCoordinateZ": rng.uniform(0, 1000, n),
            "rlnAngleRot": rng.uniform(-180, 180, n),
            "rlnAngleTilt": rng.uniform(0, 180, n),
            "rlnAnglePsi": rng.uniform(-180, 180, n),
            "rlnOpticsGroup": np.repeat([1, 2], [12, 18]),
        }
    )
    path = tmp_path / "run_data.star"
    starfile.write({"optics": optics, "particles": particles}, path)
    return path, particles


def test_optics_group_pixel_size_is_honoured_and_written_back(relion5_star, tmp_path):
    path, particles = relion5_star
    table = read_coordinates(path)
    assert table.pixel_size_A == pytest.approx(1.5)  # rlnTomoTiltSeriesPixelSize, not the 6 Å subtomograms
    assert "rlnTomoTiltSeriesPixelSize" not in table.features and "rlnOpticsGroup" in table.features
    from tomolens.io.coords import write_coordinates

    write_coordinates(tmp_path / "back.star", table)
    blocks = starfile.read(tmp_path / "back.star", always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    np.testing.assert_allclose(blocks["particles"]["rlnCoordinateX"], particles["rlnCoordinateX"], atol=1e-4)
    assert list(blocks["particles"]["rlnTomoName"]) == list(particles["rlnTomoName"])


def test_optics_groups_of_different_pixel_sizes_share_one_scale(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnTomoTiltSeriesPixelSize": [2.0, 4.0]})
    particles = pd.DataFrame(
        {
            "rlnCoordinateX": [10.0, 10.0],
            "rlnCoordinateY": [0.0, 0.0],
            "rlnCoordinateZ": [0.0, 0.0],
            "rlnOpticsGroup": [1, 2],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "mixed.star")
    table = read_coordinates(tmp_path / "mixed.star")
    assert table.pixel_size_A == 2.0
    np.testing.assert_allclose(table.coords_zyx[:, 2], [10.0, 20.0])  # 40 Å = 20 px of 2 Å


def test_split_select_and_write_per_tomogram(relion5_star, tmp_path):
    path, particles = relion5_star
    table = read_coordinates(path)
    parts = split_by_tomogram(table)
    assert list(parts) == ["TS_01", "TS_02", "TS_10"] and [len(p) for p in parts.values()] == [12, 10, 8]
    ts10 = select_tomogram(table, "/data/rec_TS_10_6.00Apx.mrc", "run_data.star")
    np.testing.assert_allclose(ts10.coords_zyx[:, 2], particles["rlnCoordinateX"][22:], atol=1e-6)
    assert match_tomogram(["TS_1", "TS_10"], "TS_10.mrc") == "TS_10"
    assert match_tomogram(["TS_1", "TS_10"], "TS_100") is None
    written = write_per_tomogram(tmp_path / "per", table, stem="run_data")
    assert [p.name for p in written] == ["run_data_TS_01.star", "run_data_TS_02.star", "run_data_TS_10.star"]
    back = read_coordinates(written[1])
    assert len(back) == 10 and set(back.features["tomo_name"]) == {"TS_02"} and back.pixel_size_A == 1.5


def test_several_tomograms_without_a_tomogram_is_a_clear_error(relion5_star):
    table = read_coordinates(relion5_star[0])
    with pytest.raises(CoordinateFileError, match="holds 3 tomograms .*TS_01 12.*30 rows in all.*open"):
        select_tomogram(table, None, "run_data.star")
    with pytest.raises(CoordinateFileError, match="None of the 3 tomograms.*'TS_99'"):
        select_tomogram(table, "TS_99.mrc", "run_data.star")


def test_pick_layers_one_per_tomogram_with_orientations(relion5_star):
    table = read_coordinates(relion5_star[0])
    layers = pick_layers(table, "run_data", "run_data.star")
    kinds = [(kw["name"], kind) for _, kw, kind in layers]
    assert kinds == [
        ("run_data TS_01", "points"),
        ("run_data TS_01 orientation", "vectors"),
        ("run_data TS_02", "points"),
        ("run_data TS_02 orientation", "vectors"),
        ("run_data TS_10", "points"),
        ("run_data TS_10 orientation", "vectors"),
    ]
    vectors = layers[1][0]
    assert vectors.shape == (12, 2, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 1], axis=1), layers[0][1]["size"] / 2)
    only = tomogram_pick_layers(table, "TS_02", "picks", "run_data.star")
    assert len(only[0][0]) == 10 and only[0][1]["metadata"]["tomo_name"] == "TS_02"


def test_point_size_follows_the_particles():
    coords = np.zeros((3, 3))
    with_radius = ParticleTable(coords, pd.DataFrame({"radius_A": [50.0, 100.0, np.nan]}), pixel_size_A=10.0)
    np.testing.assert_allclose(particle_diameters_px(with_radius), [10.0, 20.0, 15.0])
    with_diameter = ParticleTable(coords, pd.DataFrame({"rlnMaskDiameter": [300.0] * 3}), pixel_size_A=1.5)
    np.testing.assert_allclose(particle_diameters_px(with_diameter), 200.0)
    plain = ParticleTable(coords, pixel_size_A=1.5)
    assert particle_diameters_px(plain) == pytest.approx(DEFAULT_PARTICLE_DIAMETER_A / 1.5)
    assert particle_diameters_px(ParticleTable(coords)) == 8.0  # unknown pixel size: screen-sized


def test_centred_coordinates_need_the_tomograms_voxel_size_not_the_optics_one(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [1.5]})
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1"],
            "rlnCenteredCoordinateXAngst": [100.0],
            "rlnCenteredCoordinateYAngst": [0.0],
            "rlnCenteredCoordinateZAngst": [-50.0],
            "rlnOpticsGroup": [1],
        }
    )
    starfile.write({"optics": optics, "particles": particles}, tmp_path / "centred.star")
    with pytest.raises(CoordinateFileError, match="needs the pixel size and the tomogram size"):
        read_coordinates(tmp_path / "centred.star", tomogram_shape_zyx=(100, 200, 200))
    table = read_coordinates(tmp_path / "centred.star", pixel_size_A=10.0, tomogram_shape_zyx=(100, 200, 200))
    np.testing.assert_allclose(table.coords_zyx, [[45.0, 100.0, 110.0]])
