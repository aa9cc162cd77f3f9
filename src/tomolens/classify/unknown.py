"""Unknown particles: a feature distance to the training classes, calibrated on held-out data.

A classifier always answers with one of its classes, often confidently, even for a
structure it never saw (the shipped classifier called 192 of 255 unseen proteins
"two_subunit" with median confidence 0.94).  Its softmax cannot say "none of these", but
its features can: a particle of a known class lands near that class's training features,
a never-seen structure tends to land away from all of them.

**The distance.**  The features are the ones Subdivide clusters
(``forward_with_embedding``: for the ResNet the pooled outputs of its three stages,
7 × width values; for the seed CNN its 512 penultimate activations).  At the end of
training, :func:`fit_unknown_model` computes each class's mean on the training split and
one covariance shared by all classes (the pooled within-class scatter), and the distance
of a particle is its Mahalanobis distance to the nearest class mean (Lee et al. 2018,
"A simple unified framework for detecting out-of-distribution samples").  Mahalanobis
rather than cosine or Euclidean distance because the features' scales differ by orders
of magnitude between the network's stages and between directions: whitening by the
within-class covariance measures a departure in units of how much known particles of one
class vary in that direction, so a small but unusual change counts and a large but
ordinary one (noise, SNR, neighbours) does not.

**Keeping the card small.**  A full F × F covariance (12,544 numbers for the shipped
ResNet's 112 features) is too large for a card and noisy from a few thousand particles,
so it is stored as diagonal plus low rank: every feature is first divided by its pooled
within-class standard deviation (F scales), then the correlation that remains is shrunk
towards the identity (Ledoit–Wolf, :func:`sklearn.covariance.ledoit_wolf`) and kept as its
``rank`` leading eigenvectors and eigenvalues plus one variance (the mean of the other
eigenvalues) for the rest of the space — the probabilistic-PCA approximation.  The
diagonal step matters: without it the many tight directions would share one averaged
variance and a departure along a tight one would go unnoticed.  A card holds the C × F
class means, F scales, rank × F components and rank + 1 variances (about 3,400 numbers
for a 13-class ResNet of width 16).

**The threshold** is a quantile (default 0.99) of the distances of the *validation*
split — subtomograms of the known classes that the statistics were not fitted on — to
their nearest class, so about 1 % of known particles like the validation ones are
called unknown at the default scale.  Users scale it (``unknown_scale``; 0 turns the
marking off).

The statistics travel in the model card (``extra["unknown"]``) and are read back as
untrusted input (:meth:`UnknownModel.from_dict`): wrong shapes, non-finite numbers,
non-orthonormal components or a class count that differs from the card's make unknown
detection unavailable with a one-line note, never an error.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tomolens.params import Param

log = logging.getLogger(__name__)

#: The class name given to particles far from every training class.
UNKNOWN_CLASS = "unknown"
#: Key of the statistics in ``ModelCard.extra``.
CARD_KEY = "unknown"
#: The only distance this module writes and reads.
METHOD = "mahalanobis_lowrank"
#: Leading eigenvectors of the shared covariance kept on the card.
DEFAULT_RANK = 16
#: Quantile of the validation distances that becomes the threshold.
DEFAULT_QUANTILE = 0.99
#: Fewest validation particles that calibrate a threshold.
MIN_CALIBRATION = 10
#: Largest sizes accepted from a card (classes, feature dimension, rank).
_MAX_CLASSES, _MAX_DIM, _MAX_RANK = 1000, 4096, 256

#: The setting as a CLI option, widget control and preset key (one definition for all).
UNKNOWN_PARAM = Param(
    "unknown_scale",
    1.0,
    "Call a particle 'unknown' when its feature distance to the nearest training class exceeds this "
    "× the model's calibrated threshold (1 = about 1 % of known particles; higher = fewer unknowns; 0 = off)",
    min=0.0,
    max=100.0,
    step=0.05,
)


@dataclass(frozen=True)
class UnknownModel:
    """Class means, a low-rank shared covariance and a calibrated distance threshold.

    Attributes
    ----------
    class_means : ndarray, float64, shape (C, F)
        Mean feature vector of each training class.
    feature_scales : ndarray, float64, shape (F,)
        Pooled within-class standard deviation of every feature (> 0).
    components : ndarray, float64, shape (k, F)
        Orthonormal leading eigenvectors of the shared within-class correlation (features
        divided by ``feature_scales``).
    component_variances : ndarray, float64, shape (k,)
        Their eigenvalues (> 0).
    residual_variance : float
        Variance assumed in every direction orthogonal to ``components`` (> 0).
    threshold : float
        Distance beyond which a particle is unknown (at scale 1).
    quantile : float
        The validation quantile the threshold was set at.
    n_train, n_calibration : int
        Particles the statistics and the threshold came from.
    """

    class_means: np.ndarray
    feature_scales: np.ndarray
    components: np.ndarray
    component_variances: np.ndarray
    residual_variance: float
    threshold: float
    quantile: float = DEFAULT_QUANTILE
    n_train: int = 0
    n_calibration: int = 0

    @property
    def feature_dim(self) -> int:
        return int(self.class_means.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of every feature vector to its nearest class mean.

        Parameters
        ----------
        features : ndarray, shape (N, F)

        Returns
        -------
        ndarray, float64, shape (N,)
        """
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features must have shape (N, {self.feature_dim}); got {x.shape}.")
        best = np.full(len(x), np.inf)
        for mean in self.class_means:  # one class at a time: N × F memory
            d = (x - mean) / self.feature_scales
            proj = d @ self.components.T
            along = np.sum(proj**2 / self.component_variances, axis=1)
            rest = np.maximum(np.sum(d**2, axis=1) - np.sum(proj**2, axis=1), 0.0)
            best = np.minimum(best, along + rest / self.residual_variance)
        return np.sqrt(best)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (6 significant digits) for ``ModelCard.extra["unknown"]``."""

        def short(a):
            return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(np.asarray(a)).tolist()

        return {
            "method": METHOD,
            "features": "forward_with_embedding",
            "class_means": short(self.class_means),
            "feature_scales": short(self.feature_scales),
            "components": short(self.components),
            "component_variances": short(self.component_variances),
            "residual_variance": float(f"{self.residual_variance:.6g}"),
            "threshold": float(f"{self.threshold:.6g}"),
            "quantile": self.quantile,
            "n_train": int(self.n_train),
            "n_calibration": int(self.n_calibration),
        }

    @classmethod
    def from_dict(cls, raw: Any, n_classes: int) -> UnknownModel:
        """Check and build the statistics read from a card (untrusted input).

        Raises
        ------
        ValueError
            Saying what is wrong: a missing field, a wrong shape or type, a non-finite or
            non-positive value, non-orthonormal components, another number of classes.
        """
        if not isinstance(raw, dict):
            raise ValueError("the statistics are not a mapping")
        if raw.get("method") != METHOD:
            raise ValueError(f"method is {raw.get('method')!r}, not {METHOD!r}")
        means = _matrix(raw, "class_means", _MAX_CLASSES, _MAX_DIM)
        if means.shape[0] != n_classes:
            raise ValueError(f"class_means has {means.shape[0]} rows for {n_classes} classes")
        scales = _positive(raw, "feature_scales", shape=(means.shape[1],))
        comps = _matrix(raw, "components", _MAX_RANK, _MAX_DIM)
        if comps.shape[1] != means.shape[1] or comps.shape[0] > comps.shape[1]:
            raise ValueError(f"components {comps.shape} do not fit features of dimension {means.shape[1]}")
        if not np.allclose(comps @ comps.T, np.eye(len(comps)), atol=1e-3):
            raise ValueError("components are not orthonormal")
        variances = _positive(raw, "component_variances", shape=(len(comps),))
        residual = float(_positive(raw, "residual_variance", shape=()))
        threshold = float(_positive(raw, "threshold", shape=()))
        quantile = float(_positive(raw, "quantile", shape=()))
        if quantile >= 1:
            raise ValueError(f"quantile must be below 1; got {quantile}")
        return cls(
            means,
            scales,
            comps,
            variances,
            residual,
            threshold,
            quantile,
            _count(raw.get("n_train", 0)),
            _count(raw.get("n_calibration", 0)),
        )


def _array(raw: dict, key: str) -> np.ndarray:
    if key not in raw:
        raise ValueError(f"{key} is missing")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (list, int, float)):
        raise ValueError(f"{key} is not an array of numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{key} is not an array of numbers") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{key} holds non-finite values")
    return arr


def _matrix(raw: dict, key: str, max_rows: int, max_cols: int) -> np.ndarray:
    arr = _array(raw, key)
    if arr.ndim != 2 or not (1 <= arr.shape[0] <= max_rows and 1 <= arr.shape[1] <= max_cols):
        raise ValueError(f"{key} must be a matrix of at most {max_rows} × {max_cols}; got shape {arr.shape}")
    return arr


def _positive(raw: dict, key: str, shape: tuple) -> np.ndarray:
    arr = _array(raw, key)
    if arr.shape != shape:
        raise ValueError(f"{key} has shape {arr.shape}; expected {shape}")
    if np.any(arr <= 0):
        raise ValueError(f"{key} must be positive")
    return arr


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def fit_unknown_model(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    n_classes: int,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    rank: int = DEFAULT_RANK,
    scale_features: bool = True,
) -> UnknownModel:
    """Fit class means and a shrunk, low-rank shared covariance; calibrate the threshold.

    Parameters
    ----------
    train_features : ndarray, shape (N, F)
        Features of the training split (what the statistics are fitted on).
    train_labels : ndarray, int, shape (N,)
        Classes 0..C-1; every class needs at least 2 particles.
    n_classes : int
    val_features : ndarray, shape (M, F)
        Features of held-out particles of the same classes (the validation split), for
        the threshold only; at least :data:`MIN_CALIBRATION`.
    val_labels : ndarray, int, shape (M,)
        Their classes (checked for range only: the threshold uses the nearest class).
    quantile : float
        Quantile of the validation distances that becomes the threshold (0 < q < 1).
    rank : int
        Leading eigenvectors kept (capped at F).
    scale_features : bool
        Divide every feature by its own within-class spread first (the default); False uses
        one common scale, the plain probabilistic-PCA form (for comparison in benchmarks).

    Returns
    -------
    UnknownModel

    Raises
    ------
    ValueError
        Too few particles of a class or for calibration, or mismatched shapes.
    """
    from sklearn.covariance import ledoit_wolf

    x = np.asarray(train_features, np.float64)
    y = np.asarray(train_labels, np.int64)
    v = np.asarray(val_features, np.float64)
    if x.ndim != 2 or len(x) != len(y) or v.ndim != 2 or v.shape[1] != x.shape[1]:
        raise ValueError(f"feature shapes do not fit: train {x.shape}, labels {y.shape}, validation {v.shape}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1; got {quantile}")
    counts = np.bincount(y, minlength=n_classes)
    if len(counts) != n_classes or counts.min() < 2:
        raise ValueError(f"every class needs at least 2 training particles; counts {counts.tolist()}")
    if len(v) < MIN_CALIBRATION:
        raise ValueError(f"calibration needs at least {MIN_CALIBRATION} validation particles; got {len(v)}")
    if len(val_labels) != len(v):
        raise ValueError(f"{len(v)} validation features but {len(val_labels)} labels")
    means = np.stack([x[y == c].mean(axis=0) for c in range(n_classes)])
    centred = x - means[y]
    spread = np.sqrt(np.sum(centred**2, axis=0) / max(len(x) - n_classes, 1))
    if not scale_features:
        spread = np.full_like(spread, np.sqrt(np.mean(spread**2)))
    scales = np.maximum(spread, max(float(spread.max()) * 1e-6, 1e-12))  # a dead (always 0) feature
    cov, _ = ledoit_wolf(centred / scales, assume_centered=True)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    floor = max(float(eigval[0]) * 1e-9, 1e-12)
    k = int(min(rank, x.shape[1]))
    rest = eigval[k:]
    residual = float(rest.mean()) if len(rest) else float(eigval[k - 1])
    model = UnknownModel(
        means,
        scales,
        eigvec[:, :k].T.copy(),
        np.maximum(eigval[:k], floor),
        max(residual, floor),
        threshold=1.0,
        quantile=quantile,
        n_train=len(x),
        n_calibration=len(v),
    )
    threshold = float(np.quantile(model.distances(v), quantile))
    return dataclasses.replace(model, threshold=max(threshold, 1e-9))


def unknown_model_from_card(card) -> tuple[UnknownModel | None, str]:
    """The card's statistics, or None and a one-line note saying why detection is unavailable."""
    extra = card.extra if isinstance(card.extra, dict) else {}
    if CARD_KEY not in extra:
        return None, (
            f"unknown detection unavailable: the card of {card.name!r} has no feature statistics "
            "(add them with tomolens train --task classify --classify-calibrate, or retrain it)"
        )
    if UNKNOWN_CLASS in card.classes:
        return None, f"unknown detection unavailable: {card.name!r} has a class named {UNKNOWN_CLASS!r}"
    try:
        return UnknownModel.from_dict(extra[CARD_KEY], len(card.classes)), ""
    except ValueError as err:
        log.warning("ignoring the unknown-detection statistics of %s: %s", card.name, err)
        return None, f"unknown detection unavailable: the card's feature statistics are invalid ({err})"


