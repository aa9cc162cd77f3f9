"""``tomolens train --task segment``: the segment task of the engine's training command.

Training data are painted label files (``--tomograms`` / ``--labels``) or simulated
cell-like tomograms (``--sim-train`` / ``--sim-val``; optionally only ``--segment-slices``
z-slices of their truth, as if painted); ``--segment-test`` adds held-out Dice on fresh
simulations to the card.  The job itself is :func:`tomolens.segment.train.train_segmenter`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomolens.segment.labels import (
    DEFAULT_CLASSES,
    LABEL_OFFSET,
    check_class_names,
    evenly_spaced_slices,
    sparse_from_classes,
)
from tomolens.segment.settings import SEGMENT_TRAIN_PARAMS, patch_for, start_model, trained_kind
from tomolens.segment.start import start_note
from tomolens.segment.train import TrainedSegmenter, save_segmenter, train_segmenter


def register_train_args(group: argparse._ArgumentGroup) -> None:
    """Segmentation-only options of ``tomolens train``."""
    from tomolens.params import add_arguments

    add_arguments(group, SEGMENT_TRAIN_PARAMS)  # --preset exists already: the engine's options added it
    group.add_argument(
        "--segment-classes",
        default=",".join(DEFAULT_CLASSES),
        help="comma-separated class names, background first; label files hold class k as "
        "k + 1 and 0 = not painted (default: %(default)s; simulated data always uses it)",
    )
    group.add_argument(
        "--segment-slices",
        type=int,
        default=0,
        metavar="N",
        help="simulated data: keep the truth of only N evenly spaced z-slices per training "
        "volume, as if painted (0 = complete labels; default: 0)",
    )
    group.add_argument("--segment-membranes", type=int, default=2, help="simulated vesicles per tomogram (default: 2)")
    group.add_argument("--segment-filaments", type=int, default=3, help="simulated filaments per tomogram (default: 3)")
    group.add_argument(
        "--segment-test",
        type=int,
        default=0,
        metavar="N",
        help="held-out simulated tomograms per SNR for the card's metrics, seeds after "
        "training and validation (default: 0)",
    )
    group.add_argument("--segment-test-snr", default="0.05,0.03", help="SNRs of the held-out tomograms")
    group.add_argument(
        "--segment-sim-cache",
        default="",
        metavar="DIR",
        help="cache simulated tomograms here (deterministic in their seed)",
    )
    group.add_argument(
        "--domain-data",
        nargs="*",
        default=[],
        metavar="DIR",
        help="train on domain-randomised dataset folders ('tomolens simulate-dataset'): complete "
        "labels, classes " + ", ".join(_domain_classes()) + ", rescaled to --sim-voxel-size-A",
    )
    group.add_argument(
        "--domain-val",
        nargs="*",
        default=[],
        metavar="DIR",
        help="validation dataset folders for --domain-data (other seeds; used to choose the epoch)",
    )
    group.add_argument(
        "--domain-limit",
        type=int,
        default=0,
        metavar="N",
        help="read only the first N tomograms of each --domain-data folder (0 = all)",
    )
    group.add_argument(
        "--domain-slices",
        type=int,
        default=12,
        metavar="N",
        help="z-slices of each dataset tomogram whose truth trains a 2D/2.5D model (a slice network "
        "keeps every labelled slice with its neighbours: all 64 of 96 tomograms do not fit in "
        "memory; 0 = all; default: 12)",
    )


def _domain_classes() -> tuple[str, ...]:
    from tomolens.simulate.domain import DOMAIN_CLASSES

    return DOMAIN_CLASSES


def _domain_pairs(folders: Sequence[str], voxel_size_A: float, limit: int = 0, n_slices: int = 0):
    """(volumes, [(tomogram, labels)]) of dataset folders at the model's voxel size (bright); the truth of
    ``n_slices`` evenly spaced z-slices per tomogram (0 = complete labels)."""
    from tomolens.models.domain_data import load_domain_volumes

    volumes = [v for folder in folders for v in load_domain_volumes(folder, voxel_size_A, limit, with_instances=False)]
    if n_slices:
        return volumes, [
            (v.tomogram, sparse_from_classes(v.semantic, evenly_spaced_slices(n_slices, len(v.semantic))))
            for v in volumes
        ]
    return volumes, [(v.tomogram, v.semantic.astype(np.int16) + LABEL_OFFSET) for v in volumes]


def _simulated(args: argparse.Namespace, count: int, first_seed: int, snrs: Sequence[float]):
    from tomolens.segment.simulated import simulate_sample

    shape = tuple(int(v) for v in args.sim_shape.split(","))
    if len(shape) != 3:
        raise ValueError(f"--sim-shape needs three numbers z,y,x; got {args.sim_shape!r}.")
    return [
        simulate_sample(
            first_seed + i,
            shape,
            snrs[i % len(snrs)],
            args.sim_voxel_size_A,
            args.sim_volume_fraction,
            args.segment_membranes,
            args.segment_filaments,
            cache_dir=args.segment_sim_cache or None,
        )
        for i in range(count)
    ]


def _snrs(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(f"Expected comma-separated SNRs, got {text!r}.") from err


def run_train(args: argparse.Namespace) -> int:
    """``tomolens train --task segment``: train, measure on held-out data, save with the card."""
    from tomolens.cli_progress import run_cli_job
    from tomolens.models.cli import command_line, training_volumes
    from tomolens.models.device import prepare_device

    device = prepare_device(args.device, args.threads)
    names = check_class_names(args.segment_classes.split(","))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    if args.tomograms:
        file_args = argparse.Namespace(**{**vars(args), "sim_train": 0, "sim_val": 0})
        t, v = training_volumes(file_args, labels_kind="semantic", require_val=False)
        train += [(img, lab) for img, lab, _ in t]
        val += [(img, lab) for img, lab, _ in v]
        voxel = {round(vs, 3) for _, _, vs in t + v}
    else:
        voxel = set()
    sim_data = ""
    domain_extra = {}
    if args.domain_data:
        from tomolens.models.domain_data import check_domain_options, domain_training_note, read_manifest

        check_domain_options(args)
        names = list(_domain_classes())
        slices = args.domain_slices if args.segment_model == "2d" else 0
        volumes, train = _domain_pairs(args.domain_data, args.sim_voxel_size_A, args.domain_limit, slices)
        val_volumes, val = _domain_pairs(args.domain_val, args.sim_voxel_size_A, 0, slices)
        voxel.add(round(args.sim_voxel_size_A, 3))
        sim_data = domain_training_note(args, volumes, val_volumes) + (
            f"; truth of {slices} evenly spaced z-slices per tomogram" if slices else "; complete labels"
        )
        domain_extra = {
            "training_ranges": read_manifest(args.domain_data[0]).get("training_ranges", {}),
            "training_seeds": [v.seed for v in volumes],
            "validation_seeds": [v.seed for v in val_volumes],
        }
    if args.sim_train:
        names = list(DEFAULT_CLASSES)
        snrs = _snrs(args.sim_snr)
        sims = _simulated(args, args.sim_train + args.sim_val, args.sim_seed, snrs)
        voxel.add(round(args.sim_voxel_size_A, 3))
        for i, s in enumerate(sims):
            dense = s.classes + LABEL_OFFSET
            if i < args.sim_train and args.segment_slices:
                dense = sparse_from_classes(s.classes, evenly_spaced_slices(args.segment_slices, s.classes.shape[0]))
            (train if i < args.sim_train else val).append((s.tomogram, dense))
        sim_data = (
            f"simulated seeds {args.sim_seed}..{args.sim_seed + args.sim_train - 1} (training), "
            f"{args.sim_seed + args.sim_train}..{args.sim_seed + args.sim_train + args.sim_val - 1} "
            f"(validation); shape {args.sim_shape}, SNR cycled over {args.sim_snr}, volume fraction "
            f"{args.sim_volume_fraction}, {args.segment_membranes} vesicles, {args.segment_filaments} "
            f"filaments, {args.sim_voxel_size_A} Å; "
            + (
                f"{args.segment_slices} painted z-slices per training volume"
                if args.segment_slices
                else "complete labels"
            )
        )
    if not train:
        raise ValueError("No training data: give --tomograms/--labels (painted labels) or --sim-train N.")
    if args.sim_train and not args.sim_val and not args.val_tomograms:
        raise ValueError("Give --sim-val N (validation tomograms) with --sim-train.")
    if len(voxel) != 1:
        raise ValueError(f"All training volumes must share one voxel size; got {sorted(voxel)} Å.")
    voxel_size_A = float(voxel.pop())
    start_from = start_model(args.segment_start_from)
    patch = patch_for(trained_kind(args.segment_model, start_from), args.patch)
    note = start_note(start_from, names)
    if note:
        print(note)
    job = train_segmenter(
        train,
        names,
        voxel_size_A,
        val or None,
        model_kind=args.segment_model,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        patch=patch,
        batch_size=args.batch_size,
        base_channels=args.base_channels,
        depth=args.depth,
        learning_rate=args.learning_rate,
        dice_weight=args.segment_dice_weight,
        patience=args.patience,
        min_epochs=args.min_epochs,
        stop_window=args.stop_window,
        slice_axes=args.segment_slice_axes,
        context=args.segment_context,
        hold_out=args.segment_hold_out,
        start_from=start_from,
        seed=args.seed,
        device=device,
        threads=args.threads,
        val_patches=args.val_patches,
        checkpoint=args.checkpoint or str(Path(args.out).with_suffix(".ckpt")),
        resume=args.resume,
        max_minutes=args.max_minutes or None,
        cpu_precision=args.cpu_precision,
        name=Path(args.out).stem,
        training_command=command_line(args),
        training_data=sim_data or f"files {args.tomograms}",
        polarity="bright" if args.domain_data else "auto",
    )
    trained = run_cli_job(
        job,
        line=lambda p: (
            p.info
            and (
                f"epoch {p.info['epoch']:3d}  loss {p.info['loss']:.4f}  {'fit' if p.info.get('val_is_fit') else 'val'} "
                f"{p.info['val_loss']:.4f}"
                f"  ({p.info['seconds']:.0f} s)"
            )
        ),
    )
    if args.segment_test and args.sim_train:
        trained.card.metrics["held_out_dice"] = held_out_dice(trained, args)
        print(f"held-out Dice: {trained.card.metrics['held_out_dice']}")
    trained.card.extra.update(domain_extra)
    weights = save_segmenter(trained, args.out)
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def held_out_dice(trained: TrainedSegmenter, args: argparse.Namespace) -> dict:
    """Per-class Dice (argmax, no clean-up) on simulated tomograms never used for training or stopping."""
    from tomolens.jobs import run_job
    from tomolens.segment.predict import classes_from_probabilities, predict_probabilities
    from tomolens.segment.simulated import dice_per_class

    out = {}
    seed = args.sim_seed + args.sim_train + args.sim_val
    for snr in _snrs(args.segment_test_snr):
        samples = _simulated(args, args.segment_test, seed, [snr])
        seed += args.segment_test
        scores = []
        for s in samples:
            probs = run_job(predict_probabilities(trained.model, trained.card, s.tomogram, s.voxel_size_A))
            pred = classes_from_probabilities(probs)
            scores.append(dice_per_class(pred, s.classes, trained.card.classes))
        out[f"snr_{snr:g}"] = {n: round(float(np.nanmean([d[n] for d in scores])), 4) for n in trained.card.classes} | {
            "tomograms": len(samples),
            "seeds": [s.seed for s in samples],
        }
    return out
