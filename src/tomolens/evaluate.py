"""Evaluate picked particle centres against ground truth: one-to-one matching, P/R/F1.

Predicted and true centres are matched one-to-one by minimum total distance
(``scipy.optimize.linear_sum_assignment``), and a matched pair counts as a true
positive only when the two centres are within the tolerance (default: half the
particle radius).  Precision = TP / predicted, recall = TP / true, F1 their harmonic
mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


@dataclass(frozen=True)
class MatchResult:
    """Figures of one evaluation.

    Attributes
    ----------
    true_positives, false_positives, false_negatives : int
    precision, recall, f1 : float
        In [0, 1]; precision (recall) is 1 when nothing was predicted (nothing was true)
        only if the other set is empty too, else 0.
    mean_distance_A : float
        Mean distance of the matched pairs, Å (NaN without matches).
    tolerance_A : float
        The tolerance (median when given per true centre), Å.
    pairs : tuple of (int, int)
        (predicted index, true index) of every match.
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    mean_distance_A: float
    tolerance_A: float
    pairs: tuple = ()

    def summary(self) -> dict:
        """Figures without the pair list (for JSON and tables)."""
        d = asdict(self)
        d.pop("pairs")
        return d


def match_centres(pred_A: np.ndarray, true_A: np.ndarray, tolerance_A) -> MatchResult:
    """Match predicted to true centres (both in Å, shape (N, 3) / (M, 3)).

    Parameters
    ----------
    pred_A, true_A : array, shape (N, 3) and (M, 3)
        Centres in Å in the same frame (any axis order, the same for both).
    tolerance_A : float or array of shape (M,)
        Largest distance of a true positive, Å (> 0); one value, or one per true
        centre (for example half of each particle's radius).

    Returns
    -------
    MatchResult
    """
    pred = np.asarray(pred_A, float).reshape(-1, 3)
    true = np.asarray(true_A, float).reshape(-1, 3)
    if tolerance_A is None or np.any(np.asarray(tolerance_A, float) <= 0):
        raise ValueError(f"The matching tolerance must be a positive distance in Å; got {tolerance_A}.")
    tol = np.broadcast_to(np.asarray(tolerance_A, float), (len(true),)) if np.ndim(tolerance_A) else float(tolerance_A)
    pairs: list[tuple[int, int]] = []
    distances: list[float] = []
    if len(pred) and len(true):
        d = cdist(pred, true)
        # forbid pairs beyond the tolerance so the assignment maximises matches within it
        within = d <= (tol[None, :] if np.ndim(tol) else tol)
        cost = np.where(within, d, 1e6 + d)
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if within[r, c]:
                pairs.append((int(r), int(c)))
                distances.append(float(d[r, c]))
    tp = len(pairs)
    fp, fn = len(pred) - tp, len(true) - tp
    precision = tp / len(pred) if len(pred) else float(len(true) == 0)
    recall = tp / len(true) if len(true) else float(len(pred) == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return MatchResult(
        tp,
        fp,
        fn,
        precision,
        recall,
        f1,
        float(np.mean(distances)) if distances else float("nan"),
        float(np.median(tol)),
        tuple(pairs),
    )


def evaluate_tables(
    pred, true, tolerance_A: float | None = None, radius_A: float | None = None, voxel_size_A: float | None = None
) -> MatchResult:
    """Evaluate two :class:`~tomolens.io.coords.ParticleTable` (voxel coordinates).

    The tolerance defaults to half of ``radius_A`` or, failing that, half the median of
    the true table's ``radius_A`` feature.  The voxel size is taken from the tables
    (``pixel_size_A``) unless given.
    """
    vs_pred = voxel_size_A or pred.pixel_size_A or true.pixel_size_A
    vs_true = voxel_size_A or true.pixel_size_A or pred.pixel_size_A
    if not vs_pred or not vs_true:
        raise ValueError("Evaluation needs the voxel size in Å of both coordinate sets; give it.")
    if tolerance_A is None:
        if radius_A is None and "radius_A" in true.features.columns and len(true):
            radius_A = float(np.median(true.features["radius_A"]))
        if radius_A is None:
            raise ValueError("Give the tolerance in Å, or the particle radius in Å (tolerance = radius / 2).")
        tolerance_A = radius_A / 2
    return match_centres(pred.coords_zyx * vs_pred, true.coords_zyx * vs_true, tolerance_A)


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision and recall of the picks scoring at least each threshold.

    Attributes
    ----------
    thresholds : ndarray, shape (K,), float
        Score thresholds, descending (the scores of the picks).
    precision, recall, f1 : ndarray, shape (K,), float
        Figures of the picks with score ≥ the threshold, in [0, 1].
    best_threshold, best_f1 : float
        The threshold of the highest F1 and that F1 (NaN and 0 without picks).
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    best_threshold: float
    best_f1: float


def precision_recall_curve(
    pred_A: np.ndarray, scores: np.ndarray, true_A: np.ndarray, tolerance_A
) -> PrecisionRecallCurve:
    """Precision and recall over the score threshold, in one pass (PASCAL VOC / COCO matching).

    Picks are taken in descending score; each is matched to the nearest still unmatched true
    centre within the tolerance (a true positive) or counts as a false positive.  The figures at
    a threshold are those of the picks above it.  (The one-to-one optimal matching of
    :func:`match_centres` can differ by a few pairs at one threshold.)

    Parameters
    ----------
    pred_A : array, shape (N, 3)
        Picked centres, Å.
    scores : array, shape (N,)
        Score of every pick (higher = more confident).
    true_A : array, shape (M, 3)
        True centres, Å, same frame.
    tolerance_A : float or array of shape (M,)
        Largest distance of a true positive, Å.

    Returns
    -------
    PrecisionRecallCurve
    """
    from scipy.spatial import cKDTree

    pred = np.asarray(pred_A, float).reshape(-1, 3)
    true = np.asarray(true_A, float).reshape(-1, 3)
    scores = np.asarray(scores, float).reshape(-1)
    if len(scores) != len(pred):
        raise ValueError(f"{len(pred)} picks but {len(scores)} scores.")
    if tolerance_A is None or np.any(np.asarray(tolerance_A, float) <= 0):
        raise ValueError(f"The matching tolerance must be a positive distance in Å; got {tolerance_A}.")
    tol = np.broadcast_to(np.asarray(tolerance_A, float), (len(true),))
    order = np.argsort(-scores, kind="stable")
    hit = np.zeros(len(pred), bool)
    if len(true):
        tree, taken = cKDTree(true), np.zeros(len(true), bool)
        for rank, i in enumerate(order):
            near = np.asarray(tree.query_ball_point(pred[i], r=float(tol.max())), int)
            if not len(near):
                continue
            dist = np.linalg.norm(true[near] - pred[i], axis=1)
            ok = ~taken[near] & (dist <= tol[near])
            if ok.any():
                taken[near[ok][np.argmin(dist[ok])]] = True
                hit[rank] = True
    tp = np.cumsum(hit)
    precision = tp / np.arange(1, len(pred) + 1)
    recall = tp / len(true) if len(true) else np.ones(len(pred))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    best = int(np.argmax(f1)) if len(f1) else -1
    return PrecisionRecallCurve(
        scores[order],
        precision,
        recall,
        f1,
        float(scores[order][best]) if best >= 0 else float("nan"),
        float(f1[best]) if best >= 0 else 0.0,
    )


def seed_summary(values, scale: float = 100.0, unit: str = " %", decimals: int = 1) -> dict:
    """Mean ± spread of one figure measured with several seeds (data and initialisation).

    Parameters
    ----------
    values : sequence of float
        The figure of every seed, in seed order (e.g. accuracies in [0, 1]).
    scale : float
        Factor of the displayed text (100: fractions shown as percentages).
    unit : str
        Appended to the displayed numbers (" %" or "").
    decimals : int
        Decimals of the displayed text.

    Returns
    -------
    dict
        ``per_seed`` (the values), ``mean``, ``std`` (sample standard deviation, ddof 1; 0
        for one seed), ``min``, ``max``, ``n_seeds`` and ``text``, e.g.
        ``"97.8 ± 0.9 % (3 seeds)"`` — the string the docs quote (see benchmarks/README.md).
    """
    arr = np.asarray([float(v) for v in values], float)
    if arr.size == 0:
        raise ValueError("seed_summary needs the figure of at least one seed.")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    mean = float(arr.mean())
    text = (
        f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}{unit} ({arr.size} seed{'s' if arr.size > 1 else ''})"
    )
    return {
        "per_seed": arr.tolist(),
        "mean": mean,
        "std": std,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n_seeds": int(arr.size),
        "text": text,
    }
