"""sample_data/: committed files, their checksums, bit-for-bit regeneration, and File > Open Sample."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tomolens.io.copick_io import open_project, read_copick_picks
from tomolens.io.coords import read_coordinates
from tomolens.io.mrc import read_mrc
from tomolens.io.orientation import matrices_from_angles
from tomolens.io.picks import read_picks

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def _generator():
    spec = importlib.util.spec_from_file_location("make_sample_data", SAMPLE / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_files_match_their_checksums_and_stay_small():
    gen = _generator()
    lines = (SAMPLE / "SHA256SUMS").read_text().splitlines()
    assert len(lines) >= 10
    for line in lines:
        digest, name = line.split("  ", 1)
        assert gen.sha256(SAMPLE / name) == digest, name
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 20e6


def test_generator_regenerates_bit_for_bit_at_a_small_size(tmp_path):
    gen = _generator()
    small = dict(gen.SETTINGS, shape_zyx=(32, 64, 64), n_membranes=0, n_filaments=1, volume_fraction=0.05)
    gen.make_sample_data(tmp_path / "a", small)
    gen.make_sample_data(tmp_path / "b", small)
    sums = (tmp_path / "a" / "SHA256SUMS").read_text()
    assert sums == (tmp_path / "b" / "SHA256SUMS").read_text()
    assert "crowded_dark_particles.star" in sums and "copick/copick_config.json" in sums


def test_sample_is_dark_and_every_pick_format_agrees():
    tomo = read_mrc(SAMPLE / "crowded_dark.mrc")
    labels = read_mrc(SAMPLE / "crowded_dark_labels.mrc")
    assert tomo.data.shape == labels.data.shape == (64, 256, 256) and tomo.voxel_size_A == (10.0, 10.0, 10.0)
    assert labels.is_labels and set(np.unique(labels.data)) >= {0, 14, 15}  # membranes and filaments
    data = np.asarray(tomo.data, np.float32)
    assert data[labels.data > 0].mean() < data[labels.data == 0].mean() - 0.2  # dense matter dark
    star = read_coordinates(SAMPLE / "crowded_dark_particles.star")
    dyn = read_picks(SAMPLE / "crowded_dark_particles.tbl")
    assert star.pixel_size_A == dyn.pixel_size_A == 10.0 and set(star.features["tomo_name"]) == {"crowded_dark"}
    np.testing.assert_allclose(dyn.coords_zyx, star.coords_zyx, atol=1e-3)
    r_star = matrices_from_angles(star.features[["rot", "tilt", "psi"]].to_numpy(float))
    np.testing.assert_allclose(
        matrices_from_angles(dyn.features[["rot", "tilt", "psi"]].to_numpy(float)), r_star, atol=1e-4
    )
    picks = read_copick_picks(open_project(SAMPLE / "copick" / "copick_config.json"), "crowded_dark", 10.0)
    assert sum(len(t) for t in picks.values()) == len(star)
    (obj, user, session), torus = next((k, t) for k, t in picks.items() if k[0] == "torus")
    rows = (star.features["class_name"] == "torus").to_numpy()
    np.testing.assert_allclose(torus.coords_zyx, star.coords_zyx[rows], atol=1e-6)
    np.testing.assert_allclose(
        matrices_from_angles(torus.features[["rot", "tilt", "psi"]].to_numpy(float)), r_star[rows], atol=1e-6
    )
    assert (user, session) == ("tomolens", "0")


@pytest.mark.parametrize("key", ["crowded_dark", "crowded_dark_copick"])
def test_open_sample_offers_the_committed_files(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-tomolens", key)
    kinds = [layer._type_string for layer in layers]
    if key == "crowded_dark":
        assert kinds == ["image", "labels", "points", "vectors"]
        assert layers[2].size.max() > 5  # particles are drawn at their own size (radius_A)
    else:
        assert set(kinds) == {"points", "vectors"} and len(layers) == 26  # 13 objects
