"""Calibrated detection scores: one default threshold for tomograms of any SNR (issue 19).

The detector's raw score (mean mask probability × centre-map peak) is not a probability, and
its scale moves with the data: the best ``min_score`` was 0 on the legacy simulator and 0.3–0.4
on the domain-randomised and shifted sets.  A **calibration** maps every candidate's raw
outputs to the probability that it is a true particle, by logistic regression on features of
the candidate *and of its run* (so that a weaker, noisier tomogram moves the mapping with it):

- ``raw_score``, ``centre_value``, ``mask_probability`` — the network's outputs at the pick;
- ``log_relative_score`` — log of the raw score over the median raw score of the run's candidates;
- ``score_quantile`` — the raw score's rank among the run's candidates (0 … 1);
- ``log_fill`` — log of the instance volume over the volume of a sphere of its radius.

The calibration is fitted on simulated tomograms with known particles that no benchmark scores
(:func:`fit_calibration`; ``tomolens detect-calibrate``), together with the one ``min_score`` that
gives the best mean F1 over them; both go on the model card (``extra["score_calibration"]`` and
``extra["postprocess"]["min_score"]``).  A card's calibration is untrusted input: it is checked
(:func:`check_calibration`) before use.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Features of a candidate, in the order of the calibration's coefficients.
FEATURES = ("raw_score", "centre_value", "mask_probability", "log_relative_score", "score_quantile", "log_fill")

#: ``min_score`` values tried when choosing the default threshold of calibrated scores.
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
#: ``min_score`` values tried for raw scores (mean mask probability × centre peak).
RAW_THRESHOLDS = tuple(np.round(np.arange(0.0, 0.9, 0.05), 2))


def candidate_features(table: pd.DataFrame) -> np.ndarray:
    """The :data:`FEATURES` of every candidate of one run.

    Parameters
    ----------
    table : DataFrame
        One row per candidate with ``score`` (raw), ``centre_value``, ``mask_probability``,
        ``volume_A3`` and ``radius_A``.

    Returns
    -------
    ndarray, float64, shape (n, len(FEATURES))
    """
    n = len(table)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    raw = np.asarray(table["score"], float)
    median = max(float(np.median(raw)), 1e-6)
    ranks = pd.Series(raw).rank(method="average").to_numpy() / n
    radius = np.maximum(np.asarray(table["radius_A"], float), 1e-3)
    sphere = 4.0 / 3.0 * np.pi * radius**3
    fill = np.maximum(np.asarray(table["volume_A3"], float), 1e-3) / sphere
    return np.column_stack(
        [
            raw,
            np.asarray(table["centre_value"], float),
            np.asarray(table["mask_probability"], float),
            np.log(np.maximum(raw, 1e-6) / median),
            ranks,
            np.log(fill),
        ]
    )


def check_calibration(calibration: Any, source: str = "the model card") -> dict[str, Any]:
    """A calibration dict from a card, checked: the right features, finite numbers of the right lengths.

    Raises
    ------
    ValueError
        Naming what is wrong and what to do.
    """
    what = f"The score calibration in {source}"
    if not isinstance(calibration, dict):
        raise ValueError(f"{what} is not a mapping; remove 'score_calibration' from the card or re-run calibration.")
    if list(calibration.get("features", [])) != list(FEATURES):
        raise ValueError(
            f"{what} uses features {calibration.get('features')}, this tomolens knows {list(FEATURES)}; "
            "re-run 'tomolens detect-calibrate' for this model."
        )
    out: dict[str, Any] = {"features": list(FEATURES)}
    for key, length in (("mean", len(FEATURES)), ("scale", len(FEATURES)), ("coef", len(FEATURES)), ("intercept", 1)):
        try:
            values = np.asarray(calibration.get(key), float).reshape(-1)
        except (TypeError, ValueError):
            values = np.zeros(0)
        if values.size != length or not np.all(np.isfinite(values)):
            raise ValueError(f"{what} needs {length} finite number(s) in '{key}'; re-run 'tomolens detect-calibrate'.")
        if key == "scale" and np.any(values <= 0):
            raise ValueError(f"{what} has a non-positive 'scale'; re-run 'tomolens detect-calibrate'.")
        out[key] = values
    return out


def calibrated_scores(table: pd.DataFrame, calibration: dict[str, Any]) -> np.ndarray:
    """Probability that each candidate is a true particle (0 … 1), from a checked calibration."""
    x = candidate_features(table)
    if not len(x):
        return np.zeros(0)
    z = ((x - calibration["mean"]) / calibration["scale"]) @ calibration["coef"] + calibration["intercept"][0]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    model = LogisticRegression(C=1.0, max_iter=2000).fit((x - mean) / scale, y)
    return {
        "features": list(FEATURES),
        "mean": mean,
        "scale": scale,
        "coef": model.coef_[0].astype(float),
        "intercept": model.intercept_.astype(float),
    }


def mean_f1_at(scores: Sequence[np.ndarray], hits: Sequence[np.ndarray], n_true: Sequence[int], t: float) -> float:
    """Mean over runs of the F1 when keeping candidates scoring ≥ ``t`` (hits: matched at ``min_score`` 0)."""
    f1s = []
    for s, h, m in zip(scores, hits, n_true):
        keep = s >= t
        tp = int(np.sum(h[keep]))
        denominator = int(keep.sum()) + int(m)
        f1s.append(2 * tp / denominator if denominator else 1.0)
    return float(np.mean(f1s))


def best_threshold(scores, hits, n_true, grid=THRESHOLDS) -> tuple[float, float]:
    """The threshold of ``grid`` with the best mean F1 over runs, and that F1."""
    values = [mean_f1_at(scores, hits, n_true, t) for t in grid]
    i = int(np.argmax(values))
    return float(grid[i]), float(values[i])


def fit_calibration(runs: Sequence[tuple[pd.DataFrame, np.ndarray, int]]) -> dict[str, Any]:
    """Fit a calibration and its default threshold on runs with known particles.

    Parameters
    ----------
    runs : sequence of (candidates, hits, n_true)
        Per tomogram: the candidates of a run at ``min_score`` 0 (the post-processing feature
        table), whether each matched a true particle (bool, shape (n,)), and the number of
        true particles.

    Returns
    -------
    dict
        ``features``, ``mean``, ``scale``, ``coef``, ``intercept`` (lists, for the card),
        ``min_score`` (the threshold of calibrated scores with the best mean F1 over the runs),
        ``fit_f1`` (that F1), ``raw_min_score`` and ``raw_fit_f1`` (the same for the raw score),
        ``n_runs`` and ``n_candidates``; and ``leave_one_out``: per run, the
        F1 at the threshold chosen without it, calibrated and — for comparison — with the raw score
        and its own best threshold chosen the same way.
    """
    if len(runs) < 2:
        raise ValueError(f"Calibration needs at least 2 tomograms with known particles; got {len(runs)}.")
    xs = [candidate_features(t) for t, _, _ in runs]
    ys = [np.asarray(h, bool) for _, h, _ in runs]
    n_true = [int(m) for _, _, m in runs]
    x, y = np.concatenate(xs), np.concatenate(ys)
    if y.all() or not y.any():
        raise ValueError("Calibration needs both true and false candidates; the runs have only one kind.")
    calibration = _fit(x, y)
    probs = [calibrated_scores(t, calibration) for t, _, _ in runs]
    t, f1 = best_threshold(probs, ys, n_true)
    loo = []
    for i in range(len(runs)):
        rest = [j for j in range(len(runs)) if j != i]
        cal_i = _fit(np.concatenate([xs[j] for j in rest]), np.concatenate([ys[j] for j in rest]))
        p_rest = [calibrated_scores(runs[j][0], cal_i) for j in rest]
        t_i, _ = best_threshold(p_rest, [ys[j] for j in rest], [n_true[j] for j in rest])
        p_i = calibrated_scores(runs[i][0], cal_i)
        raw_rest = [np.asarray(runs[j][0]["score"], float) for j in rest]
        r_i, _ = best_threshold(raw_rest, [ys[j] for j in rest], [n_true[j] for j in rest], RAW_THRESHOLDS)
        loo.append(
            {
                "calibrated_f1": mean_f1_at([p_i], [ys[i]], [n_true[i]], t_i),
                "calibrated_threshold": t_i,
                "raw_f1": mean_f1_at([np.asarray(runs[i][0]["score"], float)], [ys[i]], [n_true[i]], r_i),
                "raw_threshold": r_i,
            }
        )
    raw_t, raw_f1 = best_threshold([np.asarray(t_["score"], float) for t_, _, _ in runs], ys, n_true, RAW_THRESHOLDS)
    log.info("calibration: min_score %.2f, mean F1 %.3f on %d runs (%d candidates)", t, f1, len(runs), len(y))
    return {
        **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in calibration.items()},
        "min_score": t,
        "fit_f1": round(f1, 4),
        "raw_min_score": raw_t,
        "raw_fit_f1": round(raw_f1, 4),
        "n_runs": len(runs),
        "n_candidates": int(len(y)),
        "leave_one_out": loo,
    }