def mark_unknown(
    table: pd.DataFrame,
    features: np.ndarray,
    indices: np.ndarray,
    model: UnknownModel | None,
    scale: float = 1.0,
    note: str = "",
) -> dict[str, Any]:
    """Add ``ood_distance`` and relabel far particles as :data:`UNKNOWN_CLASS`, in place.

    Parameters
    ----------
    table : DataFrame
        One row per input point with ``class`` (categorical) and ``class_id``
        (:func:`tomolens.classify.predict.features_table`).
    features : ndarray, shape (M, F)
        Features of the extracted points.
    indices : ndarray, int, shape (M,)
        Their rows in ``table``.
    model : UnknownModel or None
        None: nothing is added; the returned note says why.
    scale : float
        Multiplier of the model's threshold; 0 = compute the distance, mark nothing.
    note : str
        Why ``model`` is None.

    Returns
    -------
    dict
        ``available``, ``threshold`` (scaled, or None), ``scale``, ``n_unknown``, ``message``.
    """
    if model is not None and features.ndim == 2 and len(features) and features.shape[1] != model.feature_dim:
        note = (
            f"unknown detection unavailable: the card's statistics are for {model.feature_dim} features, "
            f"the network gives {features.shape[1]}"
        )
        model = None
    if model is None:
        return {"available": False, "threshold": None, "scale": scale, "n_unknown": 0, "message": note}
    dist = np.full(len(table), np.nan)
    if len(indices):
        dist[np.asarray(indices)] = model.distances(features)
    table["ood_distance"] = dist
    if scale <= 0:
        return {
            "available": True,
            "threshold": None,
            "scale": scale,
            "n_unknown": 0,
            "message": "unknown marking off (unknown_scale = 0); ood_distance computed",
        }
    threshold = model.threshold * scale
    far = np.nan_to_num(dist, nan=-np.inf) > threshold
    names = np.array(table["class"].astype(object), dtype=object)
    names[far] = UNKNOWN_CLASS
    categories = [c for c in table["class"].cat.categories if c != ""] + [UNKNOWN_CLASS, ""]
    table["class"] = pd.Categorical(names, categories=categories)
    table.loc[far, "class_id"] = -1
    n = int(far.sum())
    return {
        "available": True,
        "threshold": threshold,
        "scale": scale,
        "n_unknown": n,
        "message": f"{n} unknown: feature distance above {threshold:.3g} ({scale:g} × the calibrated {model.threshold:.3g})",
    }
