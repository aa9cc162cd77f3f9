"""Pick by example: dense windows = boxes, several targets, bad input, CLI."""

import numpy as np
import pandas as pd
import pytest
import torch
from planted import planted_tomogram

from tomolens.embed.network import EmbedNet3D
from tomolens.embed.pick import dense_embedding, similarity_to_examples
from tomolens.jobs import run_job


@pytest.mark.parametrize("stride", [8, 4])
def test_dense_windows_equal_separately_embedded_boxes(stride):
    # an untrained network maps zero input to zero features, so a window around an isolated
    # object sees exactly the zero padding a separately cut box sees
    torch.manual_seed(0)
    net = EmbedNet3D(16, 32, 4).eval()
    vol = np.zeros((40, 48, 56), np.float32)
    c = np.array([16, 24, 32])
    vol[c[0] - 4 : c[0] + 4, c[1] - 3 : c[1] + 5, c[2] - 5 : c[2] + 3] = np.random.default_rng(0).normal(size=(8, 8, 8))
    dense = run_job(dense_embedding(net, vol, 32, stride))
    assert dense.shape == (16, *(-(-np.array(vol.shape) // stride)))
    padded = np.pad(vol, 16)
    for shift in (0, stride):
        at = c + np.array([0, 0, shift])
        cube = padded[at[0] : at[0] + 32, at[1] : at[1] + 32, at[2] : at[2] + 32]
        with torch.no_grad():
            ref = net(torch.from_numpy(np.ascontiguousarray(cube))[None, None])[0].numpy()
        g = at // stride
        np.testing.assert_allclose(dense[:, g[0], g[1], g[2]], ref, atol=2e-4)


def test_several_targets_and_bad_input(classifier_embedding):
    vol, target, distractor = planted_tomogram()
    examples = np.concatenate([target[:2], distractor[:2]])
    sim = run_job(
        similarity_to_examples(
            vol, examples, ["a", "a", "b", "b"], classifier_embedding, voxel_size_A=10.0, polarity="bright"
        )
    )
    assert sim.targets == ["a", "b"] and sim.similarity.shape[0] == 2
    with pytest.raises(ValueError, match="at least 1 example"):
        run_job(similarity_to_examples(vol, np.empty((0, 3)), model=classifier_embedding, voxel_size_A=10.0))
    with pytest.raises(ValueError, match="outside the tomogram"):
        run_job(
            similarity_to_examples(vol, np.array([[10.0, 500.0, 10.0]]), model=classifier_embedding, voxel_size_A=10.0)
        )
    with pytest.raises(ValueError, match="one per example"):
        run_job(similarity_to_examples(vol, target[:2], ["a"], model=classifier_embedding, voxel_size_A=10.0))


def test_pick_by_example_cli(tmp_path, capsys, classifier_embedding):
    from tomolens.cli import main
    from tomolens.io import (
        ParticleTable,
        read_coordinates,
        write_coordinates,
        write_mrc,
    )
    from tomolens.io.mrc import read_mrc

    vol, target, _ = planted_tomogram()
    write_mrc(tmp_path / "t.mrc", vol, 10.0)
    write_coordinates(tmp_path / "ex.star", ParticleTable(target[:2], pd.DataFrame(index=range(2)), 10.0))
    assert (
        main(
            [
                "pick-by-example",
                "--tomogram",
                str(tmp_path / "t.mrc"),
                "--examples",
                str(tmp_path / "ex.star"),
                "--out",
                str(tmp_path / "picks.star"),
                "--similarity-out",
                str(tmp_path / "sim.mrc"),
                "--threshold",
                "0.5",
                "--polarity",
                "bright",
                "--method",
                "embedding",
                "--embed-model",
                classifier_embedding,
            ]
        )
        == 0
    )
    picks = read_coordinates(tmp_path / "picks.star")
    assert len(picks) >= 1 and {"score", "class"} <= set(picks.features.columns)
    assert picks.features["score"].min() >= 0.5
    sim = read_mrc(tmp_path / "sim.mrc")
    assert sim.data.shape == (8, 16, 16) and abs(sim.voxel_size_A[-1] - 80.0) < 1e-3
    empty = tmp_path / "none.csv"
    empty.write_text("x,y,z\n")
    rc = main(
        [
            "pick-by-example",
            "--tomogram",
            str(tmp_path / "t.mrc"),
            "--examples",
            str(empty),
            "--out",
            str(tmp_path / "p2.star"),
            "--method",
            "embedding",
            "--embed-model",
            classifier_embedding,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "example" in err
