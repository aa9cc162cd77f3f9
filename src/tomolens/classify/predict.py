"""Classify particles: subtomograms → class, per-class probabilities, confidence.

:func:`classify_points` cuts a subtomogram at every position, runs a classifier and
returns one feature row per input point — ``class`` (name), ``class_id``,
``prob_<class>`` per class, ``confidence`` (the highest probability) — plus the
embedding (``forward_with_embedding``) used for subdivision.  Points whose box was skipped at the
tomogram's edge get an empty class, NaN probabilities and confidence 0.

When the model's card holds feature statistics (:mod:`tomolens.classify.unknown`), every
point also gets ``ood_distance`` (Mahalanobis distance of its features to the nearest
training class) and a point beyond the card's calibrated threshold × ``unknown_scale`` gets
the class ``"unknown"`` and ``class_id`` −1 (its probabilities are kept).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tomolens.classify.extract import extract_subtomograms
from tomolens.classify.unknown import UNKNOWN_PARAM
from tomolens.io.checks import warn_if_voxel_size_assumed
from tomolens.jobs import Progress
from tomolens.params import Param
from tomolens.polarity import POLARITY_PARAM

log = logging.getLogger(__name__)

#: Relative voxel-size mismatch tolerated between a model and a tomogram.
VOXEL_TOLERANCE = 0.05

#: User settings of classification (CLI options and widget controls).
CLASSIFY_PARAMS = (
    Param("model", "classify_phantoms_resnet", "Shipped classifier name or a .pt/.json model file", type=str),
    Param("box_A", 0.0, "Box edge in Å (0 = the model's box); must match the model", min=0.0, advanced=True),
    Param(
        "edge",
        "pad",
        "Boxes crossing the tomogram's edge: pad with their mean, or skip the point",
        choices=("pad", "skip"),
    ),
    Param("batch_size", 64, "Subtomograms per inference batch", min=1, max=4096, advanced=True),
    Param("device", "auto", "Torch device", choices=("auto", "cpu", "cuda", "mps"), advanced=True),
    POLARITY_PARAM,
    UNKNOWN_PARAM,
)


@dataclass
class Classification:
    """Classifier output for a set of points.

    Attributes
    ----------
    features : pandas.DataFrame
        One row per input point: ``class``, ``class_id``, ``prob_<name>``…, ``confidence``.
    embedding : ndarray, float32, shape (M, F)
        Penultimate-layer features of the extracted points (rows follow ``indices``).
    indices : ndarray, int64, shape (M,)
        Input indices that were extracted.
    subtomograms : ndarray, float32, shape (M, b, b, b)
        The z-scored cubes (for averages).
    padded, skipped : ndarray, int64
        Input indices padded / skipped at the tomogram's edge.
    class_names : list of str
    info : dict
        Provenance: model, voxel sizes and resampling, the contrast polarity decision.
    """

    features: pd.DataFrame
    embedding: np.ndarray
    indices: np.ndarray
    subtomograms: np.ndarray
    padded: np.ndarray
    skipped: np.ndarray
    class_names: list
    info: dict = field(default_factory=dict)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float64, shape unchanged."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def model_box(card, voxel_size_A: float | None, box_A: float | None = None) -> tuple[int, float]:
    """The model's box (voxels) and the voxel ratio to resample a tomogram to it.

    Subtomograms are cut from a tomogram of any voxel size and resampled to the model's
    (``ratio`` = model voxel size / tomogram voxel size; 1 when either is unknown or they
    agree within 1 %).

    Raises
    ------
    ValueError
        When a requested box in Å differs from the model's box in Å by more than 5 %.
    """
    box = int(card.patch_size[-1]) if card.patch_size else int(card.arch_kwargs.get("box", 32))
    ratio = 1.0
    if card.voxel_size_A and voxel_size_A:
        ratio = float(card.voxel_size_A) / float(voxel_size_A)
        if abs(ratio - 1.0) <= 0.01:
            ratio = 1.0
    model_vs = float(card.voxel_size_A or voxel_size_A or 0)
    if box_A and model_vs and abs(box_A - box * model_vs) > VOXEL_TOLERANCE * box * model_vs:
        raise ValueError(
            f"A box of {box_A:g} Å differs from the {box * model_vs:g} Å ({box} voxels of {model_vs:g} Å) that "
            f"the model {card.name!r} takes; leave the box at the model's size or train a model for this box."
        )
    return box, ratio


def classify_subtomograms(
    model, x: np.ndarray, batch_size: int = 64, device: str = "cpu"
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Probabilities and subdivision embeddings of z-scored cubes (a job).

    Parameters
    ----------
    x : ndarray, float32, shape (N, b, b, b)

    Returns
    -------
    (ndarray float64 (N, C), ndarray float32 (N, F))
    """
    from tomolens.classify.train import predict_logits

    logits, feats = [], []
    n_steps = max(1, -(-len(x) // batch_size))
    for step in range(n_steps):
        chunk = x[step * batch_size : (step + 1) * batch_size]
        if len(chunk):
            lg, ft = predict_logits(model, chunk, batch_size, device, with_features=True)
            logits.append(lg)
            feats.append(ft)
        yield Progress(step + 1, n_steps, "classifying subtomograms")
    if not logits:
        n_out = model.classifier[-1].out_features
        return np.empty((0, n_out)), np.empty((0, 0), np.float32)
    return softmax(np.concatenate(logits).astype(np.float64)), np.concatenate(feats)


def features_table(probs: np.ndarray, indices: np.ndarray, n_points: int, class_names: list[str]) -> pd.DataFrame:
    """One feature row per input point from the probabilities of the extracted ones."""
    full = np.full((n_points, len(class_names)), np.nan)
    full[indices] = probs
    best = np.where(np.isnan(full).all(axis=1), -1, np.nan_to_num(full, nan=-1).argmax(axis=1))
    names = np.array([class_names[i] if i >= 0 else "" for i in best], dtype=object)
    table = pd.DataFrame({"class": pd.Categorical(names, categories=[*class_names, ""]), "class_id": best})
    for j, name in enumerate(class_names):
        table[f"prob_{name}"] = full[:, j]
    table["confidence"] = np.nan_to_num(full, nan=0.0).max(axis=1)
    return table


def model_subtomograms(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    card,
    voxel_size_A: float | None = None,
    box_A: float | None = None,
    edge: str = "pad",
    batch_size: int = 64,
    polarity: str = "auto",
) -> Generator[Progress, None, tuple]:
    """Cut z-scored subtomograms for a subtomogram model at its voxel size and polarity (a job).

    Parameters
    ----------
    card : ModelCard
        The model's card (box, voxel size, polarity).
    Other parameters: see :func:`classify_points`.

    Returns
    -------
    (Extraction, dict)
        The cubes at the model's box and voxel size, inverted when the tomogram's polarity
        differs from the model's, and provenance (model, voxel sizes, resampling, polarity).
    """
    from tomolens.polarity import decide_polarity, model_polarity

    box, ratio = model_box(card, voxel_size_A, box_A)
    warn_if_voxel_size_assumed(voxel_size_A, card.voxel_size_A)
    decision = decide_polarity(tomogram, polarity, model_polarity(card), voxel_size_A)
    yield Progress(0, 1, decision.message)
    if ratio != 1.0:
        log.info("subtomograms resampled from %g to the model's %g Å/voxel", voxel_size_A, card.voxel_size_A)
    extraction = yield from extract_subtomograms(
        tomogram, coords_zyx, box, edge=edge, batch=batch_size * 4, voxel_ratio=ratio
    )
    if decision.invert:
        np.negative(extraction.subtomograms, out=extraction.subtomograms)
    info = {
        "model": card.name,
        "model_voxel_size_A": card.voxel_size_A,
        "voxel_size_A": voxel_size_A,
        "resampled_by": ratio,
        "polarity": decision.to_dict(),
    }
    return extraction, info


def classify_points(
    tomogram: np.ndarray,
    coords_zyx: np.ndarray,
    model: str | os.PathLike,
    voxel_size_A: float | None = None,
    box_A: float | None = None,
    edge: str = "pad",
    batch_size: int = 64,
    device: str = "cpu",
    polarity: str = "auto",
    unknown_scale: float = 1.0,
) -> Generator[Progress, None, Classification]:
    """Classify the particle at every position (a job).

    Parameters
    ----------
    tomogram : array, shape (z, y, x)
        Memory-mapped or in-memory tomogram.
    coords_zyx : array, shape (N, 3)
        Positions in voxels.
    model : str or path
        A shipped classifier's name or a ``.pt``/``.json`` model path.
    voxel_size_A : float, optional
        The tomogram's voxel size; subtomograms are resampled to the model's voxel size
        (None: assumed equal to the model's).
    box_A : float, optional
        Box edge in Å; must match the model's box in Å (default: the model's).
    edge : {"pad", "skip"}
    batch_size : int
    device : str
    polarity : {"auto", "dark", "bright"}
        The tomogram's contrast (:mod:`tomolens.polarity`); subtomograms are inverted when it
        differs from the model's.
    unknown_scale : float
        Points whose ``ood_distance`` exceeds this × the card's threshold become
        ``"unknown"``; 0 = mark none (the distance is still computed).  Ignored, with a note
        in ``info["unknown"]["message"]``, when the card has no valid statistics.

    Returns
    -------
    Classification
        ``info["unknown"]``: ``available``, ``threshold``, ``scale``, ``n_unknown``, ``message``.
    """
    from tomolens.classify.unknown import mark_unknown, unknown_model_from_card
    from tomolens.models.card import load_model
    from tomolens.models.device import choose_device

    if not unknown_scale >= 0:
        raise ValueError(f"unknown_scale must be 0 (off) or positive; got {unknown_scale}.")
    device = choose_device(device)
    net, card = load_model(model, device=device, expected_task="classify")
    extraction, info = yield from model_subtomograms(
        tomogram, coords_zyx, card, voxel_size_A, box_A, edge, batch_size, polarity
    )
    probs, feats = yield from classify_subtomograms(net, extraction.subtomograms, batch_size, device)
    table = features_table(probs, extraction.indices, len(np.asarray(coords_zyx)), list(card.classes))
    unknown_model, note = unknown_model_from_card(card)
    info["unknown"] = mark_unknown(table, feats, extraction.indices, unknown_model, unknown_scale, note)
    return Classification(
        table,
        feats,
        extraction.indices,
        extraction.subtomograms,
        extraction.padded,
        extraction.skipped,
        list(card.classes),
        info,
    )
