"""``tomolens train --task detect --points PICKS --tomogram MRC …``: train the detector from clicks.

The options are registered in the detection group of ``tomolens train``
(:func:`register_points_args`); :func:`run_points_train` reads the tomogram and the picks and
runs :func:`tomolens.detect.points_train.train_from_points`, the job behind the Detect widget's
"from Points layer" training.
"""

from __future__ import annotations

import argparse

import numpy as np

from tomolens.io.checks import check_voxel_size, tomogram_voxel_size

#: Feature (column) of the picks that names each particle's kind.
KIND_COLUMN = "class"


def _radius(text: str) -> float:
    try:
        return float(check_voxel_size(float(text), "particle radius"))  # type: ignore[arg-type]
    except ValueError:
        raise argparse.ArgumentTypeError(f"the particle radius must be a positive number of Å; got {text!r}.") from None


def radius_option(text: str) -> float | dict[str, float]:
    """``--radius-A``: one radius in Å, or ``KIND=R,KIND=R`` per kind."""
    from tomolens.detect.points import parse_kind_radii

    if "=" not in text:
        return _radius(text)
    try:
        return parse_kind_radii(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register_points_args(group: argparse._ArgumentGroup) -> None:
    """Options of training from picks (detection only)."""
    group.add_argument(
        "--points",
        nargs="+",
        default=None,
        metavar="PICKS",
        help="train from clicked particle centres (.star/.csv/.txt/.tbl/.mod) in --tomogram; "
        f"a '{KIND_COLUMN}' column gives each particle's kind, else each file is one kind "
        "named by its file name",
    )
    group.add_argument("--tomogram", default=None, metavar="MRC", help="the tomogram the --points were picked in")
    group.add_argument(
        "--negatives", default=None, metavar="PICKS", help="points that are not particles (background around each)"
    )
    group.add_argument(
        "--radius-A",
        type=radius_option,
        default=None,
        help="particle radius in Å, or KIND=R,KIND=R per kind (default: estimated from the clicks, "
        "the scale of the strongest blob response)",
    )
    group.add_argument(
        "--region",
        default=None,
        metavar="z0:z1,y0:y1,x0:x1",
        help="box (voxels) in which every particle is picked; unclicked voxels elsewhere are not "
        "taken as background (default: the clicks' bounding box grown by one radius)",
    )
    group.add_argument("--minutes", type=float, default=5.0, help="time limit of --points training (default: 5)")
    group.add_argument(
        "--steps",
        type=int,
        default=300,
        help="step budget of --points training, whichever of it and --minutes ends first (default: 300)",
    )
    group.add_argument(
        "--start-from",
        default=None,
        metavar="MODEL",
        help="model to fine-tune from --points: a shipped name or .pt/.json, e.g. the last "
        "round's (default: detect_default)",
    )
    group.add_argument("--from-scratch", action="store_true", help="train a new network from --points")
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the clicks held out for the validation curve (default: 0.2)",
    )
    group.add_argument(
        "--points-polarity",
        default="auto",
        choices=("auto", "dark", "bright"),
        help="contrast of --tomogram (default: auto = measured)",
    )


def _read_kinds(paths: list[str], shape, voxel_size_A: float) -> tuple[np.ndarray, list[str] | None, dict]:
    """Centres (tomogram voxels) of all pick files, each one's kind (the ``class`` column, else the
    file's name when there are several files (one file per kind), else None: one kind) and the
    file(s) each kind came from."""
    from pathlib import Path

    from tomolens.io.picks import in_voxels_of, read_picks

    centres, kinds, sources = [], [], {}
    for path in paths:
        picks = read_picks(path, tomogram_shape_zyx=shape)
        centres.append(in_voxels_of(picks, voxel_size_A, Path(path).name).coords_zyx)
        if KIND_COLUMN in picks.features:
            found = picks.features[KIND_COLUMN].astype(str).tolist()
        else:
            found = [Path(path).stem if len(paths) > 1 else ""] * len(picks)
        kinds += found
        for kind in dict.fromkeys(found):
            sources.setdefault(kind, []).append(str(path))
    return np.vstack(centres), (kinds if any(kinds) else None), {k: ", ".join(v) for k, v in sources.items()}


def run_points_train(args: argparse.Namespace) -> int:
    """Read the tomogram and picks, train from them, save the model with its card."""
    from tomolens.detect.detector import DEFAULT_MODEL
    from tomolens.detect.points import parse_region
    from tomolens.detect.points_train import train_from_points
    from tomolens.io.mrc import read_mrc
    from tomolens.io.picks import in_voxels_of, read_picks
    from tomolens.jobs import run_job
    from tomolens.models.cli import command_line
    from tomolens.models.device import prepare_device

    if not args.tomogram:
        raise ValueError("--points needs --tomogram: the MRC the particles were picked in.")
    if args.from_scratch and args.start_from:
        raise ValueError("Give either --start-from MODEL or --from-scratch, not both.")
    if not 0 < args.val_fraction < 1:
        raise ValueError(f"--val-fraction must lie between 0 and 1; got {args.val_fraction}.")
    device = prepare_device(args.device, args.threads)
    vol = read_mrc(args.tomogram)
    vs = tomogram_voxel_size(args.voxel_size_A, vol.voxel_size_A, args.tomogram)
    shape = vol.data.shape
    centres, kinds, kind_sources = _read_kinds(args.points, shape, vs)
    negatives = (
        in_voxels_of(read_picks(args.negatives, tomogram_shape_zyx=shape), vs, args.negatives).coords_zyx
        if args.negatives
        else None
    )
    region = parse_region(args.region, shape) if args.region else None
    result = run_job(
        train_from_points(
            vol.data,
            vs,
            centres,
            args.out,
            radius_A=args.radius_A,
            kinds=kinds,
            region=region,
            negatives_zyx=negatives,
            start_from=None if args.from_scratch else (args.start_from or DEFAULT_MODEL),
            minutes=args.minutes,
            steps=args.steps,
            val_fraction=args.val_fraction,
            polarity=args.points_polarity,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
            source=", ".join(args.points),
            kind_sources=kind_sources,
            command=command_line(args),
        ),
        on_progress=_print_validation,
    )
    info = result.card.extra["points_training"]
    print(
        f"radius {info['radius_A']} Å ({info['radius_source']}); {info['steps_run']} steps in {info['seconds']:.0f} s; "
        f"held-out F1 {result.card.metrics['validation_f1_tuned']:.3f}; wrote {result.path} and its card"
    )
    return 0


def _print_validation(p) -> None:
    if p.info:
        print(p.message, flush=True)
