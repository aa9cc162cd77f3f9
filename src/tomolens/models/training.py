"""A generic patch-based training loop, as a job.

Every trainable task (detection, segmentation, …) hands :func:`train_model` a network,
training and validation (image, target) pairs and a loss; the loop does the rest:

- :class:`~tomolens.models.sampling.PatchSampler` draws random patches (half of them centred
  on foreground by default, or on each painted class in turn with ``balance_classes``) with
  augmentation — flips along every axis, 90° rotations in the y-x plane only (so the missing
  wedge stays along z) and an intensity scale/shift of the input;
- on a CPU with bfloat16 instructions the training forward passes run in bfloat16
  (``cpu_bf16``; the loss, the weights and validation stay float32);
- validation patches are drawn once, from the validation pairs (separate volumes or
  regions), without augmentation;
- the budget is ``epochs × steps_per_epoch`` optimiser steps at a constant learning rate, so
  the same data, settings and seed give the same weights on the same machine; ``max_minutes``
  is a user's wall-clock limit on top (a run it ends depends on the machine's load);
- early stopping watches the median of the last ``stop_window`` validation losses (or of a
  validation score such as a Dice, when the task gives one), never before ``min_epochs``
  (:class:`~tomolens.models.stopping.EarlyStopping`); the best epoch's weights are restored;
- optionally an exponential moving average of the weights (``ema_decay``) is what is
  validated and returned;
- a checkpoint (model, optimiser, history, random states) is written atomically after
  every epoch and ``resume=True`` continues from it (a run that had stopped early gets a fresh
  patience window: resuming it asks for more training);
- it yields :class:`~tomolens.jobs.Progress` every few steps and, at the end of every
  epoch, one with ``info={"epoch", "loss", "val_loss", …}`` for live loss plots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomolens.io.atomic import atomic_path
from tomolens.jobs import Progress
from tomolens.models.device import cpu_has_native_bf16
from tomolens.models.sampling import PatchSampler, TrainingPair
from tomolens.models.stopping import EarlyStopping, training_budget

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of :func:`train_model` (see the CLI's ``tomolens train --help``)."""

    patch_size: tuple[int, ...] = (32, 32, 32)
    batch_size: int = 4
    epochs: int = 30
    steps_per_epoch: int = 40
    val_patches: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 6
    #: Early stopping never stops before this many epochs.
    min_epochs: int = 0
    #: Early stopping compares the median of the last ``stop_window`` validation values (1 = raw).
    stop_window: int = 3
    foreground_fraction: float = 0.5
    augment: bool = True
    seed: int = 0
    device: str = "cpu"
    checkpoint: str | Path | None = None
    resume: bool = False
    max_minutes: float | None = None
    #: Fine-tuning: score the starting weights on the validation patches first, so that
    #: training returns them unchanged when no epoch beats them (best_epoch 0).
    keep_start_if_best: bool = False
    #: Exponential moving average of the weights (e.g. 0.99; 0 = off): validation, the best
    #: epoch and the returned model use the averaged weights, which do not jump from step to
    #: step as the raw ones do on small, noisy training sets.
    ema_decay: float = 0.0
    #: Augmentation beyond flips and quarter turns (see
    #: :class:`~tomolens.models.sampling.PatchSampler`): any-angle y-x rotations with a scale of
    #: 0.85–1.15, and reversing the input channels.
    rotate_any: bool = False
    flip_channels: bool = False
    #: Training forward passes in bfloat16 on the CPU (autocast; the loss, the weights, validation
    #: and prediction stay float32): None = where the CPU has bfloat16 instructions
    #: (:func:`tomolens.models.device.cpu_has_native_bf16`).  A 2.5D slice U-Net's training step
    #: (batch 8, 96×96, depth 3, 1 thread) took 0.28 s in float32 and 0.15–0.17 s in bfloat16 on
    #: the project's AVX512-BF16 CPU.  Results then depend on the CPU: the card records
    #: ``training_precision``, and ``cpu_precision`` float32 reproduces a float32 run anywhere.
    cpu_bf16: bool | None = None
    #: Centre foreground patches on each painted class equally often (see
    #: :class:`~tomolens.models.sampling.PatchSampler`).
    balance_classes: bool = False
    #: Keep the last epoch's weights (the averaged ones with ``ema_decay``) instead of the best
    #: validation epoch's, and never stop early: for training on every labelled voxel, where
    #: the "validation" pairs are the training data and only show the fit.
    keep_last: bool = False
    #: Optional ``val_score(logits, target) -> float`` on all validation patches at once,
    #: higher is better (for example a Dice): when given, the best epoch and early stopping
    #: follow it instead of the validation loss (a loss can rise while the labels improve).
    val_score: Callable | None = None


