import json

import numpy as np
import pytest
import torch

from tomolens.cli import build_parser, main
from tomolens.io.mrc import write_mrc
from tomolens.models.card import load_model
from tomolens.models.cli import TRAIN_TASKS, available_tasks


def _spheres(seed, shape=(16, 32, 32)):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    zz, yy, xx = np.indices(shape)
    for i, c in enumerate(rng.uniform(4, np.array(shape) - 4, size=(5, 3)), start=1):
        labels[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9] = i
    return (labels > 0) + rng.normal(0, 0.3, shape).astype(np.float32), labels


def test_train_dispatches_by_task_and_writes_model_with_card(tmp_path, capsys):
    torch.set_num_threads(1)
    assert "detect" in available_tasks() and set(available_tasks()) <= set(TRAIN_TASKS)
    files = []
    for seed, name in ((0, "a"), (1, "b")):
        tomo, lab = _spheres(seed)
        write_mrc(tmp_path / f"{name}.mrc", tomo.astype(np.float32), 10.0)
        write_mrc(tmp_path / f"{name}_lab.mrc", lab, 10.0, is_labels=True)
        files.append((str(tmp_path / f"{name}.mrc"), str(tmp_path / f"{name}_lab.mrc")))
    out = tmp_path / "m.pt"
    argv = [
        "train",
        "--task",
        "detect",
        "--tomograms",
        files[0][0],
        "--labels",
        files[0][1],
        "--val-tomograms",
        files[1][0],
        "--val-labels",
        files[1][1],
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "1",
        "--patch",
        "16",
        "--base-channels",
        "2",
        "--val-patches",
        "2",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch   2" in printed
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["task"] == "detect" and card["voxel_size_A"] == 10.0 and card["arch_kwargs"]["base_channels"] == 2
    assert len(card["extra"]["history"]) == 2 and "postprocess" in card["extra"]
    # the command parsed in-process, not pytest's sys.argv
    assert card["training_command"] == "tomolens " + " ".join(argv)
    net, c = load_model(out, expected_task="detect")
    assert c.sha256 and net.out_channels == 2
    assert out.with_suffix(".ckpt").is_file()


def test_train_needs_a_known_task_and_validation(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--task", "nonsense"])
    tomo, lab = _spheres(0)
    write_mrc(tmp_path / "a.mrc", tomo.astype(np.float32), 10.0)
    write_mrc(tmp_path / "l.mrc", lab, 10.0, is_labels=True)
    rc = main(
        [
            "train",
            "--task",
            "detect",
            "--tomograms",
            str(tmp_path / "a.mrc"),
            "--labels",
            str(tmp_path / "l.mrc"),
            "--out",
            str(tmp_path / "m.pt"),
        ]
    )
    assert rc == 2 and "validation" in capsys.readouterr().err


def test_command_line_comes_from_the_parsed_argv(monkeypatch):
    from tomolens.cli import ARGV_ATTR
    from tomolens.models.cli import command_line

    monkeypatch.setattr("sys.argv", ["pytest", "-q"])
    args = build_parser().parse_args(["train", "--task", "detect", "--out", "a b.pt"])
    setattr(args, ARGV_ATTR, ["train", "--task", "detect", "--out", "a b.pt"])
    assert command_line(args) == "tomolens train --task detect --out 'a b.pt'"
    assert command_line(["info", "x.mrc"]) == "tomolens info x.mrc"
    assert command_line(None) == "tomolens -q"
