"""Pick by example by template matching: planted copies in random orientations, reference maps, bad input."""

import numpy as np
import pandas as pd
import pytest
from planted import TARGET, planted_tomogram
from scipy.spatial.transform import Rotation

from tomolens.embed.pick import find_similar, pick_peaks
from tomolens.embed.template_match import rotate_box, rotation_grid
from tomolens.evaluate import match_centres
from tomolens.jobs import run_job

#: A coarse grid keeps the tests at a few seconds (72 rotations).
FAST = {"radius_A": 80.0, "angular_step_deg": 60.0, "polarity": "bright"}


def f1(picks: pd.DataFrame, truth: np.ndarray) -> float:
    return match_centres(picks[["z", "y", "x"]].to_numpy(), truth, 4.0).f1


def test_rotation_grid_is_near_uniform():
    rots = rotation_grid(40.0)
    assert len(rots) == 26 * 9 and np.allclose(rots[0].as_matrix(), np.eye(3))
    # every random rotation lies within about one step of the grid
    probe = Rotation.random(200, random_state=0)
    nearest = [np.min((rots * p.inv()).magnitude()) for p in probe]
    assert np.degrees(np.max(nearest)) < 40.0


def test_rotated_box_keeps_the_centre_and_turns_the_content():
    cube = np.zeros((9, 9, 9), np.float32)
    cube[4, 4, 4], cube[4, 4, 7] = 1.0, 1.0  # centre and a voxel along +x
    turned = rotate_box(cube, Rotation.from_euler("x", 90, degrees=True))  # x of the rotation acts on axis 0 = z
    assert turned[4, 4, 4] == pytest.approx(1.0)
    assert turned[4, 4, 7] < 0.5 and turned.sum() == pytest.approx(2.0, abs=1e-3)


@pytest.mark.parametrize("combine", ["average", "each"])
def test_planted_copies_in_random_orientations_are_found(combine):
    vol, target, distractor = planted_tomogram(n_each=6, noise=0.3, seed=1, rotate=True)
    sim = run_job(find_similar(vol, target[:2], None, 10.0, "template", combine=combine, **FAST))
    assert sim.similarity.shape == (1, *vol.shape) and sim.step_voxels == 1.0
    picks = pick_peaks(sim, 0.3, 80.0)
    assert f1(picks, target) >= 0.9
    assert match_centres(picks[["z", "y", "x"]].to_numpy(), distractor, 4.0).true_positives == 0


def test_reference_map_at_another_voxel_size_is_resampled(tmp_path):
    from tomolens.io.mrc import write_mrc
    from tomolens.simulate.pseudoproteins import render_pseudoprotein

    vol, target, _ = planted_tomogram(n_each=6, noise=0.3, seed=2, rotate=True)
    write_mrc(tmp_path / "ref.mrc", render_pseudoprotein(TARGET, 5.0).density, 5.0)
    sim = run_job(find_similar(vol, np.empty((0, 3)), None, 10.0, "template", reference=tmp_path / "ref.mrc", **FAST))
    assert sim.targets == ["ref"]
    assert any("resampled from 5 to the tomogram's 10" in n for n in sim.info["notes"])
    assert f1(pick_peaks(sim, 0.3, 80.0), target) >= 0.9
    # a dark map (density negative) is turned bright and says so
    write_mrc(tmp_path / "dark.mrc", -render_pseudoprotein(TARGET, 10.0).density, 10.0)
    sim = run_job(find_similar(vol, target[:1], None, 10.0, "template", reference=tmp_path / "dark.mrc", **FAST))
    assert any("inverted" in n for n in sim.info["notes"]) and sim.example_similarity[0][0] > 0.3


