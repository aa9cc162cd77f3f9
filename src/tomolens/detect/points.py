"""Detection targets, loss and scores from clicked centres (training on a user's picks).

A user clicks some particles in part of a tomogram.  What those clicks say, and what they
do not say:

- a sphere of the particle's radius around each click **is particle** (mask 1, centre map
  peaking at the click);
- inside the **region the user declares fully picked** (a box; by default the bounding box of
  the clicks grown by one radius), every voxel outside those spheres **is background**;
- around each **negative** click (a point the user marks as "not a particle") a sphere of
  the radius is background, wherever it lies;
- everywhere else the voxels are **unlabelled**: they get weight 0, so a particle the user did
  not click outside the region costs nothing (a masked loss).

:func:`point_targets` therefore returns four channels: mask target, centre target, weight
(1 = labelled, 0 = unlabelled) and a click marker (1 at held-out clicks, 0.5 at training
clicks, for the validation score).  :func:`masked_detection_loss` is the detector's loss
(BCE of the mask + 2 × MSE of the centre map, :func:`tomolens.detect.train.detection_loss`)
averaged over the labelled voxels only.

Held-out clicks (for the validation curve) are unlabelled in the training target (a sphere of
1.5 radii around each gets weight 0, so the network is neither told they are particles nor
that they are background) and positive in the validation target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Channels of :func:`point_targets`.
MASK, CENTRE, WEIGHT, MARKER = 0, 1, 2, 3
#: Marker values of held-out and training clicks.
HELD_OUT_MARK, TRAINING_MARK = 1.0, 0.5
#: Held-out clicks are left unlabelled within this many radii in the training target.
IGNORE_RADII = 1.5


def parse_region(text: str, shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """``"z0:z1,y0:y1,x0:x1"`` (voxels, end exclusive; a blank bound = the edge) → three slices.

    Raises
    ------
    ValueError
        Not three ``a:b`` ranges of integers, or an empty range, or a range outside ``shape``.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or any(p.count(":") != 1 for p in parts):
        raise ValueError(f"The region must be three ranges z0:z1,y0:y1,x0:x1 in voxels; got {text!r}.")
    out = []
    for axis, (part, n) in enumerate(zip(parts, shape)):
        lo, hi = part.split(":")
        try:
            a, b = int(lo) if lo.strip() else 0, int(hi) if hi.strip() else int(n)
        except ValueError:
            raise ValueError(f"The region's range {part!r} (axis {'zyx'[axis]}) is not two integers.") from None
        if not 0 <= a < b <= n:
            raise ValueError(f"The region's range {part!r} on {'zyx'[axis]} must lie within 0:{n} and not be empty.")
        out.append(slice(a, b))
    return tuple(out)  # type: ignore[return-value]


def parse_kind_radii(text: str) -> dict[str, float]:
    """``"ribosome=130, proteasome=80"`` → ``{"ribosome": 130.0, "proteasome": 80.0}`` (radii in Å per kind).

    Raises
    ------
    ValueError
        A part that names no kind, or a radius that is not a positive finite number.
    """
    out = {}
    for part in str(text).split(","):
        kind, _, value = part.partition("=")
        if not kind.strip():
            raise ValueError(f"{part.strip()!r} names no kind; write KIND=RADIUS, e.g. ribosome=120.")
        try:
            radius = float(value)
        except ValueError:
            radius = float("nan")
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"The radius of {kind.strip()!r} must be a positive number of Å; got {value.strip()!r}.")
        out[kind.strip()] = radius
    return out


def default_region(centres_zyx: np.ndarray, radii_vox: np.ndarray, shape: Sequence[int]) -> tuple[slice, ...]:
    """The bounding box of the clicks grown by one radius (the largest), clipped to ``shape``."""
    grow = float(np.max(radii_vox))
    lo = np.floor(centres_zyx.min(0) - grow).astype(int).clip(0)
    hi = np.ceil(centres_zyx.max(0) + grow + 1).astype(int)
    return tuple(slice(int(a), int(min(b, n))) for a, b, n in zip(lo, hi, shape))


