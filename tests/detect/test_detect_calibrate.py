"""Calibrated detection scores (issue 19): one default threshold across tomograms of different SNR."""

import json

import numpy as np
import pandas as pd
import pytest

from detect_helpers import make_spheres
from tomolens.cli import main
from tomolens.detect import DetectionResult, detection_targets, postprocess
from tomolens.detect.calibrate import (
    FEATURES,
    best_threshold,
    calibrated_scores,
    check_calibration,
    fit_calibration,
    mean_f1_at,
)
from tomolens.io.coords import ParticleTable, write_coordinates
from tomolens.io.mrc import write_mrc


def _run(rng, n_true, n_false, scale):
    """Candidates of one run: true ones score higher than false ones, everything times ``scale`` (the SNR)."""
    true = rng.uniform(0.6, 1.0, n_true)
    false = rng.uniform(0.2, 0.7, n_false)
    raw = np.concatenate([true, false]) * scale
    table = pd.DataFrame(
        {
            "score": raw,
            "centre_value": np.sqrt(raw),
            "mask_probability": np.sqrt(raw),
            "volume_A3": 4 / 3 * np.pi * 50.0**3 * rng.uniform(0.8, 1.2, len(raw)),
            "radius_A": np.full(len(raw), 50.0),
        }
    )
    hits = np.r_[np.ones(n_true, bool), np.zeros(n_false, bool)]
    return table, hits, n_true


def test_calibration_gives_one_threshold_for_runs_of_different_scale():
    rng = np.random.default_rng(0)
    # a clean run (scores near 1) and noisy runs (the same separation at a third of the scale)
    runs = [_run(rng, 60, 60, s) for s in (1.0, 0.35, 1.0, 0.35, 0.6)]
    fit = fit_calibration(runs)
    assert fit["features"] == list(FEATURES) and 0 < fit["min_score"] < 1
    loo = fit["leave_one_out"]
    calibrated = np.mean([r["calibrated_f1"] for r in loo])
    raw = np.mean([r["raw_f1"] for r in loo])
    # a raw threshold cannot serve both scales; the run-relative features can
    assert calibrated > 0.85 and calibrated > raw + 0.1
    checked = check_calibration(fit)
    probs = calibrated_scores(runs[0][0], checked)
    assert probs.shape == (120,) and np.all((probs >= 0) & (probs <= 1))
    assert probs[:60].mean() > 0.7 > 0.3 > probs[60:].mean()


def test_f1_at_a_threshold_counts_missed_particles():
    scores, hits = [np.array([0.9, 0.8, 0.1])], [np.array([True, False, True])]
    # keep 2 of which 1 is true, 4 true particles: F1 = 2·1 / (2 + 4)
    assert mean_f1_at(scores, hits, [4], 0.5) == pytest.approx(2 / 6)
    assert best_threshold(scores, hits, [2], grid=(0.05, 0.5, 0.85))[0] == 0.05


def test_bad_calibrations_are_refused_with_a_clear_message():
    rng = np.random.default_rng(1)
    good = fit_calibration([_run(rng, 20, 20, s) for s in (1.0, 0.5)])
    with pytest.raises(ValueError, match="features"):
        check_calibration({**good, "features": ["score"]})
    with pytest.raises(ValueError, match="'coef'"):
        check_calibration({**good, "coef": [1.0, float("nan"), 0, 0, 0, 0]})
    with pytest.raises(ValueError, match="'intercept'"):
        check_calibration({**good, "intercept": "x"})
    with pytest.raises(ValueError, match="'scale'"):
        check_calibration({**good, "scale": [0.0] * len(FEATURES)})
    with pytest.raises(ValueError, match="not a mapping"):
        check_calibration([1, 2])
    with pytest.raises(ValueError, match="at least 2 tomograms"):
        fit_calibration([_run(rng, 5, 5, 1.0)])
    with pytest.raises(ValueError, match="both true and false"):
        table, hits, n = _run(rng, 10, 0, 1.0)
        fit_calibration([(table, hits, n), (table, hits, n)])


def test_postprocess_applies_the_calibration_and_min_score_to_it():
    _, inst, centres = make_spheres(n=10, min_sep=10.0, seed=1)
    maps = detection_targets(inst)
    base = {"particle_radius_A": 40.0}
    _, _, raw = postprocess(maps, 10.0, base)
    rng = np.random.default_rng(2)
    cal = check_calibration(fit_calibration([_run(rng, 20, 20, s) for s in (1.0, 0.5)]))
    mask, instances, table = postprocess(maps, 10.0, base, cal)
    assert len(table) == len(raw) == len(centres)
    np.testing.assert_allclose(table.features["raw_score"], raw.features["score"])
    np.testing.assert_allclose(table.features["score"], calibrated_scores(raw.features, cal))
    assert list(table.features.columns[:4]) == ["score", "raw_score", "volume_A3", "instance_id"]
    # min_score applies to the calibrated score, on re-application too
    cut = float(np.median(table.features["score"]))
    result = DetectionResult(maps, mask, instances, table, 10.0, 10.0, base, cal)
    kept = result.reapply(min_score=cut).particles
    assert len(kept) == int(np.sum(table.features["score"] >= cut)) and "raw_score" in kept.features
    np.testing.assert_array_equal(np.sort(kept.features["instance_id"]), np.arange(1, len(kept) + 1))


