"""Train the detector on a few clicked particles of the user's own tomogram (a job).

:func:`train_from_points` is the one implementation behind ``tomolens train --task detect
--points …`` and the Detect widget's "from Points layer" training:

1. the start model (the shipped detector by default, or the last round's model file, or a new
   network) decides the voxel size the network works at and the polarity of its input
   (:func:`tomolens.polarity.model_input_normalisation`, the same normalisation as detection);
2. the radius of each kind is the one given, or estimated from the clicks
   (:func:`tomolens.detect.points.estimate_radius`, the scale of the strongest blob response);
3. only a box around the fully picked region and the clicks (plus half a patch) is cut out,
   normalised and resampled to the model's voxel size; targets and the masked loss are those of
   :mod:`tomolens.detect.points`; 20 % of the clicks are held out for the validation curve (F1 at
   half the radius on the held-out clicks, ties broken by the validation loss);
4. the engine's loop (:func:`tomolens.models.training.train_model`) trains until the step budget
   or the time limit, keeping the best validation epoch (10 steps each); when fine-tuning, the
   starting weights are kept if no epoch beats them;
5. post-processing thresholds are tuned on the held-out clicks and the model is saved with its
   card (clicks' source, each kind's clicks, source and radius and how it was chosen, region, time, steps, polarity, start
   model, and the rounds before it).

Cancel (closing the job) saves the best weights so far, with the start model's thresholds,
before the job ends.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomolens.detect.detector import DEFAULT_MODEL
from tomolens.detect.points import (
    MASK,
    check_points,
    click_scores,
    default_region,
    estimate_radius,
    f1_of_counts,
    masked_detection_loss,
    point_targets,
)
from tomolens.detect.train import TUNING_GRID, new_card
from tomolens.io.checks import check_voxel_size
from tomolens.jobs import Progress, relay

log = logging.getLogger(__name__)

#: Optimiser steps between two validations (one "epoch" of the engine).
STEPS_PER_VALIDATION = 10
#: Fewest clicks accepted.
MIN_CLICKS = 5


@dataclass
class PointsTrainingResult:
    """What :func:`train_from_points` returns: where the model is, its card and the curves."""

    path: Path
    card: Any
    history: list[dict] = field(default_factory=list)


def _start_model(start_from: str | None, device: str):
    """(network in training mode, card or None for a new network)."""
    from tomolens.models.card import load_model
    from tomolens.models.unet import UNet3D

    if start_from:
        net, card = load_model(start_from, device=device, expected_task="detect")
        return net.train(), card
    return UNet3D(in_channels=1, out_channels=2, base_channels=16, depth=2), None


def _radii_A(kinds: np.ndarray, radius_A, estimate) -> tuple[dict[str, float], dict[str, str]]:
    """Radius (Å) and its source ("typed"/"estimated") per kind; ``radius_A`` a number, a dict or None."""
    radii, source = {}, {}
    for kind in dict.fromkeys(kinds.tolist()):
        given = radius_A.get(kind) if isinstance(radius_A, dict) else radius_A
        if given is None or given == 0:
            radii[kind], source[kind] = estimate(kinds == kind), "estimated"
            continue
        if not np.isfinite(float(given)) or float(given) <= 0:
            raise ValueError(
                f"The particle radius must be a positive number of Å; got {given!r}"
                + (f" for {kind!r}" if kind else "")
                + "."
            )
        radii[kind], source[kind] = float(given), "typed"
    return radii, source


def _crop_box(boxes: Sequence[tuple[np.ndarray, np.ndarray]], shape, margin: float) -> tuple[slice, ...]:
    lo = np.min([b[0] for b in boxes], axis=0) - margin
    hi = np.max([b[1] for b in boxes], axis=0) + margin
    return tuple(slice(int(max(0, np.floor(a))), int(min(n, np.ceil(b)))) for a, b, n in zip(lo, hi, shape))


def largest_radius_A(card) -> float:
    """The largest particle radius (Å) a start model is fine-tuned for: a quarter of its patch at its voxel size."""
    patch = int(card.patch_size[0]) if card.patch_size else 32
    return patch / 4 * float(card.voxel_size_A)


def train_from_points(
    volume: np.ndarray,
    voxel_size_A: float | None,
    centres_zyx: np.ndarray,
    out: str | Path,
    radius_A: float | dict | None = None,
    kinds: Sequence[str] | None = None,
    region: tuple[slice, slice, slice] | None = None,
    negatives_zyx: np.ndarray | None = None,
    start_from: str | None = DEFAULT_MODEL,
    minutes: float = 5.0,
    steps: int = 300,
    val_fraction: float = 0.2,
    polarity: str = "auto",
    batch_size: int = 4,
    learning_rate: float = 5e-4,
    seed: int = 0,
    device: str = "cpu",
    source: str = "",
    command: str = "",
    kind_sources: dict[str, str] | None = None,
) -> Generator[Progress, None, PointsTrainingResult]:
    """Train (fine-tune by default) the detector from clicked centres and save it with its card.

    Parameters
    ----------
    volume : array, shape (z, y, x)
        The tomogram, either contrast (``polarity``).
    voxel_size_A : float
        Its voxel size, Å (required: the radius and the model's scale depend on it).
    centres_zyx : ndarray, shape (N, 3)
        Clicked particle centres in the tomogram's voxels (N ≥ 5).
    out : path
        Model path (``NAME.pt`` + ``NAME.json``).
    radius_A : float, dict {kind: float} or None
        Particle radius in Å (per kind with a dict); None or 0 = estimated from the clicks.
    kinds : sequence of str, length N, optional
        Kind of each click (a ``class`` feature); each kind has its own radius.
    region : tuple of 3 slices, optional
        The box (tomogram voxels) in which every particle is clicked: background is known only
        there.  Default: the bounding box of the clicks grown by one radius.
    negatives_zyx : ndarray, shape (M, 3), optional
        Points that are not particles (background wherever they are).
    start_from : str or None
        Model to fine-tune (shipped name or .pt/.json; the previous round's model to continue),
        or None for a new network.
    minutes, steps : float, int
        Time limit and step budget: training stops at whichever comes first (the budget is rounded
        up to a multiple of the 10 steps between validations).
    val_fraction : float
        Share of clicks held out for validation (at least one).
    polarity, batch_size, learning_rate, seed, device
        As for detection and ``tomolens train``.
    source : str
        Where the clicks came from (file or layer name), for the card.
    command : str
        How training was started (the command line), for the card.
    kind_sources : dict {kind: str}, optional
        Where each kind's clicks came from (its file or Points layer), for the card; kinds not
        named there came from ``source``.

    Yields
    ------
    Progress
        Every 5 steps, and after every validation with ``info`` {"epoch", "step", "loss",
        "val_loss", "val_f1", …} for live curves.

    Returns
    -------
    PointsTrainingResult
    """
    from tomolens.models.card import save_model
    from tomolens.models.device import choose_device, set_cpu_threads
    from tomolens.models.sampling import TrainingPair
    from tomolens.models.tiling import rescale_volume
    from tomolens.models.training import TrainConfig, train_model
    from tomolens.polarity import model_input_normalisation

    volume = np.asarray(volume) if not hasattr(volume, "shape") else volume
    if volume.ndim != 3:
        raise ValueError(f"Training from points needs a 3D tomogram (z, y, x); got shape {volume.shape}.")
    if voxel_size_A is None or voxel_size_A == 0:
        raise ValueError(
            "The voxel size is unknown: set the tomogram's (or the Points layer's) voxel size in Å "
            "before training, so that the radius and the model's scale mean something."
        )
    vs = float(check_voxel_size(voxel_size_A))
    centres = check_points(centres_zyx, volume.shape, MIN_CLICKS)
    negatives = (
        check_points(negatives_zyx, volume.shape, 0, "negative points")
        if negatives_zyx is not None
        else np.zeros((0, 3))
    )
    kinds = np.asarray([str(k) for k in kinds] if kinds is not None else [""] * len(centres))
    if len(kinds) != len(centres):
        raise ValueError(f"{len(kinds)} kinds for {len(centres)} points: give one kind per point.")
    if minutes <= 0 or steps < 1:
        raise ValueError(f"The time limit and the step budget must be positive; got {minutes} min, {steps} steps.")
    device = choose_device(device)
    if device == "cpu":
        set_cpu_threads()
    net, start_card = _start_model(start_from, device)
    card_for_input = start_card or new_card("new", vs, 32, 16, 2)
    norm, decision = model_input_normalisation(volume, polarity, card_for_input, vs)
    yield Progress(0, steps, decision.message)

    patch = int(start_card.patch_size[0]) if start_card is not None and start_card.patch_size else 32
    # the largest radius the estimate may return (tomogram voxels): what the start model's patch takes
    max_vox = largest_radius_A(start_card) / vs if start_card is not None else 16.0

    def estimate(which: np.ndarray) -> float:
        c = centres[which]
        reach = int(np.ceil(2 * max_vox)) + 2
        lo = np.maximum(np.floor(c.min(0)).astype(int) - reach, 0)
        hi = np.minimum(np.ceil(c.max(0)).astype(int) + reach + 1, volume.shape)
        box = norm.apply(volume[tuple(slice(a, b) for a, b in zip(lo, hi))], lo)
        return estimate_radius(box, c - lo, max_vox=max_vox) * vs

    radii_by_kind, radius_source = _radii_A(kinds, radius_A, estimate)
    radii_A = np.array([radii_by_kind[k] for k in kinds])
    model_vs = float(start_card.voxel_size_A) if start_card is not None else max(vs, float(radii_A.min()) / 4)
    if radii_A.max() / model_vs > patch / 4:
        raise ValueError(
            f"A radius of {radii_A.max():.0f} Å is {radii_A.max() / model_vs:.1f} voxels of the model's "
            f"{model_vs:g} Å: more than a quarter of its {patch}-voxel patch. Give a smaller radius, or "
            "train a new network (from scratch), which picks a coarser voxel size."
        )
    radii_vox = radii_A / vs
    region = region if region is not None else default_region(centres, radii_vox, volume.shape)
    region_lo = np.array([s.start for s in region], float)
    region_hi = np.array([s.stop for s in region], float)
    spheres = [
        (c - 1.5 * r, c + 1.5 * r + 1)
        for c, r in zip(
            np.vstack([centres, negatives]), np.concatenate([radii_vox, np.full(len(negatives), np.median(radii_vox))])
        )
    ]
    crop = _crop_box([(region_lo, region_hi), *spheres], volume.shape, patch / 2 * model_vs / vs)
    start = np.array([s.start for s in crop])
    image = rescale_volume(norm.apply(np.asarray(volume[crop], np.float32), start), vs / model_vs)
    factor = np.array([(m - 1) / max(n - 1, 1) for m, n in zip(image.shape, (s.stop - s.start for s in crop))])
    to_work = lambda p: (np.asarray(p, float).reshape(-1, 3) - start) * factor  # noqa: E731
    work_region = tuple(
        slice(int(np.floor(a)), int(np.ceil(b))) for a, b in zip(to_work(region_lo)[0], to_work(region_hi - 1)[0] + 1)
    )
    rng = np.random.default_rng(seed)
    n_held = max(1, int(round(val_fraction * len(centres))))
    held = np.zeros(len(centres), bool)
    held[rng.choice(len(centres), n_held, replace=False)] = True
    r_work = radii_A / model_vs
    work_c, work_neg = to_work(centres), to_work(negatives) if len(negatives) else None
    train_t = point_targets(image.shape, work_c, r_work, work_region, work_neg, held)
    val_t = point_targets(image.shape, work_c, r_work, work_region, work_neg, held, validation=True)
    train_pair = TrainingPair(image, train_t, foreground=train_t[MASK] > 0)
    val_pair = TrainingPair(image, val_t, foreground=(val_t[MASK] > 0) & (train_t[MASK] == 0))
    post = _postprocess_defaults(start_card, float(radii_A.min()))
    tolerance = float(radii_A.min()) / 2 / model_vs
    spe = STEPS_PER_VALIDATION
    work_dir = tempfile.TemporaryDirectory(prefix="tomolens_points_")
    ckpt = Path(work_dir.name) / "points.ckpt"
    config = TrainConfig(
        patch_size=(patch,) * 3,
        batch_size=batch_size,
        epochs=math.ceil(steps / spe),
        steps_per_epoch=spe,
        val_patches=min(32, 4 * n_held),
        learning_rate=learning_rate,
        patience=10**6,
        seed=seed,
        device=device,
        checkpoint=ckpt,
        max_minutes=minutes,
        keep_start_if_best=start_card is not None,
        val_score=_val_score(post, model_vs, tolerance),
    )
    out = Path(out).with_suffix(".pt")
    card = new_card(out.stem, model_vs, patch, 16, 2, seed=seed)
    if start_card is not None:  # same network, same input convention as the start model
        card.arch_kwargs = dict(start_card.arch_kwargs)
        card.polarity = start_card.polarity or "bright"
    info = {
        "clicks_source": source or "points",
        "clicks": int(len(centres)),
        "held_out_clicks": int(n_held),
        "negatives": int(len(negatives)),
        "radius_A": radii_by_kind,
        "radius_source": radius_source,
        "kinds": {
            k: {"clicks": int(np.sum(kinds == k)), "source": (kind_sources or {}).get(k, source or "points")}
            for k in radii_by_kind
        },
        "region_zyx_voxels": [[s.start, s.stop] for s in region],
        "tomogram_shape_zyx": list(volume.shape),
        "tomogram_voxel_size_A": vs,
        "minutes_limit": float(minutes),
        "steps_limit": int(steps),
        "polarity_decision": decision.to_dict(),
        "loss": "masked (labelled voxels only)",
        "start_from": ({"name": start_card.name, "sha256": start_card.sha256} if start_card else "new network"),
    }
    t0 = time.monotonic()
    try:
        result = yield from relay(
            train_model(net, [train_pair], [val_pair], masked_detection_loss, config), _progress_in_steps
        )
        yield Progress(steps, steps, "tuning thresholds on the held-out clicks")
    except GeneratorExit:
        _save_cancelled(net, card, ckpt, out, start_card, info | {"seconds": round(time.monotonic() - t0, 1)}, post)
        work_dir.cleanup()
        raise
    work_dir.cleanup()
    seconds = round(time.monotonic() - t0, 1)
    post, val_f1 = _tune(result.model, card, image, model_vs, val_t, post, tolerance)
    history = [_step_record(h) for h in result.history]
    steps_run = history[-1]["step"] if history else 0
    card.training_command = command or "tomolens.detect.points_train.train_from_points"
    card.training_data = (
        f"{len(centres)} clicked particles ({source or 'points'}) in one tomogram "
        f"{tuple(volume.shape)} at {vs:g} Å, resampled to {model_vs:g} Å; fully picked region "
        f"{info['region_zyx_voxels']} (z, y, x voxels); {n_held} clicks held out for validation"
    )
    card.metrics = {
        "validation_f1_tuned": round(val_f1, 4),
        "best_step": result.best_epoch * spe,
        "held_out_clicks": int(n_held),
        "note": "F1 at half the radius on the held-out clicks, which "
        "also chose the best step and the thresholds: optimistic",
    }
    card.extra = {
        "postprocess": post,
        "particle_radius_A": float(radii_A.min()),
        "history": history,
        "training_precision": result.precision,
        "points_training": info | {"seconds": seconds, "steps_run": int(steps_run), "cancelled": False},
        "rounds": _rounds(start_card) + [info | {"seconds": seconds, "steps_run": int(steps_run)}],
    }
    weights, _ = save_model(result.model.cpu(), card, out)
    yield Progress(steps, steps, f"saved {weights.name} (held-out F1 {val_f1:.2f})")
    return PointsTrainingResult(weights, card, history)


def _postprocess_defaults(start_card, radius_A: float) -> dict:
    base = dict(start_card.extra.get("postprocess", {})) if start_card is not None else {}
    base.setdefault("mask_threshold", 0.5)
    base.setdefault("centre_threshold", 0.3)
    return {**base, "particle_radius_A": radius_A, "min_volume_A3": 0.15 * 4 / 3 * np.pi * radius_A**3}


def _val_score(post: dict, model_vs: float, tolerance: float):
    """``val_score`` of the engine: F1 on the held-out clicks of the validation patches, minus
    1 % of the validation loss (ties between equal F1s go to the lower loss)."""
    from tomolens.detect.postprocess import postprocess

    def score(logits, target) -> float:
        import torch

        probs = torch.sigmoid(logits).numpy()
        tgt = target.numpy()
        counts = np.zeros(3, int)
        for p, t in zip(probs, tgt):
            counts += click_scores(postprocess(p, model_vs, post)[2].coords_zyx, t, tolerance)
        loss = float(masked_detection_loss(logits, target))
        return f1_of_counts(*counts) - 0.01 * loss

    return score


def _step_record(h: dict) -> dict:
    rec = {"step": h["epoch"] * STEPS_PER_VALIDATION, **{k: v for k, v in h.items() if k != "val_score"}}
    if "val_score" in h:  # undo the loss tie-break: the F1 itself
        rec["val_f1"] = round(h["val_score"] + 0.01 * h["val_loss"], 4)
    return rec


def _progress_in_steps(p: Progress) -> Progress:
    if not p.info:
        return p
    rec = _step_record(p.info)
    msg = f"step {rec['step']}: loss {rec['loss']:.4f}, val loss {rec['val_loss']:.4f}, held-out F1 {rec['val_f1']:.2f}"
    return Progress(p.done, p.total, msg, info=rec)


def _tune(net, card, image: np.ndarray, model_vs: float, val_t: np.ndarray, post: dict, tolerance: float):
    """Thresholds (:data:`tomolens.detect.train.TUNING_GRID`) with the best held-out-click F1 on the crop."""
    from itertools import product

    from tomolens.detect.detector import detect_particles
    from tomolens.jobs import run_job

    found = run_job(
        detect_particles(
            image, model_vs, model=(net.eval(), card), device="cpu", polarity=card.polarity or "bright", **post
        )
    )
    best, best_f1 = dict(post), -1.0
    for mask_t, centre_t in product(TUNING_GRID["mask_threshold"], TUNING_GRID["centre_threshold"]):
        params = {**post, "mask_threshold": mask_t, "centre_threshold": centre_t}
        f1 = f1_of_counts(*click_scores(found.reapply(**params).particles.coords_zyx, val_t, tolerance))
        if f1 > best_f1:
            best, best_f1 = params, f1
    return best, best_f1


def _rounds(start_card) -> list:
    if start_card is None or not isinstance(start_card.extra, dict):
        return []
    return list(start_card.extra.get("rounds", []))


def _save_cancelled(net, card, ckpt: Path, out: Path, start_card, info: dict, post: dict) -> None:
    """On Cancel: save the best weights of the checkpoint (none before the first validation)."""
    import torch

    from tomolens.models.card import save_model

    if not ckpt.is_file():
        log.info("cancelled before the first validation: no model saved")
        return
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state["best_state"])
    history = [_step_record(h) for h in state["history"]]
    card.training_command = "tomolens.detect.points_train.train_from_points (cancelled)"
    card.training_data = f"{info['clicks']} clicked particles ({info['clicks_source']}); cancelled"
    card.metrics = {"best_step": int(state["best_epoch"]) * STEPS_PER_VALIDATION}
    steps_run = history[-1]["step"] if history else 0
    card.extra = {
        "postprocess": post,
        "particle_radius_A": post["particle_radius_A"],
        "history": history,
        "points_training": info | {"steps_run": steps_run, "cancelled": True},
        "rounds": _rounds(start_card) + [info | {"steps_run": steps_run, "cancelled": True}],
    }
    weights, _ = save_model(net.cpu(), card, out)
    log.info("cancelled: saved the best weights so far (step %d) to %s", card.metrics["best_step"], weights)
