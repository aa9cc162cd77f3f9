"""Training of segmentation models from painted (sparse) or complete labels.

- :func:`train_segmenter` — the job behind the widget's Train button and the CLI: a 2D
  slice U-Net (trained on painted slices) or a 3D U-Net, sparse cross-entropy + Dice,
  the engine's training loop (:func:`tomolens.models.training.train_model`: augmentation,
  validation-based early stopping, checkpoint/resume);
- ``tomolens train --task segment`` — :func:`register_train_args` / :func:`run_train`, in
  :mod:`tomolens.segment.train_cli`;
- its settings (parameter tables, the widget's starting values) — :mod:`tomolens.segment.settings`.

Validation: with separate validation volumes when given.  Otherwise (``hold_out``, see
:func:`tomolens.segment.settings.resolve_hold_out`) a new network trains on every painted voxel
for its time and epochs and keeps its last (averaged) weights, and fine-tuning splits each
painted volume along y (the last quarter of every painted slice validates, the rest trains), so
no voxel is used for both.  With validation voxels, the epoch kept is the one with the best
validation Dice of the classes (background included) painted in the validation voxels
(:func:`tomolens.segment.losses.painted_dice_score`), and early stopping follows it: the
validation loss kept falling or rising with confidence rather than with the labels (5 painted
slices of two validation tomograms: the loss was lowest at epochs 8 and 6 of 38 and 36, far from
the best labels).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomolens.jobs import Progress
from tomolens.segment.labels import (
    LABEL_OFFSET,
    check_class_names,
    check_painted_labels,
    painted_slices,
)
from tomolens.segment.predict import context_of, model_kind_of
from tomolens.segment.settings import NEW_NETWORK, resolve_hold_out, start_model
from tomolens.segment.start import load_start_model

log = logging.getLogger(__name__)

#: Exponential moving average of the weights during training (validated, kept and saved):
#: on a few painted slices the raw weights' Dice jumped by ±0.1 from one epoch to the next
#: (filaments 0.37–0.62 on one validation tomogram); the average's moved by about 0.01.
EMA_DECAY = 0.99


@dataclass
class TrainedSegmenter:
    """A trained network with its (unsaved) card and training history."""

    model: Any
    card: Any
    history: list[dict] = field(default_factory=list)


def _split_y(volume: np.ndarray, labels: np.ndarray, val_fraction: float = 0.25):
    ny = volume.shape[1]
    cut = int(round(ny * (1 - val_fraction)))
    if cut < 8 or ny - cut < 8:
        raise ValueError(
            f"The tomogram is too small (y = {ny}) to split into training and validation regions; "
            "it needs at least 32 voxels along y."
        )
    return (volume[:, :cut], labels[:, :cut]), (volume[:, cut:], labels[:, cut:])


def _foreground(labels: np.ndarray) -> np.ndarray:
    """Where patches are centred: structures (≥ 2) when the labels are dense, painted voxels otherwise."""
    painted = labels > 0
    if painted.mean() > 0.5 and np.any(labels > LABEL_OFFSET):
        return labels > LABEL_OFFSET
    return painted


def slab(volume: np.ndarray, index: int, axis: int, context: int) -> np.ndarray:
    """Slice ``index`` along ``axis`` with ``context`` neighbours on each side, (2·context + 1, a, b).

    Beyond the volume's faces the face slice repeats (as tiled prediction reads it).
    """
    idx = np.clip(np.arange(index - context, index + context + 1), 0, volume.shape[axis] - 1)
    return np.ascontiguousarray(np.moveaxis(np.take(volume, idx, axis=axis), axis, 0))


def make_pairs(volume: np.ndarray, labels: np.ndarray, kind: str, slice_axes: str = "z", context: int = 0) -> list:
    """Training pairs of one (tomogram, painted labels) volume.

    3D: one pair (the volume).  2D: one pair per painted slice along each axis in
    ``slice_axes`` ("z", or "zyx" to add the orthogonal slices through the painted voxels);
    with ``context`` > 0 each image is the slice's slab (:func:`slab`, channels first).
    """
    from tomolens.models.sampling import TrainingPair

    volume = np.asarray(volume, np.float32)
    labels = np.asarray(labels, np.int16)
    if kind == "3d":
        return [TrainingPair(volume, labels, _foreground(labels))]
    pairs = []
    for axis in range(3) if slice_axes == "zyx" else (0,):
        for i in painted_slices(labels, axis):
            lab = np.ascontiguousarray(np.take(labels, i, axis=axis))
            if context:
                pairs.append(TrainingPair(slab(volume, i, axis, context), lab, _foreground(lab), channels=True))
            else:
                pairs.append(TrainingPair(np.ascontiguousarray(np.take(volume, i, axis=axis)), lab, _foreground(lab)))
    return pairs


def train_segmenter(
    volumes: Sequence[tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    voxel_size_A: float | None,
    val_volumes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    *,
    model_kind: str = "2d",
    epochs: int = 20,
    steps_per_epoch: int = 20,
    patch: int = 64,
    batch_size: int = 4,
    base_channels: int = 16,
    depth: int = 2,
    learning_rate: float = 2e-3,
    dice_weight: float = 1.0,
    patience: int = 6,
    min_epochs: int = 0,
    stop_window: int = 3,
    slice_axes: str = "z",
    context: int = 4,
    start_from: str | Path | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int = 0,
    val_patches: int = 16,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    max_minutes: float | None = None,
    hold_out: str = "auto",
    rotate_any: bool | None = None,
    flip_channels: bool | None = None,
    balance_classes: bool | None = None,
    cpu_precision: str = "auto",
    polarity: str = "auto",
    name: str = "segment_user",
    training_command: str = "",
    training_data: str = "",
) -> Generator[Progress, None, TrainedSegmenter]:
    """Train a segmentation U-Net on painted labels (job).

    Parameters
    ----------
    volumes : sequence of (tomogram, labels)
        Tomograms float (z, y, x) and painted labels int (z, y, x): 0 = not painted
        (ignored), class index k painted as k + 1 (:mod:`tomolens.segment.labels`).
    class_names : sequence of str
        Class names, background first.
    voxel_size_A : float or None
        Voxel size of the tomograms in Å (goes on the card; prediction rescales to it).
    val_volumes : sequence of (tomogram, labels), optional
        Separate validation data; without it, as ``hold_out`` says.
    model_kind : {"2d", "3d"}
        Slice U-Net or volumetric U-Net.
    patch : int
        Patch edge (2D: patch × patch slices; 3D: cubes).
    dice_weight : float
        Weight of the soft Dice term added to the cross-entropy.
    slice_axes : {"z", "zyx"}
        2D only: train on z-slices, or also on orthogonal slices through painted voxels.
    context : int
        2D only: neighbouring slices on each side read with every slice (input channels of
        a 2.5D slice U-Net; 0 = the slice alone, the seed's network).
    start_from : str or path, optional
        Fine-tune an existing segmentation model (a shipped name or a ``.pt``) instead of
        a fresh network: its architecture, kind and weights are used (``model_kind``,
        ``base_channels``, ``depth`` and ``context`` are then ignored).  When its classes are not
        ``class_names`` in the same order, its output layer is replaced by one with a channel per
        named class, copied from the model's channel of the same name (or a synonym) where it has
        one (:mod:`tomolens.segment.start`); the card's ``extra["start_from"]`` records which.
        Empty or None: train from scratch.
    threads : int
        CPU threads for torch, set in the thread that runs the job (0 = all cores but one).
    hold_out : {"auto", "strip", "none"}
        Without ``val_volumes``: hold back the last quarter along y of the painted slices to
        choose the epoch ("strip"), or train on every painted voxel and keep the last epoch
        ("none"); "auto" = "none" for a new network, "strip" when fine-tuning.
    rotate_any, flip_channels : bool, optional
        Augmentation by any-angle y-x rotations (with a 0.85–1.15 scale) and by z-flips of the
        2.5D slab (:class:`tomolens.models.training.PatchSampler`); default: on for slice networks
        (filament / membrane Dice on validation tomogram 7100 from 5 painted slices 0.56 / 0.66
        without, 0.56 / 0.81 with them), off for 3D.
    balance_classes : bool, optional
        Centre training patches on every painted class equally often (a class first, then one
        of its painted voxels) rather than on painted voxels alike; default: on for painted
        (sparse) labels.  From 5 painted slices of 64×512×512 validation tomograms 7100–7101
        (filaments 1.2–1.4 % of the voxels), filament Dice 0.48 / 0.60 → 0.56 / 0.66 and membrane
        0.92 / 0.92 → 0.90 / 0.92; on 64×128×128 ones (filaments 2.4–4.0 %) filament 0.65 / 0.61 →
        0.66 / 0.60.
    cpu_precision : {"auto", "float32", "bfloat16"}
        Precision of the training forward passes on a CPU (:attr:`TrainConfig.cpu_bf16`; "auto" =
        bfloat16 where the CPU has bfloat16 instructions; the card records ``training_precision``).
    checkpoint, resume, min_epochs, stop_window : see :class:`tomolens.models.training.TrainConfig`.
    Other parameters: see :data:`tomolens.segment.settings.TRAIN_PARAMS`.

    Yields
    ------
    Progress
        Every few steps; at every epoch end with ``info`` (epoch, loss, val_loss).

    Returns
    -------
    TrainedSegmenter
        Network (best validation epoch, or the last with nothing held out; CPU, eval mode) and its
        card (not yet saved).

    Raises
    ------
    ValueError
        Bad labels (shape, nothing painted, one class, unknown values) or settings.
    """
    from functools import partial

    from tomolens.models.card import ModelCard
    from tomolens.models.cli import cpu_bf16
    from tomolens.models.device import choose_device
    from tomolens.models.training import TrainConfig, train_model
    from tomolens.segment.losses import painted_dice_score, sparse_segmentation_loss
    from tomolens.segment.networks import build_segmentation_network

    names = check_class_names(class_names)
    start_from = start_model(start_from)
    start_net, start_card, new_head = load_start_model(start_from, names, seed) if start_from else (None, None, None)
    if start_card is not None:
        voxel_size_A = check_start_voxel_size(start_card, voxel_size_A)
        model_kind = model_kind_of(start_card)
        depth = int(start_card.arch_kwargs.get("depth", depth))
        context = context_of(start_card)
    if model_kind not in ("2d", "3d"):
        raise ValueError(f"model_kind must be '2d' or '3d'; got {model_kind!r}.")
    context = int(context) if model_kind == "2d" else 0
    if context < 0:
        raise ValueError(f"context must be 0 or more slices; got {context}.")
    if not volumes:
        raise ValueError("Training needs at least one (tomogram, labels) pair.")
    multiple = 2**depth
    if patch % multiple:
        raise ValueError(f"The patch edge {patch} must be divisible by 2**depth = {multiple}.")
    from tomolens.polarity import model_polarity, to_model_polarity

    # the network sees its own contrast convention: the starting model's, or bright for new ones
    net_polarity = model_polarity(start_card) if start_card is not None else "bright"
    checked, decisions = [], []
    for vol, lab in volumes:
        if np.ndim(vol) != 3:
            raise ValueError(f"Segmentation trains on 3D tomograms; got shape {np.shape(vol)}.")
        data, decision = to_model_polarity(vol, polarity, net_polarity, voxel_size_A)
        decisions.append(decision.to_dict())
        checked.append((data, check_painted_labels(lab, np.shape(vol), names)))
    hold_out = resolve_hold_out(hold_out, start_card is not None) if not val_volumes else "separate"
    if val_volumes:
        val = [
            (
                to_model_polarity(v, polarity, net_polarity, voxel_size_A)[0],
                check_painted_labels(lab, np.shape(v), names),
            )
            for v, lab in val_volumes
        ]
        train = checked
    elif hold_out == "none":
        train, val = checked, checked  # every painted voxel trains; "validation" then shows the fit
    else:
        splits = [_split_y(v, lab) for v, lab in checked]
        train, val = [s[0] for s in splits], [s[1] for s in splits]
        if not any(np.any(lab > 0) for _, lab in val):
            raise ValueError(
                "The validation region (last quarter of the tomogram along y) has no painted voxels: "
                "paint across the whole width of the slices."
            )
    train_pairs = [p for v, lab in train for p in make_pairs(v, lab, model_kind, slice_axes, context)]
    val_pairs = [p for v, lab in val for p in make_pairs(v, lab, model_kind, slice_axes, context)]
    if not val_pairs:
        raise ValueError("No validation data with painted voxels.")
    device = choose_device(device)
    set_torch_threads(device, threads)
    if start_card is None:
        import torch

        torch.manual_seed(seed)  # the initial weights follow the seed too (they drew from the global state)
        net, architecture, arch_kwargs = build_segmentation_network(
            model_kind, len(names), base_channels, depth, context
        )
    else:
        net, architecture, arch_kwargs = start_net, start_card.architecture, dict(start_card.arch_kwargs)
        if new_head is not None:
            arch_kwargs["out_channels"] = len(names)
    patch_size = (patch,) * (2 if model_kind == "2d" else 3)
    sparse = any(np.mean(lab > 0) < 0.5 for _, lab in train)
    config = TrainConfig(
        patch_size=patch_size,
        batch_size=batch_size,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        val_patches=val_patches,
        learning_rate=learning_rate,
        patience=patience,
        min_epochs=min_epochs,
        stop_window=stop_window,
        foreground_fraction=1.0 if sparse else 0.5,
        seed=seed,
        device=device,
        checkpoint=checkpoint,
        resume=resume,
        max_minutes=max_minutes,
        keep_start_if_best=start_card is not None and hold_out != "none",
        keep_last=hold_out == "none",
        val_score=painted_dice_score,
        ema_decay=EMA_DECAY,
        rotate_any=model_kind == "2d" if rotate_any is None else bool(rotate_any),
        flip_channels=model_kind == "2d" and bool(context if flip_channels is None else flip_channels),
        balance_classes=sparse if balance_classes is None else bool(balance_classes),
        cpu_bf16=cpu_bf16(cpu_precision),
    )
    loss = partial(sparse_segmentation_loss, dice_weight=dice_weight)
    result = yield from train_model(net, train_pairs, val_pairs, loss, config)
    painted_counts = {n: int(sum(np.sum(lab == k + LABEL_OFFSET) for _, lab in checked)) for k, n in enumerate(names)}
    # a fine-tuned model predicts like its starting model (tiles of twice the card's patch); the
    # patch it was fine-tuned on is a training detail, kept in extra["training_patch"]
    card_patch = list(start_card.patch_size) if start_card is not None and start_card.patch_size else list(patch_size)
    card = ModelCard(
        name=name,
        task="segment",
        architecture=architecture,
        arch_kwargs=arch_kwargs,
        classes=names,
        voxel_size_A=None if voxel_size_A is None else float(voxel_size_A),
        patch_size=card_patch,
        normalisation="zscore",
        polarity=net_polarity,
        training_command=training_command,
        training_data=(
            training_data
            or (
                f"{len(checked)} painted tomogram(s) {[tuple(v.shape) for v, _ in checked]}; painted voxels per "
                f"class {painted_counts}; validation: "
                + {
                    "separate": "separate volumes",
                    "strip": "last quarter along y of each tomogram",
                    "none": "none (every painted voxel trained; the last epoch kept)",
                }[hold_out]
            )
        )
        + (f"; fine-tuned from {start_card.name} (sha256 {start_card.sha256[:12]}…)" if start_card else "")
        + (
            f" with a new output layer (copied from it: {new_head['copied']}; new: {new_head['new']})"
            if new_head
            else ""
        ),
        seed=seed,
        metrics=(
            {
                "best_epoch": result.best_epoch,
                "best_val_loss": round(float(result.best_val_loss), 5),
                "best_val_dice": None if result.best_val_score is None else round(float(result.best_val_score), 4),
            }
            if hold_out != "none"
            else {
                "kept_epoch": result.best_epoch,
                "painted_fit_loss": round(float(result.best_val_loss), 5),
                "painted_fit_dice": None if result.best_val_score is None else round(float(result.best_val_score), 4),
            }
        )
        | {"validation": hold_out, "epochs_run": len(result.history)}
        | ({"start_val_loss": round(float(result.start_val_loss), 5)} if result.start_val_loss is not None else {}),
        extra={
            "model_kind": model_kind,
            "slice_axes": slice_axes if model_kind == "2d" else "zyx",
            **({"context_slices": context} if model_kind == "2d" else {}),
            "label_offset": LABEL_OFFSET,
            "dice_weight": dice_weight,
            "history": result.history,
            "training_patch": list(patch_size),
            "training_precision": result.precision,
            "training_budget": result.budget,
            "training_polarity": decisions,
            **({"start_from": start_record(start_card, new_head)} if start_card else {}),
        },
    )
    return TrainedSegmenter(result.model.cpu().eval(), card, result.history)


def start_record(start_card, new_head: dict | None) -> dict:
    """``extra["start_from"]`` of a fine-tuned model's card: the start model's name and sha256; with a new
    output layer also its classes and which channels were copied (``copied``: class → start class) or new."""
    record = {"name": start_card.name, "sha256": start_card.sha256}
    if new_head is not None:
        record |= {"classes": list(start_card.classes), "output_layer": new_head}
    return record


def check_start_voxel_size(card, voxel_size_A: float | None) -> float:
    """The voxel size to fine-tune at: the tomogram's, which must be the starting model's within 10 %.

    A tomogram without a voxel size takes the model's.  Raises ValueError when they differ
    (the network would learn at another scale than it was trained at).
    """
    model_vs = card.voxel_size_A
    if voxel_size_A is None or not model_vs:
        return voxel_size_A if voxel_size_A is not None else model_vs
    if abs(float(voxel_size_A) / float(model_vs) - 1) > 0.1:
        raise ValueError(
            f"Cannot fine-tune {card.name} ({float(model_vs):g} Å voxels) on a tomogram of {float(voxel_size_A):g} Å "
            f"voxels: rescale (bin) the tomogram to {float(model_vs):g} Å first, or train a new network "
            f"(widget: 'segment start from' = {NEW_NETWORK}; CLI: --segment-start-from {NEW_NETWORK})."
        )
    return float(voxel_size_A)


def set_torch_threads(device: str, threads: int) -> None:
    """Torch CPU threads for the calling thread (a widget's worker thread does not inherit them)."""
    import torch

    from tomolens.models.device import set_cpu_threads

    if device == "cpu":
        if threads:
            torch.set_num_threads(int(threads))
        else:
            set_cpu_threads()


def save_segmenter(trained: TrainedSegmenter, path: str | Path) -> Path:
    """Write ``NAME.pt`` + ``NAME.json`` (card named after the file); returns the weights path."""
    from tomolens.models.card import save_model

    path = Path(path).with_suffix(".pt")
    trained.card.name = path.stem
    weights, _ = save_model(trained.model, trained.card, path)
    return weights


def register_train_args(group: argparse._ArgumentGroup) -> None:
    """Segmentation options of ``tomolens train`` (see :mod:`tomolens.segment.train_cli`)."""
    from tomolens.segment.train_cli import register_train_args as register

    register(group)


def run_train(args: argparse.Namespace) -> int:
    """``tomolens train --task segment`` (see :mod:`tomolens.segment.train_cli`)."""
    from tomolens.segment.train_cli import run_train as run

    return run(args)