def check_points(
    centres_zyx: np.ndarray, shape: Sequence[int], minimum: int = 5, what: str = "clicked particles"
) -> np.ndarray:
    """The clicks as an (N, 3) float array; ValueError when too few or outside the tomogram."""
    centres = np.asarray(centres_zyx, float).reshape(-1, 3)
    if len(centres) < minimum:
        raise ValueError(
            f"Training from points needs at least {minimum} {what}; got {len(centres)}. Click more particles."
        )
    outside = np.any((centres < -0.5) | (centres > np.asarray(shape) - 0.5), axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"{int(outside.sum())} of the {len(centres)} points lie outside the tomogram "
            f"(z, y, x size {tuple(int(n) for n in shape)}), e.g. point {i} at "
            f"{tuple(round(float(v), 1) for v in centres[i])}: are they from another tomogram or "
            "in another pixel size?"
        )
    return centres


def _distance_to_nearest(shape: Sequence[int], centres: np.ndarray, radii: np.ndarray):
    """Per voxel: distance to the nearest click, in units of that click's radius, and its index."""
    best = np.full(shape, np.inf, np.float32)
    index = np.full(shape, -1, np.int32)
    for i, (c, r) in enumerate(zip(centres, radii)):
        reach = IGNORE_RADII * r + 1
        box = tuple(
            slice(max(0, int(np.floor(v - reach))), min(n, int(np.ceil(v + reach)) + 1)) for v, n in zip(c, shape)
        )
        if any(s.start >= s.stop for s in box):
            continue
        grids = np.ogrid[box]
        d = np.sqrt(sum((g - v) ** 2 for g, v in zip(grids, c))).astype(np.float32) / np.float32(r)
        sub_best, sub_index = best[box], index[box]
        closer = d < sub_best
        sub_best[closer] = d[closer]
        sub_index[closer] = i
    return best, index


def point_targets(
    shape: Sequence[int],
    centres_zyx: np.ndarray,
    radii_vox: np.ndarray | float,
    region: tuple[slice, ...] | None,
    negatives_zyx: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
    validation: bool = False,
) -> np.ndarray:
    """Targets of the masked detection loss from clicked centres.

    Parameters
    ----------
    shape : (z, y, x)
        Shape of the (cropped, rescaled) training volume.
    centres_zyx : ndarray, shape (N, 3)
        Clicked centres in voxels of that volume.
    radii_vox : float or ndarray, shape (N,)
        Particle radius of each click, voxels.
    region : tuple of slice or None
        The fully picked box: background is known there.  None: nowhere.
    negatives_zyx : ndarray, shape (M, 3), optional
        Points that are not particles: a sphere of the (median) radius around each is background.
    held_out : ndarray of bool, shape (N,), optional
        Held-out clicks: unlabelled (weight 0 within 1.5 radii) unless ``validation``.
    validation : bool
        Build the validation target: held-out clicks are positives like the others.

    Returns
    -------
    ndarray, float32, shape (4, z, y, x)
        Mask target (0/1), centre target ((1 − d/r)·exp(−d²/2r²) inside the sphere, 1 at the
        click), weight (0/1), marker (1 at held-out clicks, 0.5 at training clicks, 0 elsewhere).
    """
    centres = np.asarray(centres_zyx, float).reshape(-1, 3)
    radii = np.broadcast_to(np.asarray(radii_vox, float), (len(centres),)).astype(float)
    held = np.zeros(len(centres), bool) if held_out is None else np.asarray(held_out, bool)
    out = np.zeros((4, *shape), np.float32)
    if region is not None:
        out[(WEIGHT, *region)] = 1.0
    if negatives_zyx is not None and len(negatives_zyx):
        neg_radius = np.full(len(negatives_zyx), float(np.median(radii)))
        d_neg, _ = _distance_to_nearest(shape, np.asarray(negatives_zyx, float).reshape(-1, 3), neg_radius)
        out[WEIGHT][d_neg <= 1.0] = 1.0
    d, nearest = _distance_to_nearest(shape, centres, radii)
    inside = d <= 1.0
    out[MASK][inside] = 1.0
    out[CENTRE][inside] = (1.0 - d[inside]) * np.exp(-0.5 * d[inside] ** 2)
    out[WEIGHT][inside] = 1.0
    if not validation and held.any():
        near_held = (d <= IGNORE_RADII) & held[np.maximum(nearest, 0)] & (nearest >= 0)
        out[:2][:, near_held] = 0.0
        out[WEIGHT][near_held] = 0.0
    for c, h in zip(centres, held):
        v = tuple(int(np.clip(round(x), 0, n - 1)) for x, n in zip(c, shape))
        out[(MARKER, *v)] = HELD_OUT_MARK if h else TRAINING_MARK
    return out