def test_bad_input_gives_clear_errors(tmp_path):
    from tomolens.io.mrc import write_mrc

    vol = np.random.default_rng(0).standard_normal((16, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="at least 1 example"):
        run_job(find_similar(vol, np.empty((0, 3)), None, 10.0, **FAST))
    with pytest.raises(ValueError, match="outside the tomogram"):
        run_job(find_similar(vol, np.array([[5.0, 40.0, 5.0]]), None, 10.0, **FAST))
    with pytest.raises(ValueError, match="no voxel size, so 1 Å per voxel was assumed"):
        run_job(find_similar(vol, np.array([[5.0, 5.0, 5.0]]), None, None, radius_A=100.0))
    with pytest.raises(ValueError, match="method must be one of"):
        run_job(find_similar(vol, np.array([[5.0, 5.0, 5.0]]), None, 10.0, "templates"))
    big = np.zeros((40, 40, 40), np.float32)
    big[5:35, 5:35, 5:35] = 1.0
    write_mrc(tmp_path / "big.mrc", big, 10.0)
    with pytest.raises(ValueError, match="larger than the tomogram"):
        run_job(find_similar(vol, np.empty((0, 3)), None, 10.0, reference=tmp_path / "big.mrc", **FAST))
    write_mrc(tmp_path / "novoxel.mrc", big[:12, :12, :12], None)
    with pytest.raises(ValueError, match="no voxel size"):
        run_job(find_similar(vol, np.empty((0, 3)), None, 10.0, reference=tmp_path / "novoxel.mrc", **FAST))


def test_cli_template_by_default_and_one_line_errors(tmp_path, capsys):
    from tomolens.cli import main
    from tomolens.io import ParticleTable, read_coordinates, write_coordinates, write_mrc

    vol, target, _ = planted_tomogram(n_each=6, noise=0.3, seed=1, rotate=True)
    write_mrc(tmp_path / "t.mrc", vol, 10.0)
    write_coordinates(tmp_path / "ex.star", ParticleTable(target[:2], pd.DataFrame(index=range(2)), 10.0))
    common = ["pick-by-example", "--tomogram", str(tmp_path / "t.mrc"), "--radius-A", "80", "--angular-step-deg", "60"]
    rc = main(
        [*common, "--examples", str(tmp_path / "ex.star"), "--out", str(tmp_path / "p.star"), "--min-distance-A", "80"]
    )
    assert rc == 0
    picks = read_coordinates(tmp_path / "p.star")
    assert match_centres(picks.coords_zyx, target, 4.0).f1 >= 0.9
    capsys.readouterr()
    write_mrc(tmp_path / "novoxel.mrc", np.ones((8, 8, 8), np.float32), None)
    rc = main([*common, "--reference", str(tmp_path / "novoxel.mrc"), "--out", str(tmp_path / "q.star")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "voxel size" in err
    assert not (tmp_path / "q.star").exists()
    rc = main([*common, "--out", str(tmp_path / "q.star")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--reference" in err
    assert not (tmp_path / "q.star").exists()


def test_binning_matches_on_a_coarser_grid_and_picks_in_tomogram_voxels():
    vol, target, distractor = planted_tomogram(n_each=6, noise=0.3, seed=1, rotate=True)
    sim = run_job(find_similar(vol, target[:2], None, 10.0, "template", bin=2, **FAST))
    assert sim.similarity.shape == (1, 32, 64, 64) and sim.step_voxels == 2.0
    assert sim.info["origin_voxels"] == 0.5 and any("binned by 2" in n for n in sim.info["notes"])
    picks = pick_peaks(sim, 0.5, 80.0)  # fewer voxels under the mask: the background correlates higher
    assert f1(picks, target) >= 0.9
    assert match_centres(picks[["z", "y", "x"]].to_numpy(), distractor, 4.0).true_positives == 0
    with pytest.raises(ValueError, match="after binning by 4"):
        run_job(find_similar(vol, target[:2], None, 10.0, "template", bin=4, **{**FAST, "radius_A": 50.0}))


def test_wedge_filter_removes_what_a_tilt_series_about_y_misses():
    from tomolens.embed.template_match import wedge_filter

    g = np.indices((16, 16, 16))[0].astype(np.float32)
    along_z = np.cos(2 * np.pi * g / 8)  # varies along z only: inside the missing wedge
    along_x = np.cos(2 * np.pi * np.indices((16, 16, 16))[2] / 8).astype(np.float32)  # kept
    inner = (slice(4, 12),) * 3
    assert np.abs(wedge_filter(along_z, 35.0)[inner]).max() < 0.1
    assert np.corrcoef(wedge_filter(along_x, 35.0)[inner].ravel(), along_x[inner].ravel())[0, 1] > 0.9
    sim = run_job(
        find_similar(*planted_tomogram(n_each=2, seed=3, rotate=True)[:2], None, 10.0, tilt_range_deg=60.0, **FAST)
    )
    assert sim.info["tilt_range_deg"] == 60.0
