"""Training and evaluation of the subtomogram classifiers (jobs).

:func:`train_classifier` trains on a train split, watches the validation split after
every epoch (loss, accuracy), keeps the weights of the best validation loss and stops
when the median of its last few values has not improved for ``patience`` epochs (never
before ``min_epochs``; :class:`~tomolens.models.stopping.EarlyStopping`).  The budget is a
number of epochs (each one pass over the train split) and the learning-rate schedule
follows optimiser steps, so the same data, settings and seed give the same weights on the
same machine however loaded it is; the optional wall-clock limit ``max_minutes`` is for
users and never decides a published figure.  The test split is never seen here;
:func:`evaluate` scores it afterwards (accuracy, confusion matrix).

Augmentation respects the missing wedge: the wedge is symmetric about the beam axis
(z), so only rotations by multiples of 90° about z, flips of x and y, and a flip of z
are used — each maps the wedge onto itself.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field

import numpy as np

from tomolens.jobs import Progress
from tomolens.models.cli import engine_param
from tomolens.params import Param

log = logging.getLogger(__name__)

#: Settings of classifier training, shared by the Classify widget's training box and
#: ``tomolens train --task classify`` (the classify-only options are prefixed; epochs,
#: patience, batch size and learning rate are the engine's options with its defaults).
TRAIN_PARAMS = (
    Param(
        "classify_arch",
        "resnet",
        "Small residual 3D CNN (resnet) or the seed's 3D CNN (seed)",
        choices=("resnet", "seed"),
    ),
    engine_param("epochs", help="Maximum training epochs (stops early on the validation loss)"),
    engine_param("patience", advanced=True),
    engine_param("min_epochs", advanced=True),
    engine_param("stop_window", advanced=True),
    engine_param(
        "max_minutes",
        help="Stop after the epoch that passes this many minutes (0 = no limit; the "
        "result then depends on the machine's load, the epochs do not)",
        advanced=True,
    ),
    engine_param(
        "batch_size",
        help="Subtomograms per optimiser step (default 4, the engine's, shared with the "
        "U-Net tasks; 16-32 gives faster epochs on large datasets)",
        advanced=True,
    ),
    engine_param(
        "learning_rate",
        help="Peak AdamW learning rate of the warm-up + cosine schedule (default 1e-3, "
        "the engine's; it suits both networks)",
        step=1e-4,
        advanced=True,
    ),
    Param("classify_box_A", 320.0, "Box edge in Å for training from labelled points", min=10.0),
    Param(
        "classify_label_column",
        "class",
        "Points feature holding the class of labelled particles (class = rlnClassNumber)",
        type=str,
    ),
)


@dataclass
class TrainConfig:
    """Settings of one training run.

    Attributes
    ----------
    architecture : {"resnet", "seed"}
        :class:`~tomolens.classify.networks.ResNet3DSmall` or the seed's
        :class:`~tomolens.classify.networks.SeedCNN3D`.
    epochs : int
        Most epochs.
    patience : int
        Stop after this many epochs without a lower smoothed validation loss.
    min_epochs : int
        Never stop early before this many epochs.
    stop_window : int
        The smoothed validation loss is the median of the last ``stop_window`` epochs' (1 = raw).
    batch_size : int
    learning_rate : float
        Peak AdamW learning rate: warm-up, then cosine decay over the ``epochs`` budget's
        optimiser steps (see :func:`learning_rate_at`).
    weight_decay : float
    augment : bool
        Wedge-preserving rotations/flips of the training cubes.
    seed : int
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    max_minutes : float or None
        A user's wall-clock limit: stop after the epoch that passes it.  It does not change
        the learning-rate schedule; a run it ends depends on the machine's load (the card
        says ``stopped_by: "time limit"``), so benchmarks never set it.
    arch_kwargs : dict
        Extra keyword arguments of the network (``dropout``, ``width``).
    """

    architecture: str = "resnet"
    epochs: int = 30
    patience: int = 6
    min_epochs: int = 0
    stop_window: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    max_minutes: float | None = None
    arch_kwargs: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """A trained classifier and its history.

    Attributes
    ----------
    model : torch.nn.Module
        Best-validation weights, eval mode, on the CPU.
    history : list of dict
        Per epoch: ``epoch``, ``loss``, ``val_loss``, ``val_acc``.
    best_epoch : int
        1-based epoch whose weights were kept (lowest raw validation loss).
    config : TrainConfig
    arch_kwargs : dict
        The network's constructor arguments (``n_classes``, ``box``…), for its card.
    budget : dict
        The step budget, what was run and why it ended
        (:func:`tomolens.models.stopping.training_budget`).
    unknown : dict
        Feature statistics and calibrated threshold for unknown detection
        (:meth:`tomolens.classify.unknown.UnknownModel.to_dict`); empty when they could not
        be fitted (``unknown_note`` says why).
    unknown_note : str
    """

    model: object
    history: list
    best_epoch: int
    config: TrainConfig
    arch_kwargs: dict = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    unknown: dict = field(default_factory=dict)
    unknown_note: str = ""


def augment_batch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random wedge-preserving symmetry per cube.

    Parameters
    ----------
    x : ndarray, float32, shape (B, z, y, x)

    Returns
    -------
    ndarray, same shape (a new array)
    """
    out = np.empty_like(x)
    for i, cube in enumerate(x):
        cube = np.rot90(cube, k=int(rng.integers(4)), axes=(1, 2))
        if rng.random() < 0.5:
            cube = cube[:, :, ::-1]
        if rng.random() < 0.5:
            cube = cube[::-1]
        out[i] = cube  # rot90 and a y flip together cover the x/y flips
    return out


