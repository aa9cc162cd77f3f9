"""Unknown particles: feature statistics on the card, the distance, the threshold, bad cards."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from classify_phantoms import labelled_tomogram, phantom_set

from tomolens.classify.predict import classify_points, features_table
from tomolens.classify.unknown import (
    CARD_KEY,
    UNKNOWN_CLASS,
    UnknownModel,
    fit_unknown_model,
    mark_unknown,
    unknown_model_from_card,
)
from tomolens.jobs import run_job
from tomolens.models.card import ModelCard, load_model


def _clusters(seed: int, n: int, means: np.ndarray, scale: np.ndarray):
    """Gaussian clusters around ``means`` (C, F) with per-dimension spread ``scale`` (F,)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(means)), n)
    return means[y] + rng.standard_normal((len(y), means.shape[1])) * scale, y


@pytest.fixture
def three_classes():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 5, (3, 24))
    scale = np.geomspace(0.05, 3.0, 24)  # features of very different spreads, as a network's
    x, y = _clusters(1, 60, means, scale)
    xv, yv = _clusters(2, 20, means, scale)
    return means, scale, fit_unknown_model(x, y, 3, xv, yv, rank=6)


def test_far_features_are_unknown_and_near_ones_are_not(three_classes):
    means, scale, model = three_classes
    assert model.components.shape == (6, 24) and model.class_means.shape == (3, 24)
    near = _clusters(3, 17, means, scale)[0][:50]  # new particles of the known classes
    far = means[:1] + np.zeros((50, 24))
    far[:, 0] += 1.0  # 20 σ along the tightest direction: small in Euclidean terms, huge in Mahalanobis
    table = features_table(np.full((100, 3), 1 / 3), np.arange(100), 100, ["a", "b", "c"])
    info = mark_unknown(table, np.concatenate([near, far]), np.arange(100), model, 1.0)
    flagged = table["class"].astype(str).to_numpy() == UNKNOWN_CLASS
    assert flagged[50:].all()
    assert flagged[:50].mean() <= 0.1  # the threshold is the validation's 99th percentile
    assert info["n_unknown"] == flagged.sum() and (table["class_id"][flagged] == -1).all()
    assert np.all(table["ood_distance"][50:] > model.threshold)
    # a far vector in Euclidean terms along a direction where classes vary widely stays known
    wide = means[:1] + np.zeros((1, 24))
    wide[0, -1] += 3.0  # 1 σ of the widest direction, 3 × larger than the move above
    assert model.distances(wide)[0] < model.threshold


def test_scale_zero_marks_nothing_and_keeps_the_distance(three_classes):
    means, _, model = three_classes
    table = features_table(np.full((2, 3), 1 / 3), np.arange(2), 2, ["a", "b", "c"])
    info = mark_unknown(table, means[:2] + 100.0, np.arange(2), model, 0.0)
    assert info["n_unknown"] == 0 and UNKNOWN_CLASS not in set(table["class"].astype(str))
    assert np.all(table["ood_distance"] > model.threshold)


def test_statistics_round_trip_through_json(three_classes):
    _, _, model = three_classes
    back = UnknownModel.from_dict(json.loads(json.dumps(model.to_dict())), n_classes=3)
    probe = np.random.default_rng(5).normal(0, 5, (20, 24))
    np.testing.assert_allclose(back.distances(probe), model.distances(probe), rtol=1e-4)
    assert back.threshold == pytest.approx(model.threshold, rel=1e-5) and back.n_calibration == 60


@pytest.mark.parametrize(
    "change, message",
    [
        ({"class_means": [[0.0, 1.0]] * 3}, "feature_scales has shape (24,); expected (2,)"),
        ({"class_means": "abc"}, "not an array of numbers"),
        ({"threshold": float("nan")}, "non-finite"),
        ({"threshold": -1.0}, "positive"),
        ({"component_variances": [1.0]}, "component_variances has shape (1,); expected (6,)"),
        ({"components": None}, "not an array of numbers"),
        ({"method": "cosine"}, "method"),
        ({"quantile": 1.5}, "below 1"),
    ],
)
def test_malformed_statistics_are_refused_with_a_note(three_classes, change, message):
    _, _, model = three_classes
    raw = {**model.to_dict(), **change}
    card = ModelCard("m", "classify", "x", classes=["a", "b", "c"], extra={CARD_KEY: raw})
    got, note = unknown_model_from_card(card)
    assert got is None and note.startswith("unknown detection unavailable") and message in note
    with pytest.raises(ValueError, match=re.escape(message)):
        UnknownModel.from_dict(raw, 3)


