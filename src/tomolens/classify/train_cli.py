"""``tomolens train --task classify``: the classify task of the engine's training command.

Data, one of:

- ``--classify-data DIR``: a dataset folder with ``train/val/test.npz`` (as written by
  the simulator, one folder per SNR);
- ``--classify-simulate N``: simulate N subtomograms per class with
  ``tomolens.simulate.simulate_subtomograms`` (built-in phantoms or
  ``--classify-templates``) into ``OUT_dataset/`` and train on the SNR
  ``--classify-snr``;
- ``--classify-tomogram MRC [MRC …] --classify-points STAR [STAR …]``: class-labelled
  particles (column ``--classify-label-column``, default ``class``) of one or several
  tomograms, paired in order, pooled and split 70/15/15 stratified by class.

Training stops early on the validation split only; the card's metrics are the test
split's accuracy and confusion matrix.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from tomolens.cli_progress import run_cli_job

log = logging.getLogger(__name__)


def register_train_args(group: argparse._ArgumentGroup) -> None:
    """Classification-only options of ``tomolens train``."""
    from tomolens.classify.train import TRAIN_PARAMS
    from tomolens.params import add_arguments

    # the shared Params (widget and CLI); the engine's ones are on the parser already
    add_arguments(group, [p for p in TRAIN_PARAMS if p.name.startswith("classify_")])
    group.add_argument(
        "--classify-data",
        default="",
        metavar="DIR[,DIR…]",
        help="dataset folder(s) with train.npz, val.npz, test.npz; several (e.g. one per SNR, "
        "comma-separated) are pooled split by split",
    )
    group.add_argument(
        "--classify-simulate",
        type=int,
        default=0,
        metavar="N",
        help="simulate N subtomograms per class with the simulator and train on them",
    )
    group.add_argument(
        "--classify-templates",
        nargs="*",
        default=None,
        metavar="NAME_OR_MRC",
        help="simulator templates (built-in phantom names or MRC maps; default: built-in phantoms)",
    )
    group.add_argument(
        "--classify-snr",
        default="0.05",
        help="SNR(s) to simulate and train on, comma-separated, inf = noise-free; several SNRs "
        "are pooled split by split (default: 0.05)",
    )
    group.add_argument(
        "--classify-dataset-out",
        default="",
        metavar="DIR",
        help="where --classify-simulate writes its dataset (default: OUT_dataset beside --out)",
    )
    group.add_argument(
        "--classify-crowding",
        action="store_true",
        help="simulate crowded neighbours around each particle (about 20x slower)",
    )
    group.add_argument("--classify-box", type=int, default=32, help="simulated box edge, voxels (default: 32)")
    group.add_argument(
        "--classify-tomogram", nargs="+", default=[], metavar="MRC", help="tomogram(s) of labelled particles"
    )
    group.add_argument(
        "--classify-points",
        nargs="+",
        default=[],
        metavar="COORDS",
        help="class-labelled particles (.star/.csv), one file per --classify-tomogram, same order",
    )
    group.add_argument(
        "--classify-width",
        type=int,
        default=None,
        help="resnet: channels of the first stage, then 2x and 4x (default: 16)",
    )
    group.add_argument(
        "--classify-dropout", type=float, default=None, help="dropout probability (default: 0.5 seed, 0.3 resnet)"
    )
    group.add_argument(
        "--classify-calibrate",
        default="",
        metavar="MODEL",
        help="do not train: add unknown-detection statistics to the card of this classifier (shipped name or "
        ".pt) from the data given (its training data and --seed, so that the validation split is one it never "
        "trained on) and write weights + card to --out",
    )


def _dataset(args: argparse.Namespace):
    from tomolens.classify.data import load_dataset

    sources = [bool(args.classify_data), bool(args.classify_simulate), bool(args.classify_points)]
    if sum(sources) != 1:
        raise ValueError(
            "Give exactly one data source: --classify-data DIR, --classify-simulate N, "
            "or --classify-tomogram MRC with --classify-points COORDS."
        )
    if args.classify_data:
        ds = pool_datasets([load_dataset(d) for d in args.classify_data.split(",") if d.strip()])
        return ds, f"dataset folder(s) {args.classify_data}"
    if args.classify_simulate:
        from tomolens.simulate import SubtomogramConfig, simulate_subtomograms
        from tomolens.simulate.subtomograms import snr_name

        out_dir = Path(
            args.classify_dataset_out or Path(args.out).parent / (Path(args.out).with_suffix("").name + "_dataset")
        )
        snrs = tuple(float(v) for v in str(args.classify_snr).split(",") if v.strip())
        cfg = SubtomogramConfig(
            templates=args.classify_templates,
            n_per_class=args.classify_simulate,
            box=args.classify_box,
            voxel_size_A=args.sim_voxel_size_A,
            snrs=snrs,
            crowding=args.classify_crowding,
            seed=args.seed,
        )
        run_cli_job(simulate_subtomograms(cfg, out_dir))
        ds = pool_datasets([load_dataset(out_dir / snr_name(s)) for s in snrs])
        ds.voxel_size_A = ds.voxel_size_A or args.sim_voxel_size_A
        return ds, (
            f"simulate_subtomograms(templates={args.classify_templates or 'built-in phantoms'}, "
            f"n_per_class={args.classify_simulate}, box={args.classify_box}, "
            f"voxel_size_A={args.sim_voxel_size_A}, snrs={snrs}, crowding={args.classify_crowding}, "
            f"seed={args.seed}); split 70/15/15 per particle, shared by all SNRs"
        )
    if len(args.classify_tomogram) != len(args.classify_points):
        raise ValueError(
            f"--classify-points gives {len(args.classify_points)} file(s) but --classify-tomogram "
            f"{len(args.classify_tomogram)}: give one coordinate file per tomogram, in the same order."
        )
    from tomolens.classify.data import dataset_from_tomograms
    from tomolens.classify.extract import box_in_voxels
    from tomolens.io.coords import read_coordinates
    from tomolens.io.checks import tomogram_voxel_size
    from tomolens.io.mrc import read_mrc

    items, voxels, n_points = [], set(), 0
    for tomo_path, points_path in zip(args.classify_tomogram, args.classify_points):
        vol = read_mrc(tomo_path)
        voxel = tomogram_voxel_size(args.voxel_size_A, vol.voxel_size_A, tomo_path)
        voxels.add(round(float(voxel), 3))
        table = read_coordinates(points_path, pixel_size_A=voxel, tomogram_shape_zyx=vol.data.shape)
        if args.classify_label_column not in table.features:
            raise ValueError(
                f"{points_path} has no column {args.classify_label_column!r}; columns: {list(table.features.columns)}."
            )
        items.append((vol.data, table.coords_zyx, table.features[args.classify_label_column]))
        n_points += len(table)
    if len(voxels) > 1:
        raise ValueError(f"The tomograms have different voxel sizes {sorted(voxels)} Å; bin them to one first.")
    voxel = voxels.pop()
    box = box_in_voxels(args.classify_box_A, voxel)
    ds = run_cli_job(dataset_from_tomograms(items, box, voxel, seed=args.seed))
    where = (
        f"{args.classify_points[0]} on {args.classify_tomogram[0]}"
        if len(items) == 1
        else f"{len(items)} tomograms ({args.classify_tomogram[0]} … {args.classify_tomogram[-1]})"
    )
    n_labelled = len(ds.train.y) + len(ds.val.y) + len(ds.test.y)
    return ds, f"{n_labelled} labelled particles (of {n_points} points) of {where}"


def pool_datasets(datasets):
    """Concatenate datasets of the same classes split by split (e.g. several SNRs)."""
    from tomolens.classify.data import ClassDataset, Split

    first = datasets[0]
    for ds in datasets[1:]:
        if ds.class_names != first.class_names or ds.box != first.box:
            raise ValueError("Datasets to pool must share classes and box size.")
    if len(datasets) == 1:
        return first
    splits = [
        Split(np.concatenate([getattr(d, k).x for d in datasets]), np.concatenate([getattr(d, k).y for d in datasets]))
        for k in ("train", "val", "test")
    ]
    return ClassDataset(*splits, first.class_names, first.voxel_size_A, " + ".join(d.source for d in datasets))


def run_train(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, and save a classifier with its card."""
    from tomolens.classify.train import TrainConfig, evaluate, save_classifier, train_classifier
    from tomolens.models.cli import command_line
    from tomolens.models.device import prepare_device

    device = prepare_device(args.device, args.threads)
    if args.classify_calibrate:
        return calibrate(args)
    ds, described = _dataset(args)
    if args.voxel_size_A and not ds.voxel_size_A:
        ds.voxel_size_A = args.voxel_size_A
    arch_kwargs = {} if args.classify_dropout is None else {"dropout": args.classify_dropout}
    if args.classify_width is not None:
        if args.classify_arch != "resnet":
            raise ValueError("--classify-width applies to --classify-arch resnet only.")
        arch_kwargs["width"] = args.classify_width
    cfg = TrainConfig(
        architecture=args.classify_arch,
        epochs=args.epochs,
        patience=args.patience,
        min_epochs=args.min_epochs,
        stop_window=args.stop_window,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device=device,
        max_minutes=args.max_minutes or None,
        arch_kwargs=arch_kwargs,
    )
    print(
        f"{len(ds.train.y)} train / {len(ds.val.y)} val / {len(ds.test.y)} test subtomograms, "
        f"{len(ds.class_names)} classes, box {ds.box}",
        flush=True,
    )
    result = run_cli_job(
        train_classifier(ds.train.x, ds.train.y, ds.val.x, ds.val.y, ds.class_names, cfg),
        line=lambda p: (
            p.info
            and (
                f"epoch {p.info['epoch']:3d}  loss {p.info['loss']:.4f}  val_loss "
                f"{p.info['val_loss']:.4f}  val_acc {p.info['val_acc']:.3f}"
            )
        ),
    )
    test = evaluate(result.model, ds.test.x, ds.test.y, ds.class_names)
    metrics = {
        "test_accuracy": round(test["accuracy"], 4),
        "test_n": test["n"],
        "test_confusion": test["confusion"],
        "test_per_class_accuracy": test["per_class_accuracy"],
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "best_val_acc": max(h["val_acc"] for h in result.history),
    }
    weights, card = save_classifier(
        result,
        args.out,
        ds.class_names,
        ds.voxel_size_A,
        training_command=command_line(args),
        training_data=described,
        metrics=metrics,
    )
    print(f"test accuracy {test['accuracy']:.3f} on {test['n']} held-out subtomograms")
    if result.unknown:
        print(
            f"unknown detection: distance threshold {result.unknown['threshold']:.3g} "
            f"({result.unknown['quantile']:g} quantile of {result.unknown['n_calibration']} validation subtomograms)"
        )
    else:
        print(result.unknown_note)
    print(json.dumps({"confusion (rows true, columns predicted)": test["confusion"]}))
    print(f"wrote {weights} and {card}")
    return 0