def _dataset(folder, seeds_noise):
    entries = []
    for i, (seed, noise) in enumerate(seeds_noise):
        tomo, _, centres = make_spheres(shape=(32, 96, 96), radius=5, n=40, noise=noise, seed=seed)
        sub = folder / f"tomo_{i}"
        sub.mkdir(parents=True)
        write_mrc(sub / "tomogram.mrc", tomo, 10.0)
        features = pd.DataFrame({"class_name": ["macromolecule"] * len(centres), "radius_A": 50.0})
        write_coordinates(sub / "particles.csv", ParticleTable(centres, features, 10.0))
        entries.append({"folder": sub.name, "seed": seed})
    (folder / "manifest.json").write_text(json.dumps({"tomograms": entries}))


def test_cli_calibrates_a_copy_of_the_model_and_detect_uses_it(tmp_path, capsys):
    _dataset(tmp_path / "set", [(1, 1.5), (2, 2.0)])
    out = tmp_path / "cal.pt"
    data = ["--data", str(tmp_path / "set")]
    assert main(["detect-calibrate", "--model", "detect_default", *data, "--out", str(out), "--mode", "calibrate"]) == 0
    assert "calibrated scores, default min_score" in capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["extra"]["score_calibration"]["features"] == list(FEATURES)
    fit = card["extra"]["score_calibration_fit"]
    assert len(fit["leave_one_out"]) == 2 and fit["min_score"] == card["extra"]["postprocess"]["min_score"]
    assert fit["score"] == "calibrated" and set(fit["leave_one_out_mean_f1"]) == {"calibrated", "raw"}
    # threshold only: raw scores, the card gets the best raw min_score and no calibration
    raw = tmp_path / "raw.pt"
    assert main(["detect-calibrate", "--model", "detect_default", *data, "--out", str(raw), "--mode", "threshold"]) == 0
    raw_card = json.loads(raw.with_suffix(".json").read_text())["extra"]
    assert "score_calibration" not in raw_card and raw_card["score_calibration_fit"]["score"] == "raw"
    assert raw_card["postprocess"]["min_score"] == raw_card["score_calibration_fit"]["min_score"]
    tomo, _, _ = make_spheres(shape=(32, 96, 96), radius=5, n=40, noise=1.5, seed=3)
    write_mrc(tmp_path / "t.mrc", tomo, 10.0)
    assert (
        main(["detect", str(tmp_path / "t.mrc"), "--model", str(out), "--out", str(tmp_path / "r"), "--format", "csv"])
        == 0
    )
    picks = pd.read_csv(tmp_path / "r_centres.csv")
    assert "raw_score" in picks and picks["score"].between(fit["min_score"], 1).all()
    # the source model cannot be overwritten; a tampered calibration is refused before the network runs
    assert main(["detect-calibrate", "--model", str(out), "--data", str(tmp_path / "set"), "--out", str(out)]) == 2
    card["extra"]["score_calibration"]["coef"] = [1.0]
    out.with_suffix(".json").write_text(json.dumps(card))
    assert main(["detect", str(tmp_path / "t.mrc"), "--model", str(out), "--out", str(tmp_path / "r2")]) == 2
    assert "score calibration" in capsys.readouterr().err


def test_calibration_runs_detect_the_central_part_and_count_its_particles(tmp_path):
    from tomolens.detect.calibrate_cli import dataset_runs
    from tomolens.io.coords import read_coordinates
    from tomolens.models.card import load_model

    _dataset(tmp_path / "set", [(1, 1.0)])
    truth = read_coordinates(tmp_path / "set" / "tomo_0" / "particles.csv")
    model = load_model("detect_default")  # 20 Å: 8×24×24 of its voxels are 16×48×48 of the 10 Å tomogram
    ((_, whole, _, n_all),) = dataset_runs(model, [tmp_path / "set"], max_shape=None)
    ((_, part, hits, n_part),) = dataset_runs(model, [tmp_path / "set"], max_shape=(8, 24, 24))
    lo, hi = np.array([8, 24, 24]), np.array([24, 72, 72])
    inside = np.all((truth.coords_zyx >= lo - 0.5) & (truth.coords_zyx < hi - 0.5), axis=1)
    assert n_all == len(truth) and n_part == int(inside.sum()) < n_all
    assert len(part) < len(whole) and len(hits) == len(part)
