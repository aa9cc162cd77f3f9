"""Sparse multi-class losses: unpainted voxels (label 0) contribute nothing.

Targets are *painted* label values (0 = not painted, class index k painted as k + 1,
see :mod:`tomolens.segment.labels`).  Torch is imported inside the functions.
"""

from __future__ import annotations

from tomolens.segment.labels import LABEL_OFFSET


def _flat_target(target):
    """(N, 1, *S) or (N, *S) painted labels → (N, *S) int64 class indices, -1 where unpainted."""
    if target.ndim >= 3 and target.shape[1] == 1:
        target = target[:, 0]
    return target.long() - LABEL_OFFSET


def sparse_dice_loss(logits, target, eps: float = 1.0):
    """1 − mean soft Dice over the classes, on painted voxels only.

    Parameters
    ----------
    logits : tensor, float, shape (N, C, *spatial)
    target : tensor, int, shape (N, *spatial) or (N, 1, *spatial)
        Painted label values (0 = ignore).
    eps : float
        Smoothing added to numerator and denominator (classes absent from the batch
        then score close to 1 instead of dividing by zero).
    """
    import torch

    classes = _flat_target(target)
    mask = (classes >= 0).unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1) * mask
    one_hot = torch.zeros_like(probs).scatter_(1, classes.clamp(min=0).unsqueeze(1), 1.0) * mask
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * one_hot).sum(dims)
    denominator = probs.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + eps) / (denominator + eps)
    return 1.0 - dice.mean()


def sparse_segmentation_loss(logits, target, dice_weight: float = 0.0, class_weights=None):
    """Cross-entropy on painted voxels (+ ``dice_weight`` × soft Dice loss).

    Parameters
    ----------
    logits : tensor, float, shape (N, C, *spatial)
        Network output (before softmax).
    target : tensor, int, shape (N, *spatial) or (N, 1, *spatial)
        Painted label values: 0 = not painted (ignored: zero loss and zero gradient),
        k + 1 = class index k.
    dice_weight : float
        Weight of the soft Dice term (0 = cross-entropy only).
    class_weights : tensor of shape (C,), optional
        Per-class cross-entropy weights.

    Returns
    -------
    scalar tensor
        0 (with a gradient of zero) when no voxel of the batch is painted.
    """
    import torch.nn.functional as F

    classes = _flat_target(target)
    if int(classes.max()) >= logits.shape[1]:
        raise ValueError(
            f"A painted label value {int(classes.max()) + LABEL_OFFSET} has no output channel: the "
            f"network has {logits.shape[1]} classes."
        )
    if not bool((classes >= 0).any()):
        return logits.sum() * 0.0
    weight = None if class_weights is None else class_weights.to(logits.device, logits.dtype)
    loss = F.cross_entropy(logits, classes, weight=weight, ignore_index=-1)
    if dice_weight:
        loss = loss + dice_weight * sparse_dice_loss(logits, target)
    return loss


def painted_dice_score(logits, target) -> float:
    """Mean hard Dice, on painted voxels, of the classes painted there: the validation score.

    Argmax labels against painted labels, averaged over every class (background included) that
    has painted voxels in ``target``.  A class not painted in the validation voxels is left out:
    scoring it would reward a network that never predicts it (a validation strip without
    membrane made "no membrane anywhere" the best epoch).  Training keeps the epoch with the best
    score (:class:`tomolens.models.training.TrainConfig` ``val_score``).
    """
    import torch

    classes = _flat_target(target)
    painted = classes >= 0
    predicted = torch.argmax(logits, dim=1)[painted]
    truth = classes[painted]
    scores = []
    for k in range(logits.shape[1]):
        t = truth == k
        if bool(t.any()):
            p = predicted == k
            scores.append(2.0 * int((p & t).sum()) / (int(p.sum()) + int(t.sum())))
    return float(sum(scores) / len(scores)) if scores else 1.0
