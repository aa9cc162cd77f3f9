"""``tomolens train --task detect --points …`` end to end, and its bad input."""

import json

import numpy as np
import pytest

from detect_helpers import make_spheres, save_small_detector
from tomolens.cli import main
from tomolens.io.coords import ParticleTable, read_coordinates, write_coordinates
from tomolens.io.mrc import write_mrc
from tomolens.models.card import read_card


@pytest.fixture
def files(tmp_path):
    save_small_detector(tmp_path / "small.pt")
    tomo, _, centres = make_spheres(shape=(24, 48, 48), radius=3.0, n=16, noise=0.3, seed=1)
    write_mrc(tmp_path / "t.mrc", -tomo, 20.0)  # dark, as raw cryo-ET
    write_coordinates(tmp_path / "picks.star", ParticleTable(centres[:10], pixel_size_A=20.0))
    return tmp_path, centres


def test_train_from_picks_then_detect_and_batch(files, capsys):
    d, centres = files
    assert (
        main(
            [
                "train",
                "--task",
                "detect",
                "--points",
                str(d / "picks.star"),
                "--tomogram",
                str(d / "t.mrc"),
                "--radius-A",
                "60",
                "--region",
                "0:24,0:48,0:48",
                "--steps",
                "20",
                "--minutes",
                "5",
                "--start-from",
                str(d / "small.pt"),
                "--out",
                str(d / "mine"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "step 20:" in out and "wrote" in out
    card = read_card(d / "mine.json")
    info = card.extra["points_training"]
    assert info["region_zyx_voxels"] == [[0, 24], [0, 48], [0, 48]] and info["clicks"] == 10
    assert info["polarity_decision"]["tomogram"] == "dark" and info["clicks_source"].endswith("picks.star")
    assert card.training_command.startswith("tomolens train --task detect --points")
    assert main(["detect", str(d / "t.mrc"), "--model", str(d / "mine.pt"), "--out", str(d / "det")]) == 0
    assert (d / "det_centres.star").is_file()
    (d / "preset.json").write_text(json.dumps({"task": "detect", "params": {"model": str(d / "mine.pt")}}))
    assert main(["batch", str(d / "preset.json"), str(d / "t.mrc"), "--out", str(d / "batch"), "--no-progress"]) == 0
    written = list((d / "batch").rglob("*_detected.star"))
    assert written and len(read_coordinates(written[0])) == len(read_coordinates(d / "det_centres.star"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--points", "{d}/none.star"], "none.star"),
        (["--points", "{d}/far.star"], "outside the tomogram"),
        (["--points", "{d}/few.star"], "at least 5"),
        (["--points", "{d}/picks.star", "--radius-A", "0"], "particle radius must be a positive"),
        (["--points", "{d}/picks.star", "--radius-A=-3"], "particle radius must be a positive"),
        (["--points", "{d}/picks.star", "--region", "0:24,0:99,0:48"], "within 0:48"),
    ],
)
def test_bad_input_is_one_line_exit_2(files, capsys, extra, message):
    d, centres = files
    write_coordinates(d / "far.star", ParticleTable(np.vstack([centres[:5], [[5, 5, 300]]]), pixel_size_A=20.0))
    write_coordinates(d / "few.star", ParticleTable(centres[:3], pixel_size_A=20.0))
    args = [
        "train",
        "--task",
        "detect",
        "--tomogram",
        str(d / "t.mrc"),
        "--steps",
        "10",
        "--start-from",
        str(d / "small.pt"),
        "--out",
        str(d / "bad"),
    ] + [a.format(d=d) for a in extra]
    with pytest.raises(SystemExit) if any("radius-A" in a for a in extra) else _no_raise() as caught:
        code = main(args)
    err = capsys.readouterr().err
    assert (caught.value.code if caught else code) == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (d / "bad.pt").exists()


class _no_raise:
    value = None

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_one_pick_file_per_kind_with_its_own_radius(files):
    d, centres = files
    write_coordinates(d / "big.star", ParticleTable(centres[:5], pixel_size_A=20.0))
    write_coordinates(d / "small.csv", ParticleTable(centres[5:10], pixel_size_A=20.0))
    assert (
        main(
            [
                "train",
                "--task",
                "detect",
                "--points",
                str(d / "big.star"),
                str(d / "small.csv"),
                "--tomogram",
                str(d / "t.mrc"),
                "--radius-A",
                "big=60",
                "--steps",
                "10",
                "--start-from",
                str(d / "small.pt"),
                "--out",
                str(d / "kinds"),
            ]
        )
        == 0
    )
    info = read_card(d / "kinds.json").extra["points_training"]
    assert info["radius_source"] == {"big": "typed", "small": "estimated"} and info["radius_A"]["big"] == 60.0
    assert info["clicks"] == 10
    assert info["kinds"] == {
        "big": {"clicks": 5, "source": str(d / "big.star")},
        "small": {"clicks": 5, "source": str(d / "small.csv")},
    }


def test_points_with_another_task_is_refused(files, capsys):
    d, _ = files
    assert main(["train", "--task", "segment", "--points", str(d / "picks.star"), "--out", str(d / "s")]) == 2
    assert "use --task detect" in capsys.readouterr().err