def learning_rate_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Warm-up (the first 10 % of the steps) then cosine decay to 2 % of the peak rate.

    Parameters
    ----------
    step : int
        Optimiser steps taken.
    total_steps : int
        The budget's steps (``epochs`` × steps per epoch).  The schedule depends on steps
        only, never on elapsed time, so a loaded machine trains the same way as an idle one.
    """
    progress = min(step / max(total_steps, 1), 1.0)
    warm = 0.1
    if progress < warm:
        return config.learning_rate * (0.1 + 0.9 * progress / warm)
    return config.learning_rate * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))


def check_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, name: str) -> None:
    """Refuse a split whose shapes or labels do not fit."""
    if x.ndim != 4 or len(set(x.shape[1:])) != 1:
        raise ValueError(f"The {name} split must be cubes of shape (N, b, b, b); got {x.shape}.")
    if len(x) != len(y):
        raise ValueError(f"The {name} split has {len(x)} cubes but {len(y)} labels.")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"The {name} split has labels outside 0..{n_classes - 1}.")


def _batches(n: int, size: int, rng: np.random.Generator | None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, size):
        yield order[start : start + size]


def predict_logits(model, x: np.ndarray, batch_size: int = 64, device: str = "cpu", with_features: bool = False):
    """Logits (and the subdivision embedding, see ``forward_with_embedding``) of ``model`` for cubes ``x``.

    Parameters
    ----------
    x : ndarray, float32, shape (N, b, b, b)

    Returns
    -------
    ndarray (N, C) or (logits (N, C), features (N, F))
    """
    import torch

    model.eval()
    logits, feats = [], []
    with torch.no_grad():
        for idx in _batches(len(x), batch_size, None):
            xb = torch.from_numpy(np.ascontiguousarray(x[idx], np.float32)[:, None]).to(device)
            lg, f = model.forward_with_embedding(xb)
            logits.append(lg.cpu().numpy())
            if with_features:
                feats.append(f.cpu().numpy())
    n_out = model.classifier[-1].out_features
    logits = np.concatenate(logits) if logits else np.empty((0, n_out), np.float32)
    if with_features:
        feats = np.concatenate(feats) if feats else np.empty((0, 0), np.float32)
        return logits, feats
    return logits


def train_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    class_names: list[str],
    config: TrainConfig | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Train a classifier with early stopping on the validation split (a job).

    Parameters
    ----------
    x_train, x_val : ndarray, float32, shape (N, b, b, b)
        Z-scored cubes.
    y_train, y_val : ndarray, int64, shape (N,)
        Class indices into ``class_names``.
    class_names : list of str
    config : TrainConfig, optional

    Yields
    ------
    Progress
        One per epoch, ``info={"loss", "val_loss", "val_acc", "epoch", "smoothed_val_loss"}``.

    Returns
    -------
    TrainResult
    """
    import torch
    from torch import nn

    from tomolens.classify.networks import ARCHITECTURES
    from tomolens.models.card import ModelCard, build_network
    from tomolens.models.device import choose_device
    from tomolens.models.stopping import EarlyStopping, training_budget

    config = config or TrainConfig()
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(f"A classifier needs at least 2 classes; got {class_names}.")
    check_dataset(x_train, y_train, n_classes, "train")
    check_dataset(x_val, y_val, n_classes, "validation")
    if len(x_val) == 0:
        raise ValueError("The validation split is empty; early stopping needs validation data.")
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}; got {config.architecture!r}.")
    box = int(x_train.shape[1])
    card = ModelCard(
        name="training",
        task="classify",
        architecture=ARCHITECTURES[config.architecture],
        arch_kwargs={"n_classes": n_classes, "box": box, **config.arch_kwargs},
    )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = choose_device(config.device)
    model = build_network(card).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(x_train) / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    loss_fn = nn.CrossEntropyLoss()
    stopping = EarlyStopping(config.patience, config.min_epochs, config.stop_window)
    best_loss, best_state, best_epoch, history = math.inf, None, 0, []
    t0 = time.monotonic()
    step = 0
    stopped_by = "epoch budget"
    for group in opt.param_groups:
        group["lr"] = learning_rate_at(0, total_steps, config)
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, seen = 0.0, 0
        for idx in _batches(len(x_train), config.batch_size, rng):
            if len(idx) < 2:  # batch norm needs 2 samples
                continue
            xb = x_train[idx]
            if config.augment:
                xb = augment_batch(xb, rng)
            xb = torch.from_numpy(np.ascontiguousarray(xb, np.float32)[:, None]).to(device)
            yb = torch.from_numpy(np.asarray(y_train[idx], np.int64)).to(device)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            for group in opt.param_groups:
                group["lr"] = learning_rate_at(step, total_steps, config)
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        logits = predict_logits(model, x_val, config.batch_size * 2, device)
        val_loss = float(loss_fn(torch.from_numpy(logits), torch.from_numpy(np.asarray(y_val, np.int64))))
        val_acc = float(np.mean(logits.argmax(1) == y_val))
        stopping.update(val_loss)
        info = {
            "epoch": epoch,
            "loss": total / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "smoothed_val_loss": stopping.smoothed(),
        }
        history.append(info)
        log.info("epoch %d: loss %.4f, val_loss %.4f, val_acc %.3f", epoch, info["loss"], val_loss, val_acc)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        stop = stopping.should_stop
        out_of_time = bool(config.max_minutes) and time.monotonic() - t0 > 60 * config.max_minutes
        yield Progress(
            epoch,
            config.epochs,
            f"epoch {epoch}: loss {info['loss']:.3f}, val acc {val_acc:.3f}"
            + (" — early stop" if stop else "")
            + (" — time budget used" if out_of_time else ""),
            info=info,
        )
        if stop or out_of_time:
            stopped_by = "early stopping" if stop else "time limit"
            break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    budget = training_budget(
        config.epochs, steps_per_epoch, len(history), step, stopped_by, stopping, config.max_minutes
    )
    unknown, note = unknown_statistics(model, x_train, y_train, x_val, y_val, n_classes, config.batch_size * 2)
    return TrainResult(model, history, best_epoch, config, dict(card.arch_kwargs), budget, unknown, note)


