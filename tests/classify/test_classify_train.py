"""Training a classifier briefly on two very different phantoms, saving, loading, predicting."""

from functools import partial

import numpy as np
import pytest
from classify_phantoms import phantom_set

from tomolens.classify.predict import classify_points, model_box
from tomolens.classify.train import TrainConfig, augment_batch, evaluate, save_classifier, train_classifier
from tomolens.jobs import run_job
from tomolens.models.card import load_model, read_card


def test_augmentation_keeps_the_wedge_axis():
    rng = np.random.default_rng(0)
    cube = np.zeros((1, 8, 8, 8), np.float32)
    cube[0, 1, 2, 3] = 1  # one voxel: z must stay at 1 or its mirror 6
    seen = set()
    for _ in range(50):
        out = augment_batch(cube, rng)
        z, y, x = np.argwhere(out[0])[0]
        assert z in (1, 6)
        assert {y, x} <= {2, 3, 4, 5}
        seen.add((z, y, x))
    assert len(seen) > 8  # several symmetries were drawn


def test_seed_cnn_separates_two_phantoms(torch_one_thread):
    names = ["sphere", "rod"]
    xtr, ytr = phantom_set(names, 24, 12, seed=1)
    xva, yva = phantom_set(names, 8, 12, seed=2)
    xte, yte = phantom_set(names, 10, 12, seed=3)
    cfg = TrainConfig(architecture="seed", epochs=4, patience=4, batch_size=8, learning_rate=1e-3, device="cpu")
    result = run_job(train_classifier(xtr, ytr, xva, yva, names, cfg))
    assert result.arch_kwargs == {"n_classes": 2, "box": 12}
    assert evaluate(result.model, xte, yte, names)["accuracy"] >= 0.9


def test_brief_training_separates_two_phantoms(tmp_path, torch_one_thread):
    names = ["sphere", "rod"]
    xtr, ytr = phantom_set(names, 24, 16, seed=1)
    xva, yva = phantom_set(names, 8, 16, seed=2)
    xte, yte = phantom_set(names, 10, 16, seed=3)
    cfg = TrainConfig(architecture="resnet", epochs=6, patience=6, batch_size=8, learning_rate=3e-3, device="cpu")
    progress = []
    result = run_job(train_classifier(xtr, ytr, xva, yva, names, cfg), on_progress=progress.append)
    assert len(progress) == len(result.history) >= 1
    assert set(progress[-1].info) >= {"loss", "val_loss", "val_acc"}
    assert result.history[0]["loss"] > min(h["loss"] for h in result.history)
    metrics = evaluate(result.model, xte, yte, names)
    assert metrics["accuracy"] >= 0.9, metrics
    assert np.sum(metrics["confusion"]) == 20

    save_classifier(result, str(tmp_path / "m.pt"), names, 10.0, "test", "phantoms", {"test": metrics})
    model, card = load_model(tmp_path / "m.pt", expected_task="classify")
    assert card.classes == names and card.patch_size == [16, 16, 16]
    assert card.polarity == "bright"
    assert model_box(card, 10.05, 160) == (16, 1.0)  # within 1 %: no resampling
    assert model_box(card, 14.0) == (16, pytest.approx(10 / 14))
    with pytest.raises(ValueError, match="differs from the 160 Å"):
        model_box(card, 10.0, 320)

    # a tomogram with a sphere and a rod at known positions
    tomo = np.zeros((20, 40, 40), np.float32) + 0.0
    tomo[2:18, 2:18, 2:18] = xte[0]
    tomo[2:18, 22:38, 22:38] = xte[10]
    pts = np.array([[10, 10, 10], [10, 30, 30], [10, 39, 0]])
    # unknown marking off: 16 validation cubes calibrate its threshold too coarsely for this check
    job = partial(classify_points, model=tmp_path / "m.pt", edge="skip", unknown_scale=0.0)
    out = run_job(job(tomo, pts, voxel_size_A=10.0, polarity="bright"))
    f = out.features
    assert list(f["class"][:2]) == ["sphere", "rod"]
    assert out.info["polarity"]["source"] == "user" and not out.info["polarity"]["invert"]
    # the negative, said to be dark, is inverted back: the same probabilities
    neg = run_job(job(-tomo, pts, voxel_size_A=10.0, polarity="dark"))
    np.testing.assert_allclose(neg.features["prob_sphere"], f["prob_sphere"], atol=1e-5)
    # the same tomogram at 5 Å/voxel (twice as many voxels): resampled to the model's 10 Å
    fine = np.kron(tomo, np.ones((2, 2, 2), np.float32))
    out5 = run_job(job(fine, pts * 2 + 1, voxel_size_A=5.0, polarity="bright"))
    assert out5.info["resampled_by"] == 2.0
    assert list(out5.features["class"][:2]) == ["sphere", "rod"]
    assert f["class"][2] == "" and f["confidence"][2] == 0 and list(out.skipped) == [2]
    np.testing.assert_allclose(f[["prob_sphere", "prob_rod"]].to_numpy()[:2].sum(1), 1.0, rtol=1e-6)
    assert out.embedding.shape[0] == 2
    assert read_card(tmp_path / "m.json").metrics["test"]["accuracy"] == metrics["accuracy"]


