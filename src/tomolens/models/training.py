"""A generic patch-based training loop, as a job.

Every trainable task (detection, segmentation, …) hands :func:`train_model` a network,
training and validation (image, target) pairs and a loss; the loop does the rest:

- :class:`PatchSampler` draws random patches (half of them centred on foreground by
  default, or on each painted class in turn with ``balance_classes``) with augmentation —
  flips along every axis, 90° rotations in the y-x plane only (so the missing wedge stays
  along z) and an intensity scale/shift of the input;
- on a CPU with bfloat16 instructions the training forward passes run in bfloat16
  (``cpu_bf16``; the loss, the weights and validation stay float32);
- validation patches are drawn once, from the validation pairs (separate volumes or
  regions), without augmentation;
- early stopping watches the validation loss (or a validation score such as a Dice, when
  the task gives one); the best weights are restored;
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

log = logging.getLogger(__name__)


@dataclass
class TrainingPair:
    """One training volume and its target.

    Attributes
    ----------
    image : ndarray, shape (z, y, x) (or (y, x) for 2D); (K, z, y, x) / (K, y, x) with ``channels``
        Raw tomogram; z-score normalised by the sampler (over all of its channels).
    target : ndarray, shape (C, z, y, x) or (z, y, x)
        Dense target (float maps or integer labels), same spatial shape as ``image``.
    foreground : ndarray of bool, optional
        Where to centre "foreground" patches; by default ``target > 0`` on channel 0 (not used
        by a class-balanced :class:`PatchSampler`, which centres on each class in turn).
    channels : bool
        ``image`` has a leading axis of K input channels (for example the neighbouring
        z-slices a 2.5D slice network sees); every pair of one training run must have
        the same K, and the network then takes (N, K, *patch).
    """

    image: np.ndarray
    target: np.ndarray
    foreground: np.ndarray | None = None
    channels: bool = False

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The image's shape without its channel axis."""
        return tuple(self.image.shape[1:] if self.channels else self.image.shape)

    def __post_init__(self) -> None:
        spatial = self.spatial_shape
        if tuple(self.target.shape[-len(spatial):]) != spatial:
            raise ValueError(
                f"Target shape {self.target.shape} does not match image shape {self.image.shape}"
                + (" (channels first)." if self.channels else ".")
            )


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
    #: Augmentation beyond flips and quarter turns (see :class:`PatchSampler`): any-angle
    #: y-x rotations with a scale of 0.85–1.15, and reversing the input channels.
    rotate_any: bool = False
    flip_channels: bool = False
    #: Training forward passes in bfloat16 on the CPU (autocast; the loss, the weights, validation
    #: and prediction stay float32): None = where the CPU has bfloat16 instructions
    #: (:func:`tomolens.models.device.cpu_has_native_bf16`).  A 2.5D slice U-Net's training step
    #: (batch 8, 96×96, depth 3, 1 thread) took 0.28 s in float32 and 0.15–0.17 s in bfloat16 on
    #: the project's AVX512-BF16 CPU.  Results then depend on the CPU: the card records
    #: ``training_precision``, and ``cpu_precision`` float32 reproduces a float32 run anywhere.
    cpu_bf16: bool | None = None
    #: Centre foreground patches on each painted class equally often (see :class:`PatchSampler`).
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


#: Most voxels per class that a class-balanced :class:`PatchSampler` keeps to draw centres from.
MAX_CLASS_VOXELS = 1_000_000