def calibrate(args: argparse.Namespace) -> int:
    """``--classify-calibrate MODEL``: an existing classifier's card gains the unknown-detection statistics.

    The weights are copied byte for byte (the card keeps their sha256; ``--out`` may be the
    model itself, then only its card is rewritten).  The statistics come from the training split of the data
    given and the threshold from its validation split
    (:func:`tomolens.classify.train.unknown_statistics`): give the model's own training
    data options and ``--seed`` (its card's ``training_command``), so that the split is the
    one it was trained on and the validation particles are ones it never saw.
    """
    import shutil

    from tomolens.classify.train import unknown_statistics
    from tomolens.classify.unknown import CARD_KEY
    from tomolens.io.atomic import atomic_path
    from tomolens.models.card import load_model, resolve_model
    from tomolens.models.cli import command_line

    net, card = load_model(args.classify_calibrate, expected_task="classify")  # checks the weights' sha256
    ds, described = _dataset(args)
    if list(ds.class_names) != list(card.classes):
        raise ValueError(
            f"The data's classes {ds.class_names} differ from the model's {card.classes}; "
            "calibrate with the data the model was trained on."
        )
    if card.patch_size and ds.box != int(card.patch_size[-1]):
        raise ValueError(f"The data's boxes are {ds.box}³ voxels; the model takes {card.patch_size[-1]}³.")
    stats, note = unknown_statistics(net, ds.train.x, ds.train.y, ds.val.x, ds.val.y, len(card.classes), 64)
    if not stats:
        raise ValueError(note)
    card.extra = {**card.extra, CARD_KEY: stats, "unknown_calibration": f"{command_line(args)} on {described}"}
    card.extra.pop("unknown_note", None)
    source = resolve_model(args.classify_calibrate).with_suffix(".pt")
    weights = Path(args.out).with_suffix(".pt")
    if not weights.exists() or not weights.samefile(source):  # the same bytes: the card's sha256 still holds
        with atomic_path(weights) as tmp:
            shutil.copyfile(source, tmp)
    card.name = weights.stem
    card_path = weights.with_suffix(".json")
    with atomic_path(card_path) as tmp:
        tmp.write_text(card.to_json())
    print(
        f"unknown detection: distance threshold {stats['threshold']:.3g} "
        f"({stats['quantile']:g} quantile of {stats['n_calibration']} validation subtomograms); "
        f"wrote {weights} and {card_path}"
    )
    return 0
