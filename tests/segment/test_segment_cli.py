"""``tomolens train --task segment`` on painted label files, then ``tomolens segment`` with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from segment_toy import TOY_CLASSES, make_toy

from tomolens.cli import main
from tomolens.io.mrc import read_mrc, write_mrc
from tomolens.segment.labels import sparse_from_classes


def test_train_and_segment_from_the_command_line(tmp_path, capsys):
    torch.set_num_threads(1)
    for i, (name, slices) in enumerate((("train", [3, 8, 12]), ("val", [5, 10]))):
        tomo, classes = make_toy(i)
        write_mrc(tmp_path / f"{name}.mrc", tomo, 10.0)
        write_mrc(tmp_path / f"{name}_painted.mrc", sparse_from_classes(classes, slices), 10.0, is_labels=True)
    model = tmp_path / "cli_model.pt"
    rc = main(
        [
            "train",
            "--task",
            "segment",
            "--segment-model",
            "2d",
            "--segment-classes",
            ",".join(TOY_CLASSES),
            "--tomograms",
            str(tmp_path / "train.mrc"),
            "--labels",
            str(tmp_path / "train_painted.mrc"),
            "--val-tomograms",
            str(tmp_path / "val.mrc"),
            "--val-labels",
            str(tmp_path / "val_painted.mrc"),
            "--patch",
            "32",
            "--base-channels",
            "4",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "4",
            "--val-patches",
            "4",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--out",
            str(model),
        ]
    )
    assert rc == 0 and model.is_file()
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["task"] == "segment" and card["classes"] == TOY_CLASSES and card["extra"]["model_kind"] == "2d"
    assert card["training_command"].startswith("tomolens ") and len(card["extra"]["history"]) == 2
    out = tmp_path / "seg"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "val.mrc"),
                "--model",
                str(model),
                "--out",
                str(out),
                "--instances",
                "--no-orthogonal",
                "--threads",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    labels = read_mrc(tmp_path / "seg_labels.mrc")
    assert labels.data.shape == (16, 48, 48) and set(np.unique(labels.data)) <= {0, 2, 3}
    assert (tmp_path / "seg_instances.csv").is_file()
    assert "voxels per class" in capsys.readouterr().out
    assert (
        main(
            [
                "segment",
                str(tmp_path / "val.mrc"),
                "--model",
                str(model),
                "--out",
                str(out),
                "--classes",
                "background,membrane",
                "--device",
                "cpu",
            ]
        )
        == 2
    )
    assert "segments ['background', 'membrane', 'filament']" in capsys.readouterr().err


def test_train_from_painted_files_without_validation_files(tmp_path, capsys):
    """Without --val-tomograms a new network trains on every painted voxel; --segment-hold-out strip holds some back."""
    torch.set_num_threads(1)
    tomo, classes = make_toy(0)
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    write_mrc(tmp_path / "t_painted.mrc", sparse_from_classes(classes, [3, 8, 12]), 10.0, is_labels=True)
    common = [
        "train",
        "--task",
        "segment",
        "--segment-classes",
        ",".join(TOY_CLASSES),
        "--tomograms",
        str(tmp_path / "t.mrc"),
        "--labels",
        str(tmp_path / "t_painted.mrc"),
        "--patch",
        "32",
        "--base-channels",
        "4",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--val-patches",
        "4",
        "--threads",
        "1",
        "--device",
        "cpu",
    ]
    for hold_out, fit in (("auto", "none"), ("strip", "strip")):
        model = tmp_path / f"{hold_out}.pt"
        assert main([*common, "--segment-hold-out", hold_out, "--out", str(model)]) == 0
        card = json.loads(model.with_suffix(".json").read_text())
        assert card["metrics"]["validation"] == fit
    printed = capsys.readouterr().out
    assert " fit " in printed and " val " in printed


def test_segment_refuses_an_unknown_voxel_size_the_python_api_warns(tmp_path, capsys):
    """A header voxel size of 0 (unknown): the command refuses (exit 2, one line, nothing written) instead of
    segmenting at a guessed voxel size; --voxel-size-A runs it; the Python function still takes None and says
    that it uses the model's voxel size."""
    import mrcfile

    from tomolens.jobs import run_job
    from tomolens.segment.predict import segment_tomogram

    torch.set_num_threads(1)
    tomo, _ = make_toy(0)
    path = tmp_path / "no_voxel_size.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(tomo[:16, :32, :32], np.float32))
        mrc.voxel_size = 0.0
    assert main(["segment", str(path), "--model", "segment_domain", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "no_voxel_size.mrc: the voxel size is unknown" in err and "--voxel-size-A" in err
    assert not list(tmp_path.glob("a_*"))
    rc = main(["segment", str(path), "--model", "segment_domain", "--voxel-size-A", "10", "--out", str(tmp_path / "b")])
    assert rc == 0
    with pytest.warns(UserWarning, match="Unknown voxel size: using the model's 10 Å"):
        result = run_job(segment_tomogram(read_mrc(path).data, None, model="segment_domain"))
    np.testing.assert_array_equal(result.labels, read_mrc(tmp_path / "b_labels.mrc").data)