def unknown_statistics(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    batch_size: int,
) -> tuple[dict, str]:
    """Class means, shared covariance and threshold of the trained ``model``'s features, for its card.

    Statistics from the training split, threshold from the validation split
    (:func:`tomolens.classify.unknown.fit_unknown_model`); no augmentation.

    Returns
    -------
    (dict, str)
        ``UnknownModel.to_dict()`` and "", or ``{}`` and why they could not be fitted.
    """
    from tomolens.classify.unknown import fit_unknown_model

    _, f_train = predict_logits(model, x_train, batch_size, with_features=True)
    _, f_val = predict_logits(model, x_val, batch_size, with_features=True)
    try:
        stats = fit_unknown_model(f_train, y_train, n_classes, f_val, y_val)
    except ValueError as err:
        log.warning("no unknown-detection statistics: %s", err)
        return {}, f"no unknown-detection statistics: {err}"
    log.info("unknown detection: threshold %.3g from %d validation particles", stats.threshold, len(y_val))
    return stats.to_dict(), ""


def evaluate(model, x_test: np.ndarray, y_test: np.ndarray, class_names: list[str], batch_size: int = 64) -> dict:
    """Accuracy and confusion matrix on a held-out (test) split.

    Returns
    -------
    dict
        ``accuracy`` (float), ``confusion`` (list of lists, rows = true class, columns =
        predicted), ``per_class_accuracy`` ({name: float}), ``n`` (int).
    """
    from sklearn.metrics import confusion_matrix

    check_dataset(x_test, y_test, len(class_names), "test")
    pred = predict_logits(model, x_test, batch_size).argmax(1)
    cm = confusion_matrix(y_test, pred, labels=list(range(len(class_names))))
    per_class = {n: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan") for i, n in enumerate(class_names)}
    return {
        "accuracy": float(np.mean(pred == y_test)),
        "confusion": cm.tolist(),
        "per_class_accuracy": per_class,
        "n": int(len(y_test)),
    }


def config_dict(config: TrainConfig) -> dict:
    """The config as a plain dict (for model cards)."""
    return asdict(config)


def save_classifier(
    result: TrainResult,
    path: str,
    class_names: list[str],
    voxel_size_A: float | None,
    training_command: str = "",
    training_data: str = "",
    metrics: dict | None = None,
):
    """Save a trained classifier with its model card (task ``"classify"``).

    Returns
    -------
    (Path, Path)
        The ``.pt`` weights and ``.json`` card.
    """
    from pathlib import Path

    from tomolens.classify.networks import ARCHITECTURES
    from tomolens.classify.unknown import CARD_KEY
    from tomolens.models.card import ModelCard, save_model

    arch_kwargs = dict(result.arch_kwargs)
    if arch_kwargs.get("n_classes") != len(class_names):
        raise ValueError(f"The model has {arch_kwargs.get('n_classes')} outputs but {len(class_names)} class names.")
    card = ModelCard(
        name=Path(path).stem,
        task="classify",
        architecture=ARCHITECTURES[result.config.architecture],
        arch_kwargs=arch_kwargs,
        classes=list(class_names),
        voxel_size_A=float(voxel_size_A) if voxel_size_A else None,
        patch_size=[arch_kwargs["box"]] * 3,
        normalisation="zscore per subtomogram",
        polarity="bright",
        training_command=training_command,
        training_data=training_data,
        seed=result.config.seed,
        metrics=metrics or {},
        extra={
            "best_epoch": result.best_epoch,
            "history": result.history,
            "train_config": config_dict(result.config),
            "training_budget": result.budget,
            **({CARD_KEY: result.unknown} if result.unknown else {"unknown_note": result.unknown_note}),
        },
    )
    return save_model(result.model, card, path)


def register_train_args(group) -> None:
    """Classification options of ``tomolens train`` (see :mod:`tomolens.classify.train_cli`)."""
    from tomolens.classify.train_cli import register_train_args as register

    register(group)


def run_train(args) -> int:
    """``tomolens train --task classify`` (see :mod:`tomolens.classify.train_cli`)."""
    from tomolens.classify.train_cli import run_train as run

    return run(args)