@dataclass
class TrainResult:
    """What training returns: the model with its best weights, and the history."""

    model: object
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    stopped_early: bool = False
    start_val_loss: float | None = None
    best_val_score: float | None = None
    #: "bfloat16" when the forward passes ran in bfloat16 on the CPU (:attr:`TrainConfig.cpu_bf16`),
    #: "float32", or "mixed" for a resumed run whose parts ran in different precisions
    precision: str = "float32"
    #: The step budget, what was run and why it ended, for the card
    #: (:func:`tomolens.models.stopping.training_budget`).
    budget: dict = field(default_factory=dict)


#: Entries every training checkpoint holds (see :func:`train_model`'s checkpoint writes).
CHECKPOINT_KEYS = ("model", "optimiser", "best_state", "history", "best_epoch", "bad_epochs", "epoch", "rng")


def _read_checkpoint(ckpt: Path) -> dict:
    """A training checkpoint's state (``weights_only`` load), or ValueError saying why it cannot be resumed."""
    import torch

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise ValueError(
            f"Cannot resume: {ckpt.name} is not a readable tomolens checkpoint ({type(err).__name__}). "
            "Train without --resume, or save to another file."
        ) from err
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"Cannot resume: {ckpt.name} is not a tomolens training checkpoint (it lacks {', '.join(missing)}). "
            "Train without --resume, or save to another file."
        )
    return state


def _to_torch_target(y: np.ndarray, device: str):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(y))
    t = t.long() if np.issubdtype(y.dtype, np.integer) else t.float()
    return t.to(device)