def masked_detection_loss(logits, target, centre_weight: float = 2.0):
    """BCE of the mask + ``centre_weight`` × MSE of the sigmoid centre map, over labelled voxels only.

    Parameters
    ----------
    logits : tensor, shape (N, 2, z, y, x)
    target : tensor, shape (N, 4, z, y, x)
        :func:`point_targets` channels.

    Returns
    -------
    scalar tensor
        Both terms summed over voxels of weight > 0 and divided by their number (at least 1):
        an unlabelled voxel changes neither the loss nor its gradient.
    """
    import torch
    import torch.nn.functional as F

    weight = target[:, WEIGHT]
    n = weight.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, MASK], reduction="none")
    mse = (torch.sigmoid(logits[:, 1]) - target[:, CENTRE]) ** 2
    return ((bce + centre_weight * mse) * weight).sum() / n


def click_scores(found_zyx: np.ndarray, target: np.ndarray, tolerance_vox: float) -> tuple[int, int, int]:
    """(TP, FP, FN) of detected centres against the held-out clicks of one :func:`point_targets` volume.

    Only detections in labelled voxels count (unlabelled ones are neither right nor wrong); a
    detection within ``tolerance_vox`` of a *training* click is left out (the network was told
    about it); the rest are matched one-to-one (:func:`tomolens.evaluate.match_centres`) with
    the held-out clicks.
    """
    from tomolens.evaluate import match_centres

    found = np.asarray(found_zyx, float).reshape(-1, 3)
    marker = target[MARKER]
    held = np.argwhere(marker == HELD_OUT_MARK).astype(float)
    trained = np.argwhere(marker == TRAINING_MARK).astype(float)
    if len(found):
        v = np.clip(np.round(found).astype(int), 0, np.asarray(marker.shape) - 1)
        found = found[target[WEIGHT][tuple(v.T)] > 0]
    if len(found) and len(trained):
        near = np.min(np.linalg.norm(found[:, None] - trained[None], axis=-1), axis=1) <= tolerance_vox
        found = found[~near]
    m = match_centres(found, held, tolerance_vox)
    return m.true_positives, m.false_positives, m.false_negatives


def f1_of_counts(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN) (0 when all are 0)."""
    return 2.0 * tp / max(2 * tp + fp + fn, 1)


def estimate_radius(volume: np.ndarray, centres_zyx: np.ndarray, min_vox: float = 1.0, max_vox: float = 12.0) -> float:
    """Particle radius (voxels) from the clicks: the scale of the strongest blob response there.

    The volume (bright particles) is filtered with the scale-normalised Laplacian of Gaussian
    −σ²∇²G_σ (``scipy.ndimage.gaussian_laplace``) for σ on a geometric grid; the σ whose
    response, averaged over the clicked voxels, is largest is the clicks' blob scale, and the
    radius of a uniform sphere whose response peaks there is √3·σ.  Only a box around the
    clicks (+ 3 × the largest σ) is filtered.

    Returns
    -------
    float
        Radius in voxels (clipped to ``min_vox``..``max_vox``).
    """
    centres = np.asarray(centres_zyx, float).reshape(-1, 3)
    sigmas = np.geomspace(max(min_vox / np.sqrt(3), 0.6), max_vox / np.sqrt(3), 16)
    margin = int(np.ceil(3 * sigmas[-1])) + 1
    lo = np.maximum(np.floor(centres.min(0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(centres.max(0)).astype(int) + margin + 1, volume.shape)
    box = np.asarray(volume[tuple(slice(a, b) for a, b in zip(lo, hi))], np.float32)
    box = (box - box.mean()) / max(float(box.std()), 1e-6)
    at = tuple(np.clip(np.round(centres - lo).astype(int), 0, np.asarray(box.shape) - 1).T)
    responses = [float(np.mean(-(s**2) * ndimage.gaussian_laplace(box, s)[at])) for s in sigmas]
    return float(np.clip(np.sqrt(3) * sigmas[int(np.argmax(responses))], min_vox, max_vox))
