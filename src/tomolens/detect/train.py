"""Training of the detection model (``tomolens train --task detect``).

Targets come from instance labels (:func:`tomolens.detect.targets.detection_targets`);
the loss is BCE on the mask head plus ``centre_weight`` × MSE of the sigmoid centre head
against the centre map.  With ``--bin N`` the model learns at N × the data's voxel size
(inference rescales inputs the same way).  After training, post-processing thresholds
are tuned on the validation volumes (the ones that chose when to stop) through the full
:func:`~tomolens.detect.detect_particles` path, and — with ``--detect-test N`` — the
model is measured on *held-out* simulated tomograms whose seeds were used neither for
training nor for validation; those figures go on the model card.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Generator, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from skimage.measure import regionprops

from tomolens.detect.detector import detect_particles
from tomolens.detect.targets import detection_targets
from tomolens.evaluate import match_centres
from tomolens.jobs import Progress, run_job
from tomolens.models.cli import engine_param

log = logging.getLogger(__name__)

ARCHITECTURE = "tomolens.models.unet:UNet3D"
CLASSES = ["mask", "centre"]
#: Post-processing grid searched on the validation volumes.
#: Settings of the Detect widget's one-tomogram "Train" action: the engine's own options
#: of ``tomolens train`` (same names and defaults), so GUI and CLI cannot drift.
TRAIN_PARAMS = (
    engine_param("epochs"),
    engine_param("steps_per_epoch"),
    engine_param("batch_size", advanced=True),
    engine_param("patch", advanced=True),
    engine_param("base_channels", advanced=True),
    engine_param("depth", advanced=True),
    engine_param("learning_rate", advanced=True),
    engine_param("patience", advanced=True),
    engine_param("seed", advanced=True),
)

TUNING_GRID = {"mask_threshold": (0.3, 0.4, 0.5, 0.6), "centre_threshold": (0.2, 0.3, 0.4, 0.5)}


def detection_loss(logits, target, centre_weight: float = 2.0):
    """BCE(mask logits, mask) + centre_weight × MSE(sigmoid(centre logits), centre map).

    ``logits`` and ``target`` are (N, 2, z, y, x) tensors.
    """
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0])
    mse = F.mse_loss(torch.sigmoid(logits[:, 1]), target[:, 1])
    return bce + centre_weight * mse


def true_centres(instances: np.ndarray) -> tuple[np.ndarray, float]:
    """Centroids (voxels, z, y, x) of the instances and their median equivalent radius (voxels)."""
    props = regionprops(np.asarray(instances).astype(np.int32))
    centres = np.array([r.centroid for r in props], float).reshape(-1, 3)
    radii = [(3 * r.area / (4 * np.pi)) ** (1 / 3) for r in props]
    return centres, float(np.median(radii)) if radii else 0.0


def new_card(name: str, voxel_size_A: float, patch: int, base_channels: int, depth: int, **fields):
    """A detection :class:`~tomolens.models.card.ModelCard` for a UNet3D with mask + centre outputs."""
    from tomolens.models.card import ModelCard

    return ModelCard(
        name=name,
        task="detect",
        architecture=ARCHITECTURE,
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": base_channels, "depth": depth},
        classes=list(CLASSES),
        voxel_size_A=float(voxel_size_A),
        patch_size=[int(patch)] * 3,
        normalisation="zscore",
        polarity="bright",
        **fields,
    )


def train_detection_model(
    volumes: Sequence[tuple[np.ndarray, np.ndarray, float]],
    val_volumes: Sequence[tuple[np.ndarray, np.ndarray, float]],
    config,
    base_channels: int = 8,
    depth: int = 2,
    centre_weight: float = 2.0,
    polarity: str = "auto",
) -> Generator[Progress, None, Any]:
    """Train a fresh mask+centre U-Net on (tomogram, instance labels, voxel size) triples.

    The triples must already be at the model's voxel size.  Tomograms are brought to the
    bright convention of new models (``polarity``: each tomogram's contrast, "auto" =
    measured; :func:`tomolens.polarity.to_model_polarity`).  Returns the
    :class:`~tomolens.models.training.TrainResult` (job protocol).
    """
    from tomolens.polarity import to_model_polarity
    from functools import partial

    from tomolens.models.sampling import TrainingPair
    from tomolens.models.training import train_model
    from tomolens.models.unet import UNet3D

    def pairs(vols):
        return [
            TrainingPair(
                to_model_polarity(img, polarity, "bright", vs)[0], detection_targets(np.asarray(lab).astype(np.int32))
            )
            for img, lab, vs in vols
        ]

    import torch

    torch.manual_seed(config.seed)  # the initial weights follow the seed too
    net = UNet3D(in_channels=1, out_channels=2, base_channels=base_channels, depth=depth)
    result = yield from train_model(
        net, pairs(volumes), pairs(val_volumes), partial(detection_loss, centre_weight=centre_weight), config
    )
    return result


def tune_postprocess(results_and_truth, radius_A: float) -> tuple[dict, float]:
    """Grid-search mask/centre thresholds for the best mean F1.

    ``results_and_truth``: (DetectionResult, true centres in the tomogram's voxels) pairs.
    """
    best, best_f1 = {}, -1.0
    for mask_t, centre_t in product(TUNING_GRID["mask_threshold"], TUNING_GRID["centre_threshold"]):
        params = {
            "mask_threshold": mask_t,
            "centre_threshold": centre_t,
            "particle_radius_A": radius_A,
            "min_volume_A3": 0.15 * 4 / 3 * np.pi * radius_A**3,
        }
        f1s = []
        for result, truth in results_and_truth:
            found = result.reapply(**params).particles
            vs = result.voxel_size_A
            f1s.append(match_centres(found.coords_zyx * vs, truth * vs, radius_A / 2).f1)
        if np.mean(f1s) > best_f1:
            best, best_f1 = params, float(np.mean(f1s))
    return best, best_f1


def register_train_args(group: argparse._ArgumentGroup) -> None:
    """Detection-only options of ``tomolens train``."""
    group.add_argument(
        "--detect-centre-weight",
        type=float,
        default=2.0,
        help="weight of the centre-map MSE against the mask BCE (default: 2.0)",
    )
    group.add_argument(
        "--detect-test",
        type=int,
        default=0,
        metavar="N",
        help="held-out simulated tomograms per SNR for the card's metrics, seeds after "
        "training and validation (default: 0)",
    )
    group.add_argument(
        "--detect-test-snr", type=str, default="0.05,0.03", help="SNRs of the held-out tomograms (default: 0.05,0.03)"
    )
    from tomolens.detect.points_cli import register_points_args

    register_points_args(group)


def _epoch_line(p: Progress) -> str | None:
    if not p.info:
        return None
    return f"epoch {p.info['epoch']:3d}  loss {p.info['loss']:.4f}  val {p.info['val_loss']:.4f}  ({p.info['seconds']:.0f} s)"


def run_train(args: argparse.Namespace) -> int:
    """Train, tune, measure and save a detection model with its card."""
    from tomolens.models.card import save_model
    from tomolens.models.cli import bin_volumes, command_line, simulated_volumes, train_config, training_volumes
    from tomolens.models.device import prepare_device

    if args.points:
        from tomolens.detect.points_cli import run_points_train

        return run_points_train(args)
    device = prepare_device(args.device, args.threads)
    domain_note = ""
    if getattr(args, "domain_data", None):
        train, val, domain_note = _domain_training_volumes(args)
    else:
        train, val = training_volumes(args, labels_kind="instances")
    voxel = {round(v, 3) for _, _, v in train + val}
    if len(voxel) != 1:
        raise ValueError(f"All training volumes must share one voxel size; got {sorted(voxel)} Å.")
    data_vs = voxel.pop()
    model_vs = data_vs * args.bin
    config = train_config(args, device)
    from tomolens.cli_progress import run_cli_job

    result = run_cli_job(
        train_detection_model(
            bin_volumes(train, args.bin),
            bin_volumes(val, args.bin),
            config,
            args.base_channels,
            args.depth,
            args.detect_centre_weight,
            # dataset folders are brought to bright by their known polarity (load_domain_volumes): never guess it
            polarity="bright" if domain_note else "auto",
        ),
        line=_epoch_line,
    )
    net = result.model.cpu()
    first_test = args.sim_seed + args.sim_train + args.sim_val
    card = new_card(
        Path(args.out).stem,
        model_vs,
        args.patch,
        args.base_channels,
        args.depth,
        training_command=command_line(args),
        seed=args.seed,
        training_data=domain_note
        or (
            f"{len(train)} training / {len(val)} validation volumes at {data_vs:g} Å"
            + (f", resampled to {model_vs:g} Å" if args.bin > 1 else "")
            + (
                f"; simulated (tomolens.simulate) seeds {args.sim_seed}..{first_test - 1}, shape "
                f"{args.sim_shape}, SNR {args.sim_snr}, volume fraction {args.sim_volume_fraction}, "
                "all built-in phantoms"
                if args.sim_train
                else f"; files {args.tomograms}"
            )
        ),
    )
    radius_A = float(np.median([true_centres(lab)[1] for _, lab, _ in val])) * data_vs
    val_sets = [
        (run_job(detect_particles(img, vs, model=(net, card), device="cpu")), true_centres(lab)[0])
        for img, lab, vs in val
    ]
    post, val_f1 = tune_postprocess(val_sets, radius_A)
    print(f"validation F1 {val_f1:.3f} with {post}")
    card.metrics = {
        "validation_f1_tuned": round(val_f1, 4),
        "best_epoch": result.best_epoch,
        "best_val_loss": round(result.best_val_loss, 5),
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
    }
    card.extra = {
        "postprocess": post,
        "history": result.history,
        "particle_radius_A": radius_A,
        "training_precision": result.precision,
        "training_budget": result.budget,
    }
    if args.detect_test:
        card.metrics["held_out"] = held_out_metrics(net, card, args, post, simulated_volumes)
        print(f"held-out: {card.metrics['held_out']}")
    weights, card_path = save_model(net, card, args.out)
    print(f"wrote {weights} and {card_path}")
    return 0


def _domain_training_volumes(args: argparse.Namespace):
    """``--domain-data``/``--domain-val`` dataset folders → (train, val, card note): macromolecule instances at
    ``--sim-voxel-size-A``, bright (:func:`tomolens.models.domain_data.detection_volumes`)."""
    from tomolens.models.domain_data import check_domain_options, detection_volumes, domain_training_note

    check_domain_options(args)
    train, volumes = detection_volumes(args.domain_data, args.sim_voxel_size_A, args.domain_limit)
    val, val_volumes = detection_volumes(args.domain_val, args.sim_voxel_size_A)
    note = (
        domain_training_note(args, volumes, val_volumes) + f"; macromolecule instances at {args.sim_voxel_size_A:g} Å"
    )
    return train, val, note


def held_out_metrics(net, card, args, post, simulate) -> dict:
    """F1/precision/recall on simulated tomograms with seeds never used for training or stopping.

    Truth is the simulator's particle table; a prediction matches within half of each
    particle's ``radius_A``.
    """
    out = {}
    seed = args.sim_seed + args.sim_train + args.sim_val
    for snr in [float(s) for s in args.detect_test_snr.split(",")]:
        sub = argparse.Namespace(**{**vars(args), "sim_snr": str(snr)})
        sims = simulate(sub, args.detect_test, seed, "instances", keep_simulations=True)
        seeds = f"{seed}..{seed + args.detect_test - 1}"
        seed += args.detect_test
        f1s, ps, rs = [], [], []
        for sim in sims:
            vs = sim.voxel_size_A
            found = run_job(detect_particles(sim.tomogram, vs, model=(net, card), device="cpu", **post)).particles
            truth = sim.particles
            m = match_centres(
                found.coords_zyx * vs, truth.coords_zyx * vs, np.asarray(truth.features["radius_A"], float) / 2
            )
            f1s.append(m.f1), ps.append(m.precision), rs.append(m.recall)
        out[f"snr_{snr:g}"] = {
            "f1": round(float(np.mean(f1s)), 4),
            "precision": round(float(np.mean(ps)), 4),
            "recall": round(float(np.mean(rs)), 4),
            "tomograms": len(sims),
            "seeds": seeds,
        }
    return out


def split_regions(volume: np.ndarray, labels: np.ndarray, val_fraction: float = 0.25):
    """Split one volume along y into a training and a validation region (no shared voxels)."""
    ny = volume.shape[1]
    cut = int(round(ny * (1 - val_fraction)))
    if cut < 8 or ny - cut < 8:
        raise ValueError(f"The volume is too small to split into training and validation regions (y = {ny}).")
    return (volume[:, :cut], labels[:, :cut]), (volume[:, cut:], labels[:, cut:])


def train_and_save(
    volume: np.ndarray,
    instances: np.ndarray,
    voxel_size_A: float,
    out,
    epochs: int = 30,
    device: str = "auto",
    patch: int = 32,
    base_channels: int = 16,
    depth: int = 2,
    seed: int = 0,
    steps_per_epoch: int = 40,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    patience: int = 6,
) -> Generator[Progress, None, Any]:
    """Train on one annotated tomogram (y split 75/25 into training/validation regions), save, return the path.

    The widget's "Train" action, at the tomogram's own voxel size, with the settings of
    :data:`TRAIN_PARAMS` (defaults = ``tomolens train``'s).  Post-processing thresholds
    are tuned on the validation region and stored on the card.
    """
    from tomolens.models.card import save_model
    from tomolens.models.device import choose_device
    from tomolens.models.training import TrainConfig

    instances = np.asarray(instances).astype(np.int32)
    if instances.max() == 0:
        raise ValueError("The labels layer is empty: paint or load particle instances to train on.")
    (tr_img, tr_lab), (va_img, va_lab) = split_regions(np.asarray(volume, np.float32), instances)
    m = 2**depth
    patch = max(m, min(patch, *(s // m * m for s in va_img.shape)))
    device = choose_device(device)
    config = TrainConfig(
        patch_size=(patch,) * 3,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        learning_rate=learning_rate,
        val_patches=8,
        patience=patience,
        seed=seed,
        device=device,
    )
    result = yield from train_detection_model(
        [(tr_img, tr_lab, voxel_size_A)], [(va_img, va_lab, voxel_size_A)], config, base_channels, depth
    )
    net = result.model.cpu()
    out = Path(out)
    card = new_card(
        out.stem,
        voxel_size_A,
        patch,
        base_channels,
        depth,
        seed=seed,
        training_command="napari 'Detect particles' widget: Train (tomolens.detect.train.train_and_save)",
        training_data=f"one annotated tomogram {volume.shape}, y split 75/25 into training/validation",
    )
    centres, radius_vox = true_centres(va_lab)
    radius_A = radius_vox * voxel_size_A
    found = yield from detect_particles(va_img, voxel_size_A, model=(net, card), device="cpu")
    post, val_f1 = tune_postprocess([(found, centres)], radius_A)
    card.metrics = {"validation_f1_tuned": round(val_f1, 4), "best_epoch": result.best_epoch}
    card.extra = {
        "postprocess": post,
        "history": result.history,
        "particle_radius_A": radius_A,
        "training_precision": result.precision,
        "training_budget": result.budget,
    }
    weights, _ = save_model(net, card, out)
    yield Progress(1, 1, f"saved {weights.name} (validation F1 {val_f1:.2f})")
    return weights
