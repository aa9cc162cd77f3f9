"""Training of the detection model (``tomolens train --task detect``).

Targets come from instance labels (:func:`tomolens.detect.targets.detection_targets`);
the loss is BCE on the mask head plus ``centre_weight`` × MSE of the sigmoid centre head
against the normalised distance map.  After training, post-processing thresholds are
tuned on the validation volumes (the same ones that chose when to stop) and the model is
measured on *held-out* volumes — simulated with seeds used neither for training nor for
validation — whose figures go on the model card.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Generator, Sequence
from itertools import product
from typing import Any

import numpy as np
from skimage.measure import regionprops

from tomolens.detect.targets import detection_targets
from tomolens.evaluate import match_centres
from tomolens.jobs import Progress, run_job

log = logging.getLogger(__name__)

ARCHITECTURE = "tomolens.models.unet:UNet3D"
CLASSES = ["mask", "centre"]


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


def train_detection_model(
    volumes: Sequence[tuple[np.ndarray, np.ndarray, float]],
    val_volumes: Sequence[tuple[np.ndarray, np.ndarray, float]],
    config,
    base_channels: int = 8,
    depth: int = 2,
    centre_weight: float = 2.0,
) -> Generator[Progress, None, Any]:
    """Train a fresh mask+centre U-Net on (tomogram, instance labels, voxel size) triples.

    Returns the :class:`~tomolens.models.training.TrainResult` (job protocol).
    """
    from functools import partial

    from tomolens.models.training import TrainingPair, train_model
    from tomolens.models.unet import UNet3D

    def pairs(vols):
        return [TrainingPair(img, detection_targets(np.asarray(lab).astype(np.int32))) for img, lab, _ in vols]

    net = UNet3D(in_channels=1, out_channels=2, base_channels=base_channels, depth=depth)
    result = yield from train_model(net, pairs(volumes), pairs(val_volumes),
                                    partial(detection_loss, centre_weight=centre_weight), config)
    return result


def predict_maps(net, card_like: dict, volume: np.ndarray, voxel_size_A: float, device: str = "cpu") -> np.ndarray:
    """Probability maps (2, z, y, x) of a trained network on one volume (no post-processing)."""
    from tomolens.models.tiling import predict_tiled

    edge = 2 * card_like["patch"]
    m = getattr(net, "size_multiple", 4)
    patch = tuple(min(edge, -(-n // m) * m) for n in volume.shape)
    return run_job(predict_tiled(net, volume, patch, overlap=0.25, batch_size=2, device=device,
                                 out_channels=2, voxel_size_A=voxel_size_A,
                                 model_voxel_size_A=card_like.get("voxel_size_A") or voxel_size_A))


def tune_postprocess(maps_and_truth, voxel_size_A: float, radius_A: float) -> tuple[dict, float]:
    """Grid-search mask/centre thresholds for the best mean F1 on (maps, true centres) pairs."""
    from tomolens.detect.postprocess import postprocess

    best, best_f1 = {}, -1.0
    for mask_t, centre_t in product((0.3, 0.4, 0.5, 0.6), (0.2, 0.3, 0.4, 0.5)):
        params = {"mask_threshold": mask_t, "centre_threshold": centre_t, "particle_radius_A": radius_A,
                  "min_volume_A3": 0.15 * 4 / 3 * np.pi * radius_A**3}
        f1s = []
        for maps, truth in maps_and_truth:
            _, _, table = postprocess(maps, voxel_size_A, params)
            f1s.append(match_centres(table.coords_zyx * voxel_size_A, truth * voxel_size_A, radius_A / 2).f1)
        if np.mean(f1s) > best_f1:
            best, best_f1 = params, float(np.mean(f1s))
    return best, best_f1


def register_train_args(group: argparse._ArgumentGroup) -> None:
    """Detection-only options of ``tomolens train``."""
    group.add_argument("--detect-centre-weight", type=float, default=2.0,
                       help="weight of the centre-map MSE against the mask BCE (default: 2.0)")
    group.add_argument("--detect-test", type=int, default=0, metavar="N",
                       help="held-out simulated tomograms per SNR for the card's metrics, seeds after "
                            "training and validation (default: 0)")
    group.add_argument("--detect-test-snr", type=str, default="0.05,0.03",
                       help="SNRs of the held-out tomograms (default: 0.05,0.03)")


def run_train(args: argparse.Namespace) -> int:
    """Train, tune, measure and save a detection model with its card."""
    import torch

    from tomolens.models.card import ModelCard, save_model
    from tomolens.models.cli import command_line, simulated_volumes, train_config, training_volumes
    from tomolens.models.device import choose_device, set_cpu_threads

    device = choose_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif device == "cpu":
        set_cpu_threads()
    train, val = training_volumes(args, labels_kind="instances")
    voxel = {round(v, 3) for _, _, v in train + val}
    if len(voxel) != 1:
        raise ValueError(f"All training volumes must share one voxel size; got {sorted(voxel)} Å.")
    voxel_size_A = voxel.pop()
    config = train_config(args, device)
    result = run_job(train_detection_model(train, val, config, args.base_channels, args.depth,
                                           args.detect_centre_weight),
                     on_progress=lambda p: p.info and print(
                         f"epoch {p.info['epoch']:3d}  loss {p.info['loss']:.4f}  val {p.info['val_loss']:.4f}"
                         f"  ({p.info['seconds']:.0f} s)", flush=True))
    net = result.model.cpu()
    card_like = {"patch": args.patch, "voxel_size_A": voxel_size_A}
    radius_vox = float(np.median([true_centres(lab)[1] for _, lab, _ in val]))
    radius_A = radius_vox * voxel_size_A
    val_sets = [(predict_maps(net, card_like, img, voxel_size_A), true_centres(lab)[0]) for img, lab, _ in val]
    post, val_f1 = tune_postprocess(val_sets, voxel_size_A, radius_A)
    print(f"validation F1 {val_f1:.3f} with {post}")
    metrics: dict[str, Any] = {"validation_f1_tuned": round(val_f1, 4), "best_epoch": result.best_epoch,
                               "best_val_loss": round(result.best_val_loss, 5), "epochs_run": len(result.history)}
    if args.detect_test:
        metrics["held_out"] = held_out_metrics(net, card_like, args, post, radius_A, voxel_size_A,
                                               simulated_volumes)
        print(f"held-out: {metrics['held_out']}")
    first_test = args.sim_seed + args.sim_train + args.sim_val
    card = ModelCard(
        name=__import__("pathlib").Path(args.out).stem, task="detect", architecture=ARCHITECTURE,
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": args.base_channels, "depth": args.depth},
        classes=CLASSES, voxel_size_A=voxel_size_A, patch_size=[args.patch] * 3, normalisation="zscore",
        training_command=command_line(None),
        training_data=(f"{len(train)} training / {len(val)} validation volumes; simulated seeds "
                       f"{args.sim_seed}..{args.sim_seed + args.sim_train + args.sim_val - 1}, shape {args.sim_shape}, "
                       f"SNR {args.sim_snr}, volume fraction {args.sim_volume_fraction}; held-out seeds from "
                       f"{first_test}" if args.sim_train else f"files {args.tomograms}"),
        seed=args.seed, metrics=metrics,
        extra={"postprocess": post, "history": result.history, "particle_radius_A": radius_A},
    )
    weights, card_path = save_model(net, card, args.out)
    print(f"wrote {weights} and {card_path}")
    return 0


def held_out_metrics(net, card_like, args, post, radius_A, voxel_size_A, simulate) -> dict:
    """F1/precision/recall on simulated tomograms with seeds never used for training or stopping.

    Truth is the simulator's particle table; a prediction matches within half of each
    particle's ``radius_A``.
    """
    from tomolens.detect.postprocess import postprocess

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
            maps = predict_maps(net, card_like, sim.tomogram, vs)
            _, _, table = postprocess(maps, vs, post)
            truth = sim.particles
            m = match_centres(table.coords_zyx * vs, truth.coords_zyx * vs,
                              np.asarray(truth.features["radius_A"], float) / 2)
            f1s.append(m.f1), ps.append(m.precision), rs.append(m.recall)
        out[f"snr_{snr:g}"] = {"f1": round(float(np.mean(f1s)), 4), "precision": round(float(np.mean(ps)), 4),
                               "recall": round(float(np.mean(rs)), 4), "tomograms": len(sims), "seeds": seeds}
    return out


def split_regions(volume: np.ndarray, labels: np.ndarray, val_fraction: float = 0.25):
    """Split one volume along y into a training and a validation region (no shared voxels)."""
    ny = volume.shape[1]
    cut = int(round(ny * (1 - val_fraction)))
    if cut < 8 or ny - cut < 8:
        raise ValueError(f"The volume is too small to split into training and validation regions (y = {ny}).")
    return (volume[:, :cut], labels[:, :cut]), (volume[:, cut:], labels[:, cut:])


def train_and_save(volume: np.ndarray, instances: np.ndarray, voxel_size_A: float, out, epochs: int = 20,
                   device: str = "auto", patch: int = 32, base_channels: int = 8, depth: int = 2,
                   seed: int = 0) -> Generator[Progress, None, Any]:
    """Train on one annotated tomogram (y split 75/25 into training/validation regions), save, return the path.

    The widget's "Train" action.  Post-processing thresholds are tuned on the
    validation region and stored on the card.
    """
    from pathlib import Path

    from tomolens.models.card import ModelCard, save_model
    from tomolens.models.device import choose_device
    from tomolens.models.training import TrainConfig

    instances = np.asarray(instances).astype(np.int32)
    if instances.max() == 0:
        raise ValueError("The labels layer is empty: paint or load particle instances to train on.")
    (tr_img, tr_lab), (va_img, va_lab) = split_regions(np.asarray(volume, np.float32), instances)
    m = 2**depth
    patch = max(m, min(patch, *(s // m * m for s in va_img.shape)))
    device = choose_device(device)
    config = TrainConfig(patch_size=(patch,) * 3, epochs=epochs, steps_per_epoch=20, batch_size=2,
                         val_patches=8, patience=5, seed=seed, device=device)
    result = yield from train_detection_model([(tr_img, tr_lab, voxel_size_A)], [(va_img, va_lab, voxel_size_A)],
                                              config, base_channels, depth)
    net = result.model.cpu()
    centres, radius_vox = true_centres(va_lab)
    radius_A = radius_vox * voxel_size_A
    maps = predict_maps(net, {"patch": patch, "voxel_size_A": voxel_size_A}, va_img, voxel_size_A)
    post, val_f1 = tune_postprocess([(maps, centres)], voxel_size_A, radius_A)
    out = Path(out)
    card = ModelCard(
        name=out.stem, task="detect", architecture=ARCHITECTURE,
        arch_kwargs={"in_channels": 1, "out_channels": 2, "base_channels": base_channels, "depth": depth},
        classes=CLASSES, voxel_size_A=voxel_size_A, patch_size=[patch] * 3,
        training_command="napari 'Detect particles' widget: Train (tomolens.detect.train.train_and_save)",
        training_data=f"one annotated tomogram {volume.shape}, y split 75/25 into training/validation regions",
        seed=seed, metrics={"validation_f1_tuned": round(val_f1, 4), "best_epoch": result.best_epoch},
        extra={"postprocess": post, "history": result.history, "particle_radius_A": radius_A},
    )
    weights, _ = save_model(net, card, out)
    yield Progress(1, 1, f"saved {weights.name} (validation F1 {val_f1:.2f})")
    return weights
