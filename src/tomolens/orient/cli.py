"""``tomolens orient simulate | train | recover`` — the same functions as the dock widget."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np

from tomolens.cli_args import length_A, output_file
from tomolens.jobs import log_progress, run_job
from tomolens.params import add_arguments, values_from_args

log = logging.getLogger(__name__)


def _simulate(args: argparse.Namespace) -> int:
    from tomolens.io import read_mrc
    from tomolens.orient.files import write_projection_set
    from tomolens.orient.pipeline import SIMULATE_PARAMS
    from tomolens.orient.project import simulate_projections

    v = values_from_args(args, SIMULATE_PARAMS)
    vol = read_mrc(args.map)
    if vol.kind != "volume":
        raise ValueError(f"{Path(args.map).name} is a {vol.kind}; projections are simulated from a 3D map (.mrc).")
    voxel = args.voxel_size or (vol.voxel_size_A[-1] if vol.voxel_size_A else None)
    if not voxel:
        raise ValueError(f"{Path(args.map).name} has no voxel size in its header; pass --voxel-size (Å).")
    pset = run_job(simulate_projections(
        np.asarray(vol.data, np.float32), float(voxel), v["n_projections"], seed=v["seed"],
        half_sphere=not v["full_sphere"], max_shift_A=v["max_shift_A"], defocus_A=v["defocus_A"] or None,
        noise_variance=v["noise_variance"] or None, snr=v["snr"] or None,
    ), on_progress=log_progress)
    star = Path(args.star) if args.star else Path(args.out).with_suffix(".star")
    write_projection_set(args.out, star, pset)
    print(f"wrote {len(pset)} projections ({pset.images.shape[1]}² px, {voxel:g} Å) to {args.out} and true angles to {star}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from tomolens.models.card import save_model
    from tomolens.orient.network import train_distance_model
    from tomolens.orient.pipeline import TRAIN_PARAMS, load_training_maps

    v = values_from_args(args, TRAIN_PARAMS)
    maps = load_training_maps(args.maps)
    val = load_training_maps(args.validation_maps or [])
    model, card = run_job(train_distance_model(
        maps, val, pixel_size_A=v["pixel_size_A"], input_size=v["input_size"],
        projections_per_map=v["projections_per_map"], steps=v["train_steps"], batch_size=v["batch_size"],
        learning_rate=v["learning_rate"], max_minutes=v["max_minutes"] or None, seed=v["seed"],
        name=Path(args.out).stem,
    ), on_progress=log_progress)
    card.training_command = "tomolens " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    weights, card_path = save_model(model, card, args.out)
    print(f"wrote {weights} and {card_path}; held-out metrics: {json.dumps(card.metrics)}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from tomolens.io import read_mrc, write_mrc
    from tomolens.orient.files import read_angles_star, read_projection_stack, write_angles_star
    from tomolens.orient.pipeline import RECOVER_PARAMS, recover_from_stack

    v = values_from_args(args, RECOVER_PARAMS)
    images, pixel = read_projection_stack(args.stack)
    pixel = args.pixel_size or pixel
    truth = read_angles_star(args.truth_star)[0] if args.truth_star else None
    reference = np.asarray(read_mrc(args.reference).data, np.float32) if args.reference else None
    result = run_job(recover_from_stack(images, pixel, v, truth, reference), on_progress=log_progress)
    out_star = Path(args.out_star) if args.out_star else Path(args.stack).with_name(Path(args.stack).stem + "_orient.star")
    extra = {"tlOrientErrorDeg": result.errors_deg} if result.errors_deg is not None else None
    write_angles_star(out_star, result.quats, Path(args.stack).name, pixel, shifts_A=result.shifts_A, extra=extra)
    print(result.summary())
    print(f"wrote orientations to {out_star}")
    if result.reconstruction is not None and args.reconstruction:
        write_mrc(args.reconstruction, result.reconstruction, pixel)
        print(f"wrote the reconstruction to {args.reconstruction}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from tomolens.orient.pipeline import RECOVER_PARAMS, SIMULATE_PARAMS, TRAIN_PARAMS

    orient = sub.add_parser("orient", help="single-particle orientation recovery: simulate, train, recover")
    osub = orient.add_subparsers(dest="orient_command", metavar="STEP")
    orient.set_defaults(func=lambda a: (orient.print_help(), 2)[1])

    p = osub.add_parser("simulate", help="projections of a 3D map at random orientations (.mrcs + STAR)")
    p.add_argument("map", help="3D density map (.mrc)")
    p.add_argument("out", type=output_file, help="output stack (.mrcs)")
    p.add_argument("--star", default=None, type=output_file,
                   help="output STAR of the true angles (default: beside the stack)")
    p.add_argument("--voxel-size", type=length_A, default=None, help="map voxel size in Å (default: header)")
    add_arguments(p, SIMULATE_PARAMS)
    p.set_defaults(func=_simulate)

    p = osub.add_parser("train", help="train the Siamese distance network on projections of maps")
    p.add_argument("out", type=output_file, help="output weights (.pt; the card is written beside it as .json)")
    p.add_argument("--maps", nargs="+", required=True, help="training maps (.mrc)")
    p.add_argument("--validation-maps", nargs="*", default=[], help="held-out maps for the card's metrics")
    add_arguments(p, TRAIN_PARAMS)
    p.set_defaults(func=_train)

    p = osub.add_parser("recover", help="recover the orientations of an .mrcs stack (+ reconstruction, FSC)")
    p.add_argument("stack", help="projection stack (.mrcs)")
    p.add_argument("--out-star", default=None, type=output_file, help="output STAR with the recovered angles")
    p.add_argument("--reconstruction", default=None, type=output_file, help="output reconstruction (.mrc)")
    p.add_argument("--truth-star", default=None, help="STAR of the true angles: align and measure errors")
    p.add_argument("--reference", default=None, help="true map (.mrc) for the FSC of the reconstruction")
    p.add_argument("--pixel-size", type=length_A, default=None, help="pixel size in Å (default: stack header)")
    add_arguments(p, RECOVER_PARAMS)
    p.set_defaults(func=_recover)
