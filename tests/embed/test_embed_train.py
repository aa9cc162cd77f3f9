"""Embedding training data, loss, resumable step-budget training, card, CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tomolens.embed.data import (
    EmbedDataConfig,
    StructureBank,
    imaging_filters,
    render_views,
)
from tomolens.embed.train import (
    EmbedTrainConfig,
    recall_at_1,
    save_embedding,
    supcon_loss,
    train_embedding,
)
from tomolens.jobs import run_job
from tomolens.models.card import load_model

TINY = EmbedDataConfig(box=16, canvas=20, maps=(), n_pseudo=6, pseudo_size_nm=(6.0, 12.0), n_filters=4)


def test_views_are_zscored_reproducible_and_labelled():
    bank = StructureBank.build(TINY)
    assert len(bank) == 6 and all(n.split("_")[0] in TINY.families for n in bank.names)
    filters = imaging_filters(TINY, np.random.default_rng(0))[:2]
    x1, lab = render_views(bank, np.array([0, 3]), 3, np.random.default_rng(5), filters)
    x2, _ = render_views(bank, np.array([0, 3]), 3, np.random.default_rng(5), filters)
    assert x1.shape == (6, 1, 16, 16, 16) and x1.dtype == torch.float32
    assert lab.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(x1, x2)
    flat = x1.reshape(6, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(flat.std(1), torch.ones(6), atol=1e-3)
    # noise-free views of one structure differ (orientation, shift, neighbours) but are not noise
    clean, _ = render_views(bank, np.array([1]), 2, np.random.default_rng(1), filters, snr=float("inf"))
    assert not torch.allclose(clean[0], clean[1])


def test_held_out_maps_are_refused():
    with pytest.raises(ValueError, match="held out for testing"):
        EmbedDataConfig(maps=("1bxn", "5mrc")).check()


def test_supcon_loss_prefers_grouped_embeddings_and_recall():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    grouped = torch.nn.functional.normalize(
        torch.eye(3)[labels] + 0.05 * torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1
    )
    mixed = grouped[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert float(supcon_loss(grouped, labels)) < float(supcon_loss(mixed, labels)) - 1.0
    assert recall_at_1(grouped.numpy(), labels.numpy()) == 1.0
    assert recall_at_1(mixed.numpy(), labels.numpy()) == 0.0


def _config(tmp_path, steps, resume=False):
    return EmbedTrainConfig(
        steps=steps,
        structures=3,
        views=2,
        dim=8,
        width=4,
        eval_every=2,
        snapshots=(2,),
        checkpoint=str(tmp_path / "e.ckpt"),
        resume=resume,
        data=TINY,
    )


def test_training_resumes_from_its_checkpoint_and_saves_a_loadable_card(tmp_path, monkeypatch):
    import tomolens.embed.train as train_mod

    small_val = train_mod.validation_set
    monkeypatch.setattr(train_mod, "validation_set", lambda cfg: small_val(cfg, n_structures=3, n_views=2))
    first = run_job(train_embedding(_config(tmp_path, 2)))
    assert first.steps_done == 2 and (tmp_path / "e.ckpt").is_file() and (tmp_path / "e.step2.pt").is_file()
    resumed = run_job(train_embedding(_config(tmp_path, 4, resume=True)))
    assert resumed.steps_done == 4
    assert [h["step"] for h in resumed.history] == [2, 4]
    assert resumed.seconds >= first.seconds
    weights, _ = save_embedding(resumed, str(tmp_path / "emb.pt"), "tomolens train --task embed …")
    net, card = load_model(weights, expected_task="embed")
    assert card.extra["steps"] == 4 and card.arch_kwargs == {"dim": 8, "box": 16, "width": 4}
    assert card.voxel_size_A == 10.0 and card.polarity == "bright"
    assert "held-out maps never" in card.training_data
    out = net(torch.randn(3, 1, 16, 16, 16))
    assert out.shape == (3, 8) and torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="Cannot resume"):
        run_job(train_embedding(replace(_config(tmp_path, 4, resume=True), dim=16)))
    with pytest.raises(ValueError, match="no checkpoint"):
        run_job(train_embedding(replace(_config(tmp_path, 4, resume=True), checkpoint=str(tmp_path / "none"))))


def test_train_cli_task_embed(tmp_path, capsys, monkeypatch):
    import tomolens.embed.train as train_mod
    from tomolens.cli import main

    small_val = train_mod.validation_set
    monkeypatch.setattr(train_mod, "validation_set", lambda cfg: small_val(cfg, n_structures=3, n_views=2))
    monkeypatch.setattr(train_mod, "EmbedDataConfig", lambda **kw: replace(TINY, **kw))
    out = tmp_path / "emb.pt"
    assert (
        main(
            [
                "train",
                "--task",
                "embed",
                "--out",
                str(out),
                "--embed-steps",
                "2",
                "--embed-structures",
                "3",
                "--embed-views",
                "2",
                "--embed-dim",
                "8",
                "--embed-width",
                "4",
                "--embed-pseudo",
                "4",
                "--embed-eval-every",
                "1",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["task"] == "embed" and card["extra"]["steps"] == 2
    assert card["training_command"].startswith("tomolens train --task embed")
    assert main(["train", "--task", "embed", "--out", str(tmp_path / "x.pt"), "--embed-snapshots", "a,b"]) == 2
    assert "--embed-snapshots must be" in capsys.readouterr().err


def test_body_initialised_from_the_shipped_classifier():
    from tomolens.embed.network import EmbedNet3D
    from tomolens.embed.train import init_body

    net = EmbedNet3D(8, 32, 16)
    init_body(net, "classify_phantoms_resnet")
    clf, _ = load_model("classify_phantoms_resnet", expected_task="classify")
    for (name, a), b in zip(net.body.state_dict().items(), clf.body.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="--embed-width 16"):
        init_body(EmbedNet3D(8, 32, 8), "classify_phantoms_resnet")
