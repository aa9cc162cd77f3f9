"""`tomolens orient simulate | recover` end to end on a small map with the shipped distance model."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tomolens.cli import main
from tomolens.io import read_mrc, write_mrc
from tomolens.orient.files import read_angles_star


def test_cli_simulate_then_recover(tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vol = np.zeros((24, 24, 24), np.float32)
    for _ in range(6):
        vol[tuple(rng.integers(6, 18, 3))] += rng.uniform(0.5, 2.0)
    write_mrc(tmp_path / "map.mrc", ndimage.gaussian_filter(vol, 1.5) * 10, 8.0)
    stack = tmp_path / "p.mrcs"
    assert (
        main(
            [
                "orient",
                "simulate",
                str(tmp_path / "map.mrc"),
                str(stack),
                "--n-projections",
                "30",
                "--noise-variance",
                "1",
            ]
        )
        == 0
    )
    assert read_mrc(stack).data.shape == (30, 24, 24)
    out = tmp_path / "rec.star"
    assert (
        main(
            [
                "orient",
                "recover",
                str(stack),
                "--truth-star",
                str(tmp_path / "p.star"),
                "--reference",
                str(tmp_path / "map.mrc"),
                "--out-star",
                str(out),
                "--reconstruction",
                str(tmp_path / "r.mrc"),
                "--recover-steps",
                "20",
                "--n-anchors",
                "20",
                "--pairs-per-step",
                "400",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mean orientation error" in text and "FSC resolution" in text
    quats, _ = read_angles_star(out)
    assert quats.shape == (30, 4)
    assert read_mrc(tmp_path / "r.mrc").data.shape == (24, 24, 24)
    # a 3D map given where a stack is expected: a clear error, exit status 1
    assert main(["orient", "recover", str(tmp_path / "map.mrc")]) == 2
    assert "not a stack of projections" in capsys.readouterr().err


def test_cli_symmetry_evaluate_and_bad_input(tmp_path, capsys):
    """`orient symmetry` suggests the map's group; `orient evaluate` measures errors up to it."""
    from scipy.spatial.transform import Rotation

    from tomolens.orient.files import read_star_symmetry, write_angles_star
    from tomolens.orient.rotations import random_orientations
    from tomolens.orient.symmetry import Symmetry, _quat_multiply, symmetrise_volume

    rng = np.random.default_rng(1)
    vol = np.zeros((24, 24, 24), np.float32)
    for _ in range(5):
        vol[tuple(rng.integers(7, 17, 3))] += rng.uniform(0.5, 2.0)
    vol = symmetrise_volume(ndimage.gaussian_filter(vol, 1.5) * 10, "C4")
    write_mrc(tmp_path / "c4.mrc", vol, 8.0)
    assert main(["orient", "symmetry", str(tmp_path / "c4.mrc")]) == 0
    assert "suggested symmetry C4" in capsys.readouterr().out
    assert main(["orient", "symmetry", str(tmp_path / "c4.mrc"), "--check", "D7"]) == 0
    assert "probably does not have it" in capsys.readouterr().out

    truth = random_orientations(40, seed=2)
    same = _quat_multiply(truth, Symmetry("C4").quats()[rng.integers(0, 4, 40)])
    same = _quat_multiply(same, Rotation.from_euler("z", 33, degrees=True).as_quat()[None])
    write_angles_star(tmp_path / "truth.star", truth, "p.mrcs")
    write_angles_star(tmp_path / "rec.star", same, "p.mrcs", symmetry="C4")
    assert read_star_symmetry(tmp_path / "rec.star") == "C4"
    assert (
        main(
            [
                "orient",
                "evaluate",
                str(tmp_path / "rec.star"),
                "--truth-star",
                str(tmp_path / "truth.star"),
                "--symmetry",
                "C4",
            ]
        )
        == 0
    )
    assert "up to C4: mean orientation error 0.00°" in capsys.readouterr().out
    assert (
        main(
            [
                "orient",
                "evaluate",
                str(tmp_path / "rec.star"),
                "--truth-star",
                str(tmp_path / "truth.star"),
                "--symmetry",
                "C17x",
            ]
        )
        == 2
    )
    assert "Unknown symmetry" in capsys.readouterr().err
    # projections whose box differs from the map's
    assert (
        main(
            [
                "orient",
                "simulate",
                str(tmp_path / "c4.mrc"),
                str(tmp_path / "p.mrcs"),
                "--n-projections",
                "40",
                "--snr",
                "2",
            ]
        )
        == 0
    )
    assert "SNR 2" in capsys.readouterr().out
    write_mrc(tmp_path / "big.mrc", np.pad(vol, 4), 8.0)
    assert (
        main(
            [
                "orient",
                "evaluate",
                str(tmp_path / "rec.star"),
                "--stack",
                str(tmp_path / "p.mrcs"),
                "--reference",
                str(tmp_path / "big.mrc"),
            ]
        )
        == 2
    )
    assert "pads to a 32³ cube but the images are 24² pixels" in capsys.readouterr().err
    assert (
        main(
            [
                "orient",
                "evaluate",
                str(tmp_path / "p.star"),
                "--stack",
                str(tmp_path / "p.mrcs"),
                "--reference",
                str(tmp_path / "c4.mrc"),
                "--symmetry",
                "C4",
                "--fsc-csv",
                str(tmp_path / "fsc.csv"),
            ]
        )
        == 0
    )
    assert "FSC resolution" in capsys.readouterr().out
    assert (tmp_path / "fsc.csv").read_text().startswith("frequency_per_A,resolution_A,fsc")
