"""Model cards cannot run code: only registered architectures with checked arguments, sha256 required."""

import json

import numpy as np
import pytest
import torch

from tomolens.cli import main
from tomolens.models.card import NETWORK_REGISTRY, ModelCard, ModelFileError, build_network, load_model, save_model
from tomolens.models.training import TrainConfig
from tomolens.models.unet import UNet3D


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    card = ModelCard(
        name="tiny",
        task="detect",
        architecture="tomolens.models.unet:UNet3D",
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": 2, "depth": 1},
        classes=["mask", "centre"],
        voxel_size_A=20.0,
        patch_size=[8, 8, 8],
    )
    weights, card_path = save_model(UNet3D(1, 2, base_channels=2, depth=1), card, tmp_path / "tiny.pt")
    return weights, card_path


def _edit_card(card_path, **changes):
    raw = json.loads(card_path.read_text())
    raw.update(changes)
    card_path.write_text(json.dumps(raw))


def test_card_naming_write_mrc_cannot_overwrite_a_file(tiny, tmp_path):
    """The reported attack: a card whose 'architecture' is tomolens.io.mrc:write_mrc."""
    weights, card_path = tiny
    victim = tmp_path / "precious.mrc"
    victim.write_bytes(b"user data")
    _edit_card(card_path, architecture="tomolens.io.mrc:write_mrc", arch_kwargs={"path": str(victim), "data": [[0.0]]})
    with pytest.raises(ModelFileError, match="Unknown architecture 'tomolens.io.mrc:write_mrc'"):
        load_model(weights)
    assert victim.read_bytes() == b"user data"
    tomo = tmp_path / "t.mrc"
    from tomolens.io.mrc import write_mrc

    write_mrc(tomo, np.zeros((8, 8, 8), np.float32), 20.0)
    code = main(["detect", str(tomo), "--model", str(card_path), "--out", str(tmp_path / "o.star")])
    assert code == 2 and victim.read_bytes() == b"user data"


@pytest.mark.parametrize(
    "architecture",
    ["tomolens.cli:main", "os:system", "tomolens.models.unet:_UNet", "tomolens.models.unet:UNet3D ", 42, None],
)
def test_only_registered_architectures_are_built(architecture):
    card = ModelCard(name="x", task="detect", architecture=architecture)
    with pytest.raises(ModelFileError, match="Unknown architecture"):
        build_network(card)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": 1, "evil": "rm -rf"}, "no argument 'evil'"),
        ({"base_channels": 10**9}, "base_channels=1000000000 is invalid: it must be an integer from 1 to 256"),
        ({"depth": "2"}, "depth='2' is invalid"),
        ({"depth": True}, "depth=True is invalid"),
        ({"dropout": float("nan")}, "dropout=nan is invalid"),
        ({"batch_norm": 1}, "batch_norm=1 is invalid"),
    ],
)
def test_arguments_are_checked(kwargs, message):
    card = ModelCard(name="x", task="detect", architecture="tomolens.models.unet:UNet3D", arch_kwargs=kwargs)
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(")):
        build_network(card)


def test_every_registered_architecture_builds_with_its_shipped_arguments():
    from tomolens.models.card import read_card, shipped_models

    used = set()
    for card_path in shipped_models().values():
        card = read_card(card_path)
        assert build_network(card) is not None
        used.add(card.architecture)
    assert used <= set(NETWORK_REGISTRY)
    orient = ModelCard(
        name="o",
        task="orient",
        architecture="tomolens.orient.network:SiameseDistanceNet",
        arch_kwargs={"channels": [4, 4, 4]},
    )
    with pytest.raises(ModelFileError, match="a list of 4 integers"):
        build_network(orient)


@pytest.mark.parametrize("sha", ["", None, "abc", 0])
def test_card_without_sha256_is_refused(tiny, sha):
    weights, card_path = tiny
    _edit_card(card_path, sha256=sha)
    with pytest.raises(ModelFileError, match="no valid sha256"):
        load_model(weights)


def test_resume_from_a_bad_checkpoint_is_one_clear_error(tmp_path):
    from tomolens.models.sampling import TrainingPair
    from tomolens.models.training import train_model
    from tomolens.jobs import run_job

    rng = np.random.default_rng(0)
    pair = TrainingPair(
        rng.normal(size=(8, 16, 16)).astype(np.float32), (rng.random((8, 16, 16)) > 0.5).astype(np.int64)
    )
    for content in (b"not a checkpoint", None):
        ckpt = tmp_path / "bad.ckpt"
        if content is None:
            torch.save({"model": {}}, ckpt)
        else:
            ckpt.write_bytes(content)
        config = TrainConfig(epochs=1, steps_per_epoch=1, checkpoint=str(ckpt), resume=True)
        with pytest.raises(ValueError, match="Cannot resume: bad.ckpt is not a"):
            run_job(
                train_model(UNet3D(1, 2, base_channels=2, depth=1), [pair], [pair], torch.nn.CrossEntropyLoss(), config)
            )