def train_model(
    model,
    train_pairs: Sequence[TrainingPair],
    val_pairs: Sequence[TrainingPair],
    loss_fn: Callable,
    config: TrainConfig,
) -> Generator[Progress, None, TrainResult]:
    """Train ``model`` on random patches with validation-based early stopping.

    Parameters
    ----------
    model : torch.nn.Module
        Network mapping (N, K, *patch) to (N, C, *patch) logits (K = 1 unless the pairs have channels).
    train_pairs, val_pairs : sequence of TrainingPair
        Training data and validation data (never the same voxels, except with ``keep_last``,
        where the "validation" pairs may be the training data and only show the fit).
    loss_fn : callable
        ``loss_fn(logits, target) -> scalar tensor``; targets are float tensors, or
        int64 tensors when the target arrays are integer (e.g. class labels).
    config : TrainConfig

    Yields
    ------
    Progress
        Every 5 steps (``done`` counts steps) and at every epoch end with
        ``info={"epoch", "loss", "val_loss", "best_val_loss", "seconds"}`` (``best_val_loss``:
        the validation loss of the best epoch so far), plus ``"val_score"`` and
        ``"best_val_score"`` with a ``val_score``, and ``"val_is_fit": True`` with ``keep_last``
        (the "validation" figures are then the fit on the training data).

    Returns
    -------
    TrainResult
        ``model`` with the weights of its best validation epoch (its last with ``keep_last``; eval mode) and the
        per-epoch history.
    """
    import torch

    if not val_pairs:
        raise ValueError("Training needs validation data (separate volumes or regions) for early stopping.")
    device = config.device
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    sampler = PatchSampler(
        train_pairs,
        config.patch_size,
        config.foreground_fraction,
        config.augment,
        rotate_any=config.rotate_any,
        flip_channels=config.flip_channels,
        balance_classes=config.balance_classes,
    )
    val_sampler = PatchSampler(val_pairs, config.patch_size, config.foreground_fraction, augment=False)
    val_rng = np.random.default_rng(config.seed + 10_000)
    val_x, val_y = val_sampler.sample(config.val_patches, val_rng, augment=False)

    model.to(device)
    bf16 = device == "cpu" and (cpu_has_native_bf16() if config.cpu_bf16 is None else bool(config.cpu_bf16))
    precision = "bfloat16" if bf16 else "float32"
    if bf16:
        log.info("training forward passes in bfloat16 on the CPU")
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history: list[dict] = []
    best_epoch, bad_epochs = 0, 0
    best_loss, best_score = float("inf"), None  # validation loss and score of the best epoch
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch = 0
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if config.resume:
        if ckpt is None or not ckpt.is_file():
            raise ValueError(f"Cannot resume: no checkpoint at {ckpt}. Train without --resume first.")
        state = _read_checkpoint(ckpt)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, AttributeError) as err:
            raise ValueError(
                f"Cannot resume: the checkpoint {ckpt.name} was written by a different network (another kind, "
                "width, depth, input channels/context, classes or starting model). Train without resume, or save "
                "to another file."
            ) from err
        try:
            optimiser.load_state_dict(state["optimiser"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"Cannot resume: the optimiser state in {ckpt.name} does not fit this network "
                f"({err}). Train without resume, or save to another file."
            ) from err
        best_state = state["best_state"]
        history = list(state["history"])
        best_epoch, bad_epochs = state["best_epoch"], state["bad_epochs"]
        # checkpoints from before scores were kept hold the best loss as "best_val"
        best_loss, best_score = state.get("best_loss", state.get("best_val")), state.get("best_score")
        start_epoch = state["epoch"]
        rng.bit_generator.state = state["rng"]
        if state.get("precision", "float32") != precision:  # checkpoints from before bfloat16 were float32
            log.warning("resuming a %s run in %s", state.get("precision", "float32"), precision)
            precision = "mixed"
        log.info("resumed from %s at epoch %d", ckpt, start_epoch)
        if (
            state.get("criterion", "loss") != _criterion_name(config)
            or bool(state.get("keep_last", False)) != config.keep_last
        ):
            # the best epoch was chosen by the other criterion (a loss vs minus a score), or against other
            # "validation" data (kept last on the training voxels vs best on held-back ones): score it again
            best_loss, best_score = _evaluate_state(model, best_state, loss_fn, val_x, val_y, config, device)
        if bad_epochs >= config.patience:
            # the run had stopped early: resuming asks for more training, so give it a fresh patience window
            log.info("the run had stopped early; resuming allows %d more epochs without improvement", config.patience)
            bad_epochs = 0
    ema = _weight_average(model, config.ema_decay)
    if ema is not None and config.resume and "ema" in state:
        ema.load_state_dict(state["ema"])
    scored = ema.module if ema is not None else model  # the weights that are validated and kept
    start_val = None
    if config.keep_start_if_best and not config.resume:
        start_val, best_score = _evaluate(model, loss_fn, val_x, val_y, config.batch_size, device, config.val_score)
        best_loss = start_val
        log.info("validation loss of the starting weights: %.4f", start_val)

    stopping = EarlyStopping(
        config.patience,
        config.min_epochs,
        config.stop_window,
        baseline=_criterion(best_loss, best_score) if start_val is not None else float("inf"),
    )
    if config.resume and not config.keep_last:
        if state.get("criterion", "loss") == _criterion_name(config):  # the same criterion: its history counts
            stopping.replay(_criterion(h["val_loss"], h.get("val_score")) for h in history)
        stopping.bad_epochs = bad_epochs  # the checkpoint's count (reset above when it had stopped)
    total = config.epochs * config.steps_per_epoch
    t0 = time.monotonic()
    stopped = False
    stopped_by = "epoch budget"
    for epoch in range(start_epoch, config.epochs):
        model.train()
        losses = []
        for step in range(config.steps_per_epoch):
            x, y = sampler.sample(config.batch_size, rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(torch.from_numpy(x).to(device))
            loss = loss_fn(logits.float(), _to_torch_target(y, device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if ema is not None:
                ema.update_parameters(model)
            losses.append(float(loss.detach()))
            if (step + 1) % 5 == 0 and step + 1 < config.steps_per_epoch:
                yield Progress(
                    epoch * config.steps_per_epoch + step + 1, total, f"epoch {epoch + 1}: loss {np.mean(losses):.4f}"
                )
        val_loss, score = _evaluate(scored, loss_fn, val_x, val_y, config.batch_size, device, config.val_score)
        train_loss = float(np.mean(losses))
        improved = config.keep_last or _criterion(val_loss, score) < _criterion(best_loss, best_score) - 1e-5
        if improved:
            best_epoch = epoch + 1
            best_loss, best_score = val_loss, score
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        if not config.keep_last:
            stopping.update(_criterion(val_loss, score))
        bad_epochs = stopping.bad_epochs
        record = {
            "epoch": epoch + 1,
            "loss": train_loss,
            "val_loss": val_loss,
            "best_val_loss": best_loss,
            "seconds": round(time.monotonic() - t0, 1),
        }
        if score is not None:
            record |= {"val_score": score, "best_val_score": best_score}
        if config.keep_last:
            record["val_is_fit"] = True
        history.append(record)
        log.info("epoch %d: loss %.4f val_loss %.4f%s", epoch + 1, train_loss, val_loss, " *" if improved else "")
        if ckpt is not None:
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "best_state": best_state,
                        "history": history,
                        "best_loss": best_loss,
                        "best_score": best_score,
                        "criterion": _criterion_name(config),
                        "keep_last": config.keep_last,
                        "precision": precision,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "epoch": epoch + 1,
                        "rng": rng.bit_generator.state,
                    }
                    | ({"ema": ema.state_dict()} if ema is not None else {}),
                    tmp,
                )
        yield Progress(
            (epoch + 1) * config.steps_per_epoch,
            total,
            f"epoch {epoch + 1}: loss {train_loss:.4f}, val {val_loss:.4f}",
            info=dict(record),
        )
        if not config.keep_last and stopping.should_stop:
            log.info("early stop: no improvement of the smoothed validation value for %d epochs", bad_epochs)
            stopped, stopped_by = True, "early stopping"
            break
        if config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes:
            log.info("stopping: time limit of %.1f min used", config.max_minutes)
            stopped, stopped_by = True, "time limit"
            break
    model.load_state_dict(best_state)
    model.eval()
    budget = training_budget(
        config.epochs,
        config.steps_per_epoch,
        len(history),
        len(history) * config.steps_per_epoch,
        stopped_by,
        stopping,
        config.max_minutes,
    )
    return TrainResult(model, history, best_epoch, best_loss, stopped, start_val, best_score, precision, budget)


def _weight_average(model, decay: float):
    """torch's AveragedModel keeping an exponential moving average of ``model`` (None when decay is 0).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so a short training is not averaged
    with its first random steps.
    """
    if not decay:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be between 0 and 1 (0 = off); got {decay}.")
    from torch.optim.swa_utils import AveragedModel

    def average(averaged, current, n_averaged):
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        return d * averaged + (1.0 - d) * current

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def _evaluate(
    model, loss_fn, x: np.ndarray, y: np.ndarray, batch_size: int, device: str, score_fn: Callable | None = None
) -> tuple[float, float | None]:
    """(mean validation loss, ``score_fn`` on all validation outputs or None)."""
    import torch

    model.eval()
    total, n, outputs = 0.0, 0, []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[i : i + batch_size]).to(device)
            logits = model(xb)
            loss = loss_fn(logits, _to_torch_target(y[i : i + batch_size], device))
            total += float(loss) * len(xb)
            n += len(xb)
            if score_fn is not None:
                outputs.append(logits.float().cpu())
    score = float(score_fn(torch.cat(outputs), _to_torch_target(y, "cpu"))) if score_fn is not None else None
    return total / max(n, 1), score


def _criterion_name(config: TrainConfig) -> str:
    return "score" if config.val_score is not None else "loss"


def _evaluate_state(model, state: dict, loss_fn, x, y, config: TrainConfig, device: str):
    """(loss, score) of weights ``state`` on the validation patches, on a copy of ``model``."""
    import copy

    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return _evaluate(other, loss_fn, x, y, config.batch_size, device, config.val_score)


def _criterion(val_loss: float, score: float | None) -> float:
    """What the best epoch minimises: minus the score when there is one, else the loss."""
    return -score if score is not None else val_loss