class PatchSampler:
    """Random (augmented) patches from a list of :class:`TrainingPair`.

    Parameters
    ----------
    pairs : sequence of TrainingPair
    patch_size : sequence of int
        Patch size (z, y, x); volumes smaller than this are reflect-padded.
    foreground_fraction : float
        Share of patches centred on a random foreground voxel.
    augment : bool
        Flips, y-x 90° rotations, intensity scale (0.8–1.2) and shift (±0.2 σ).
    rotate_any : bool
        With ``augment``: most patches (3 in 4) are also read rotated by any angle in the
        y-x plane and scaled by 0.85–1.15 (:meth:`_rotated_patch`; images linearly
        interpolated, integer targets by nearest neighbour, unpainted (0) outside the image).
    flip_channels : bool
        With ``augment``: reverse the order of the input channels in half of the patches
        (for channels that are neighbouring z-slices, a flip along z).
    balance_classes : bool
        Centre the ``foreground_fraction`` share of patches on every class equally often: a
        class drawn uniformly among the integer target values > 0 of all pairs, then one of its
        voxels (:meth:`_class_voxels`, at most :data:`MAX_CLASS_VOXELS` per class), instead of a
        foreground voxel drawn uniformly; :attr:`TrainingPair.foreground` is then not used.  For
        painted labels where one class (background) covers most of the painting and a rare
        structure would be in few patches.  Integer targets only.
    """

    def __init__(self, pairs: Sequence[TrainingPair], patch_size: Sequence[int],
                 foreground_fraction: float = 0.5, augment: bool = True, rotate_any: bool = False,
                 flip_channels: bool = False, balance_classes: bool = False) -> None:
        if not pairs:
            raise ValueError("Training needs at least one (tomogram, target) pair.")
        self.patch = tuple(int(p) for p in patch_size)
        self.ndim = len(self.patch)
        self.augment = augment
        self.rotate_any = rotate_any
        self.flip_channels = flip_channels
        self.foreground_fraction = foreground_fraction
        self.images, self.targets, self.fg = [], [], []  # images (K, *spatial), targets (C, *spatial)
        for pair in pairs:
            if len(pair.spatial_shape) != self.ndim:
                raise ValueError(f"Patch size {self.patch} needs {self.ndim}D images; got {pair.image.shape}"
                                 + (" (channels first)." if pair.channels else "."))
            img = np.asarray(pair.image, np.float32)
            img = (img - img.mean()) / max(float(img.std()), 1e-6)
            if not pair.channels:
                img = img[None]
            if self.images and img.shape[0] != self.images[0].shape[0]:
                raise ValueError(f"Training pairs have different numbers of input channels "
                                 f"({self.images[0].shape[0]} and {img.shape[0]}).")
            tgt = np.asarray(pair.target)
            if tgt.ndim == self.ndim:
                tgt = tgt[None]
            pad = [(0, max(0, p - s)) for p, s in zip(self.patch, img.shape[1:])]
            if any(a for _, a in pad):
                img = np.pad(img, [(0, 0), *pad], mode="reflect")
                tgt = np.pad(tgt, [(0, 0), *pad], mode="constant")
            if balance_classes:  # centres come from the classes (:meth:`_class_voxels`)
                coords = np.zeros((0, self.ndim), np.int64)
            else:
                fg = pair.foreground if pair.foreground is not None else tgt[0] > 0
                if fg.shape != img.shape[1:]:
                    fg = np.pad(fg, [(0, p - s) for p, s in zip(img.shape[1:], fg.shape)])
                coords = np.argwhere(fg)
            self.images.append(img)
            self.targets.append(tgt)
            self.fg.append(coords)
        self.weights = np.array([im[0].size for im in self.images], float)
        self.weights /= self.weights.sum()
        self.by_class = (self._class_voxels() or None) if balance_classes else None

    def _class_voxels(self, cap: int = MAX_CLASS_VOXELS) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per class (integer target value > 0, ascending): (pair indices int32, flat voxel indices int64
        into the pair's padded spatial shape) of its voxels.

        At most ``cap`` voxels per class, drawn at random with a fixed seed, and at most ``cap``
        per pair while reading (dense 3D labels of many volumes would otherwise hold hundreds
        of MB of coordinates); below the cap, in pair order and then voxel order.
        """
        pick = np.random.default_rng(0)
        found: dict[int, list] = {}
        for k, tgt in enumerate(self.targets):
            if not np.issubdtype(tgt.dtype, np.integer):
                raise ValueError("balance_classes needs integer class targets (painted labels); got "
                                 f"{tgt.dtype} targets.")
            flat = tgt[0].ravel()
            for value in np.flatnonzero(np.bincount(flat[flat > 0])):
                idx = np.flatnonzero(flat == value)
                if len(idx) > cap:
                    idx = np.sort(pick.choice(idx, cap, replace=False))
                found.setdefault(int(value), []).append((k, idx))
        out = []
        for value in sorted(found):
            pairs = np.concatenate([np.full(len(idx), k, np.int32) for k, idx in found[value]])
            flat = np.concatenate([idx for _, idx in found[value]])
            if len(flat) > cap:
                keep = pick.choice(len(flat), cap, replace=False)
                pairs, flat = pairs[keep], flat[keep]
            out.append((pairs, flat))
        return out

    def _draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, ...]]:
        """(pair index, patch start) of the next patch."""
        if self.by_class and rng.random() < self.foreground_fraction:
            pairs, flat = self.by_class[int(rng.integers(len(self.by_class)))]
            j = int(rng.integers(len(flat)))
            k = int(pairs[j])
            centre = np.unravel_index(int(flat[j]), self.images[k].shape[1:])
            return k, self._around(centre, k, rng)
        k = int(rng.choice(len(self.images), p=self.weights))
        coords = self.fg[k]
        if self.by_class is None and len(coords) and rng.random() < self.foreground_fraction:
            return k, self._around(coords[rng.integers(len(coords))], k, rng)
        shape = self.images[k].shape[1:]
        return k, tuple(int(rng.integers(0, s - p + 1)) for p, s in zip(self.patch, shape))

    def _around(self, centre: Sequence[int], k: int, rng: np.random.Generator) -> tuple[int, ...]:
        """A patch start that puts ``centre`` near the middle of the patch (± a quarter), inside pair ``k``."""
        shape = self.images[k].shape[1:]
        return tuple(int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), 0, s - p))
                     for c, p, s in zip(centre, self.patch, shape))

    def sample(self, n: int, rng: np.random.Generator, augment: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` patches: input (n, K, *patch) float32 (K = 1 without channels) and target (n, C, *patch)."""
        augment = self.augment if augment is None else augment
        xs, ys = [], []
        for _ in range(n):
            k, start = self._draw(rng)
            if augment and self.rotate_any and rng.random() < 0.75:
                x, y = self._rotated_patch(k, start, rng)
            else:
                sl = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
                x = self.images[k][(slice(None), *sl)]
                y = self.targets[k][(slice(None), *sl)]
            if augment:
                x, y = self._augment(x, y, rng)
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        return np.stack(xs).astype(np.float32), np.stack(ys)

    def _rotated_patch(self, k: int, start: Sequence[int], rng: np.random.Generator):
        """The patch at ``start`` of pair ``k``, rotated in the y-x plane by a random angle and scaled.

        Returns (image (K, *patch) float32, target (C, *patch)): images by linear interpolation
        (reflected at the faces), integer targets by nearest neighbour with 0 (unpainted, ignored by
        sparse losses) outside the image, float targets linearly with 0 outside.
        """
        from scipy.ndimage import map_coordinates

        image, target = self.images[k], self.targets[k]
        angle, scale = rng.uniform(0, 2 * np.pi), rng.uniform(0.85, 1.15)
        ny, nx = self.patch[-2:]
        yy, xx = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
        cy, cx = start[-2] + (ny - 1) / 2, start[-1] + (nx - 1) / 2
        c, s = np.cos(angle) * scale, np.sin(angle) * scale
        plane = np.stack([cy + c * yy - s * xx, cx + s * yy + c * xx])
        if self.ndim == 3:  # the same rotation on every z-slice of the patch
            z = np.arange(start[0], start[0] + self.patch[0], dtype=float)[:, None, None]
            coords = np.stack([np.broadcast_to(z, self.patch), *np.broadcast_to(plane[:, None], (2, *self.patch))])
        else:
            coords = plane
        x = np.stack([map_coordinates(ch, coords, order=1, mode="reflect") for ch in image])
        integer = np.issubdtype(target.dtype, np.integer)
        y = np.stack([map_coordinates(ch, coords, order=0 if integer else 1, mode="constant", cval=0)
                      for ch in target]).astype(target.dtype)
        return x.astype(np.float32), y

    def _augment(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        if self.flip_channels and x.shape[0] > 1 and rng.random() < 0.5:
            x = x[::-1]
        for axis in range(self.ndim):
            if rng.random() < 0.5:
                x = np.flip(x, axis + 1)
                y = np.flip(y, axis + 1)
        if self.patch[-1] == self.patch[-2]:
            k = int(rng.integers(4))
            x = np.rot90(x, k, axes=(-2, -1))
            y = np.rot90(y, k, axes=(-2, -1))
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2)
        return x, y


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
    sampler = PatchSampler(train_pairs, config.patch_size, config.foreground_fraction, config.augment,
                           rotate_any=config.rotate_any, flip_channels=config.flip_channels,
                           balance_classes=config.balance_classes)
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
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise ValueError(
                f"Cannot resume: the checkpoint {ckpt.name} was written by a different network (another kind, "
                "width, depth, input channels/context, classes or starting model). Train without resume, or save "
                "to another file."
            ) from err
        optimiser.load_state_dict(state["optimiser"])
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
        if (state.get("criterion", "loss") != _criterion_name(config)
                or bool(state.get("keep_last", False)) != config.keep_last):
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

    total = config.epochs * config.steps_per_epoch
    t0 = time.monotonic()
    stopped = False
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
                yield Progress(epoch * config.steps_per_epoch + step + 1, total,
                               f"epoch {epoch + 1}: loss {np.mean(losses):.4f}")
        val_loss, score = _evaluate(scored, loss_fn, val_x, val_y, config.batch_size, device, config.val_score)
        train_loss = float(np.mean(losses))
        improved = config.keep_last or _criterion(val_loss, score) < _criterion(best_loss, best_score) - 1e-5
        if improved:
            best_epoch, bad_epochs = epoch + 1, 0
            best_loss, best_score = val_loss, score
            best_state = {k: v.detach().clone() for k, v in scored.state_dict().items()}
        else:
            bad_epochs += 1
        record = {"epoch": epoch + 1, "loss": train_loss, "val_loss": val_loss,
                  "best_val_loss": best_loss, "seconds": round(time.monotonic() - t0, 1)}
        if score is not None:
            record |= {"val_score": score, "best_val_score": best_score}
        if config.keep_last:
            record["val_is_fit"] = True
        history.append(record)
        log.info("epoch %d: loss %.4f val_loss %.4f%s", epoch + 1, train_loss, val_loss, " *" if improved else "")
        if ckpt is not None:
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "best_state": best_state, "history": history,
                            "best_loss": best_loss, "best_score": best_score,
                            "criterion": _criterion_name(config), "keep_last": config.keep_last,
                            "precision": precision,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs, "epoch": epoch + 1,
                            "rng": rng.bit_generator.state}
                           | ({"ema": ema.state_dict()} if ema is not None else {}), tmp)
        yield Progress((epoch + 1) * config.steps_per_epoch, total,
                       f"epoch {epoch + 1}: loss {train_loss:.4f}, val {val_loss:.4f}", info=dict(record))
        if bad_epochs >= config.patience:
            log.info("early stop: no validation improvement for %d epochs", bad_epochs)
            stopped = True
            break
        if config.max_minutes is not None and time.monotonic() - t0 > 60 * config.max_minutes:
            log.info("stopping: time budget of %.1f min used", config.max_minutes)
            stopped = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch, best_loss, stopped, start_val, best_score, precision)


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


def _evaluate(model, loss_fn, x: np.ndarray, y: np.ndarray, batch_size: int, device: str,
              score_fn: Callable | None = None) -> tuple[float, float | None]:
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