def test_card_without_statistics_or_wrong_class_count(three_classes):
    _, _, model = three_classes
    got, note = unknown_model_from_card(ModelCard("old", "classify", "x", classes=["a", "b", "c"]))
    assert got is None and "no feature statistics" in note and "\n" not in note
    got, note = unknown_model_from_card(
        ModelCard("m", "classify", "x", classes=["a", "b"], extra={CARD_KEY: model.to_dict()})
    )
    assert got is None and "3 rows for 2 classes" in note
    rot = model.to_dict()
    rot["components"] = (2 * np.asarray(rot["components"])).tolist()
    with pytest.raises(ValueError, match="orthonormal"):
        UnknownModel.from_dict(rot, 3)


def test_fit_refuses_too_little_data():
    x, y = np.zeros((6, 4)), np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="validation particles"):
        fit_unknown_model(x, y, 2, x, y)
    with pytest.raises(ValueError, match="at least 2 training particles"):
        fit_unknown_model(x, y, 3, np.zeros((20, 4)), np.zeros(20, int))


def test_training_writes_statistics_and_an_unseen_shape_is_called_unknown(tmp_path, torch_one_thread):
    from tomolens.classify.train import TrainConfig, save_classifier, train_classifier

    names = ["sphere", "rod", "ring"]
    xtr, ytr = phantom_set(names, 20, 16, seed=11)
    xva, yva = phantom_set(names, 5, 16, seed=12)
    cfg = TrainConfig(epochs=5, patience=5, batch_size=8, learning_rate=3e-3, device="cpu", seed=11)
    result = run_job(train_classifier(xtr, ytr, xva, yva, names, cfg))
    assert result.unknown["n_calibration"] == 15 and len(result.unknown["class_means"]) == 3
    save_classifier(result, str(tmp_path / "m.pt"), names, 10.0)
    _, card = load_model(tmp_path / "m.pt", expected_task="classify")
    stats, note = unknown_model_from_card(card)
    assert note == "" and stats.feature_dim == 7 * 16 and stats.threshold > 0

    # a tomogram of the three trained shapes and a cross, a shape the classifier never saw
    tomo, centres, truth = labelled_tomogram([*names, "cross"], 6, 16, seed=31)
    out = run_job(classify_points(tomo, centres, tmp_path / "m.pt", 10.0, polarity="bright"))
    dist = out.features["ood_distance"].to_numpy()
    called = out.features["class"].astype(str).to_numpy()
    assert out.info["unknown"]["available"] and np.all(np.isfinite(dist))
    np.testing.assert_array_equal(called == UNKNOWN_CLASS, dist > stats.threshold)
    cross = truth == "cross"
    # the crosses lie farther than the trained shapes (pairwise, as an AUROC) and the farthest pass the threshold
    assert np.mean(dist[cross][:, None] > dist[~cross][None, :]) >= 0.9
    assert np.sum(called[cross] == UNKNOWN_CLASS) >= 1 and np.sum(called[~cross] == UNKNOWN_CLASS) == 0
    with pytest.raises(ValueError, match="unknown_scale"):
        run_job(classify_points(tomo, centres, tmp_path / "m.pt", 10.0, unknown_scale=-1.0))

    # a card whose statistics were tampered with: classification still works, without unknowns
    card_path = tmp_path / "m.json"
    raw = json.loads(card_path.read_text())
    raw["extra"][CARD_KEY]["class_means"] = [[1.0]]
    card_path.write_text(json.dumps(raw))
    out = run_job(classify_points(tomo, centres, tmp_path / "m.pt", 10.0, polarity="bright"))
    assert not out.info["unknown"]["available"] and "invalid" in out.info["unknown"]["message"]
    assert "ood_distance" not in out.features and UNKNOWN_CLASS not in set(out.features["class"].astype(str))
    assert isinstance(out.features, pd.DataFrame)


def test_a_classified_file_opens_with_unknown_particles_grey():
    from tomolens._napari.layers import UNKNOWN_COLOUR, points_layer_data
    from tomolens.io.coords import ParticleTable

    classes = ["a", "b", UNKNOWN_CLASS] + [f"c{i}" for i in range(20)]  # more classes than the palette
    table = ParticleTable(np.zeros((len(classes), 3)), pd.DataFrame({"class": classes}), 10.0)
    _, kwargs, _ = points_layer_data(table)
    cycle = kwargs["face_color_cycle"]
    assert kwargs["face_color"] == "class" and cycle[UNKNOWN_CLASS] == UNKNOWN_COLOUR
    assert UNKNOWN_COLOUR not in [cycle[c] for c in classes if c != UNKNOWN_CLASS]
    assert not {"#7f7f7f", "#c7c7c7"} & set(cycle.values())  # no class looks like an unknown one


def test_the_shipped_classifier_card_has_valid_statistics():
    _, card = load_model("classify_phantoms_resnet", expected_task="classify")
    stats, note = unknown_model_from_card(card)
    assert note == "" and stats.class_means.shape == (13, 112) and stats.components.shape == (16, 112)
    assert stats.n_calibration == 630 and "--classify-calibrate" in card.extra["unknown_calibration"]