def test_shipped_classifier_loads_with_an_honest_card():
    from tomolens.models.card import shipped_models
    from tomolens.simulate import builtin_template_names

    assert "classify_phantoms_resnet" in shipped_models("classify")
    model, card = load_model("classify_phantoms_resnet", expected_task="classify")
    assert sorted(card.classes) == sorted(builtin_template_names())
    assert card.voxel_size_A == 10.0 and card.patch_size == [32] * 3
    confusion = np.asarray(card.metrics["test_confusion"])
    assert confusion.shape == (13, 13) and confusion.sum() == card.metrics["test_n"] >= 200
    assert card.metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum(), abs=1e-4)
    logits = model(__import__("torch").zeros(2, 1, 32, 32, 32))
    assert tuple(logits.shape) == (2, 13)


def test_embedding_pools_every_stage_and_keeps_the_logits():
    import torch

    from tomolens.classify.networks import ResNet3DSmall, SeedCNN3D

    torch.manual_seed(0)
    x = torch.randn(3, 1, 32, 32, 32)
    net = ResNet3DSmall(5, 32, width=4).eval()
    with torch.no_grad():
        logits, emb = net.forward_with_embedding(x)
        assert emb.shape == (3, 4 * 7)
        torch.testing.assert_close(logits, net(x))
        torch.testing.assert_close(emb[:, -16:], net.features(x))  # the last stage is the penultimate layer
    seed_net = SeedCNN3D(5, 32).eval()
    with torch.no_grad():
        logits, emb = seed_net.forward_with_embedding(x)
        assert emb.shape == (3, 512)
        torch.testing.assert_close(logits, seed_net(x))


def test_same_seed_same_weights_whatever_the_time_limit(tmp_path, torch_one_thread):
    """The budget is epochs: two runs with one seed give bit-identical weights, a time limit that is not
    reached changes nothing (the learning-rate schedule follows steps), and the card records the budget."""
    import torch

    names = ["sphere", "rod"]
    xtr, ytr = phantom_set(names, 12, 16, seed=1)
    xva, yva = phantom_set(names, 4, 16, seed=2)

    def run(**changes):
        cfg = TrainConfig(
            **{
                **dict(
                    architecture="resnet",
                    epochs=3,
                    patience=3,
                    batch_size=8,
                    device="cpu",
                    seed=5,
                    arch_kwargs={"width": 4},
                ),
                **changes,
            }
        )
        return run_job(train_classifier(xtr, ytr, xva, yva, names, cfg))

    first, second, limited, other = run(), run(), run(max_minutes=600.0), run(seed=6)
    a, b, c, d = (r.model.state_dict() for r in (first, second, limited, other))
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], c[k]) for k in a)
    assert not all(torch.equal(a[k], d[k]) for k in a)
    assert first.budget == {
        **first.budget,
        "epochs": 3,
        "steps_per_epoch": 3,
        "max_steps": 9,
        "epochs_run": 3,
        "steps_run": 9,
        "stopped_by": "epoch budget",
        "max_minutes": None,
    }
    save_classifier(first, str(tmp_path / "m.pt"), names, 10.0)
    assert read_card(tmp_path / "m.json").extra["training_budget"]["early_stopping"]["window"] == 3
