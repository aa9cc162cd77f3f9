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
    assert main(["orient", "simulate", str(tmp_path / "map.mrc"), str(stack), "--n-projections", "30",
                 "--noise-variance", "1"]) == 0
    assert read_mrc(stack).data.shape == (30, 24, 24)
    out = tmp_path / "rec.star"
    assert main(["orient", "recover", str(stack), "--truth-star", str(tmp_path / "p.star"),
                 "--reference", str(tmp_path / "map.mrc"), "--out-star", str(out),
                 "--reconstruction", str(tmp_path / "r.mrc"), "--recover-steps", "20",
                 "--n-anchors", "20", "--pairs-per-step", "400"]) == 0
    text = capsys.readouterr().out
    assert "mean orientation error" in text and "FSC resolution" in text
    quats, _ = read_angles_star(out)
    assert quats.shape == (30, 4)
    assert read_mrc(tmp_path / "r.mrc").data.shape == (24, 24, 24)
    # a 3D map given where a stack is expected: a clear error, exit status 1
    assert main(["orient", "recover", str(tmp_path / "map.mrc")]) == 2
    assert "not a stack of projections" in capsys.readouterr().err
