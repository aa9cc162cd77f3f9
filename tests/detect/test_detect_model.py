import json

import numpy as np
import pytest
import torch

from detect_helpers import make_spheres
from tomolens.cli import main
from tomolens.detect import detect_particles
from tomolens.io.coords import ParticleTable, read_coordinates, write_coordinates
from tomolens.io.mrc import read_mrc, write_mrc
from tomolens.jobs import run_job
from tomolens.models.card import ModelCard, ModelFileError, load_model, save_model
from tomolens.models.unet import UNet3D


@pytest.fixture
def tiny(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = UNet3D(1, 2, base_channels=2, depth=2)
    card = ModelCard(
        name="tiny",
        task="detect",
        architecture="tomolens.models.unet:UNet3D",
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": 2, "depth": 2},
        classes=["mask", "centre"],
        voxel_size_A=20.0,
        patch_size=[16, 16, 16],
        extra={"postprocess": {"mask_threshold": 0.2, "centre_threshold": 0.0}},
    )
    weights, _ = save_model(net, card, tmp_path / "tiny.pt")
    return weights


def test_load_rejects_tampered_weights_and_non_models(tiny, tmp_path):
    net, card = load_model(tiny, expected_task="detect")
    assert card.classes == ["mask", "centre"]
    data = bytearray(tiny.read_bytes())
    data[-10] ^= 0xFF
    tiny.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match its card"):
        load_model(tiny)
    junk = tmp_path / "junk.json"
    junk.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelFileError, match="not a tomolens model"):
        load_model(junk)


def test_wrong_task_and_bad_input(tiny):
    with pytest.raises(ModelFileError, match="'detect' model"):
        load_model(tiny, expected_task="segment")
    with pytest.raises(ValueError, match="3D tomogram"):
        run_job(detect_particles(np.zeros((64, 64), np.float32), 10.0, model=str(tiny)))


def test_detect_rescales_to_model_voxel_size_and_maps_back(tiny):
    tomo, _, _ = make_spheres(shape=(24, 40, 40), n=6, seed=5)
    with pytest.warns(UserWarning, match="Unknown voxel size"):
        res = run_job(detect_particles(tomo, None, model=str(tiny)))
    assert res.voxel_size_A == 20.0 and res.map_voxel_size_A == 20.0
    res = run_job(detect_particles(tomo, 10.0, model=str(tiny), device="cpu"))
    assert res.prob_maps.shape == (2, 12, 20, 20)  # the model works at 20 Å
    assert res.map_voxel_size_A == 20.0
    assert res.mask.shape == tomo.shape and res.instances.shape == tomo.shape
    assert res.params["mask_threshold"] == 0.2  # the card's tuned default
    assert len(res.particles) == res.instances.max()
    if len(res.particles):
        assert np.all(res.particles.coords_zyx <= np.array(tomo.shape) - 1)
        assert set(["score", "volume_A3", "instance_id"]) <= set(res.particles.features.columns)


def test_cli_detect_and_evaluate(tiny, tmp_path, capsys):
    tomo, _, centres = make_spheres(shape=(24, 40, 40), n=6, seed=5)
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    assert (
        main(
            ["detect", str(tmp_path / "t.mrc"), "--model", str(tiny), "--out", str(tmp_path / "res"), "--format", "csv"]
        )
        == 0
    )
    labels = read_mrc(tmp_path / "res_instances.mrc")
    assert labels.is_labels and labels.data.shape == tomo.shape
    found = read_coordinates(tmp_path / "res_centres.csv")
    assert len(found) == int(labels.data.max())
    truth = ParticleTable(centres, pixel_size_A=10.0)
    write_coordinates(tmp_path / "truth.star", truth)
    write_coordinates(tmp_path / "pred.star", ParticleTable(centres[:4] + 0.5, pixel_size_A=10.0))
    capsys.readouterr()
    assert (
        main(["evaluate", str(tmp_path / "pred.star"), str(tmp_path / "truth.star"), "--tolerance-A", "10", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["true_positives"] == 4 and out["recall"] == pytest.approx(4 / 6) and out["precision"] == 1.0
    assert main(["evaluate", str(tmp_path / "pred.star"), str(tmp_path / "truth.star")]) == 2  # no tolerance
