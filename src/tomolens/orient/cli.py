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
from tomolens.cli_progress import run_cli_job
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
    pset = run_cli_job(
        simulate_projections(
            np.asarray(vol.data, np.float32),
            float(voxel),
            v["n_projections"],
            seed=v["seed"],
            half_sphere=not v["full_sphere"],
            max_shift_A=v["max_shift_A"],
            defocus_A=v["defocus_A"] or None,
            noise_variance=v["noise_variance"] or None,
            snr=v["snr"] or None,
        )
    )
    from tomolens.orient.project import box_warnings

    for warning in box_warnings(np.asarray(vol.data, np.float32), float(voxel)):
        log.warning("%s", warning)
    star = Path(args.star) if args.star else Path(args.out).with_suffix(".star")
    write_projection_set(args.out, star, pset)
    snr = pset.info.get("snr")
    print(
        f"wrote {len(pset)} projections ({pset.images.shape[1]}² px, {voxel:g} Å"
        + (f", noise variance {pset.noise_variance:.4g} = SNR {snr:.3g}" if snr else "")
        + f") to {args.out} and true angles to {star}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from tomolens.models.card import save_model
    from tomolens.orient.pipeline import TRAIN_PARAMS, load_training_maps, training_job

    v = values_from_args(args, TRAIN_PARAMS)
    maps = load_training_maps(args.maps, v["symmetry"])
    val = load_training_maps(args.validation_maps or [])
    model, card = run_cli_job(training_job(maps, v, val, name=Path(args.out).stem))
    card.training_command = "tomolens " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    weights, card_path = save_model(model, card, args.out)
    print(f"wrote {weights} and {card_path}; held-out metrics: {json.dumps(card.metrics)}")
    return 0


def _recover(args: argparse.Namespace) -> int:
    from tomolens.io import read_mrc, write_mrc
    from tomolens.orient.files import read_angles_star, read_projection_stack, write_angles_star, write_fsc_csv
    from tomolens.orient.pipeline import RECOVER_PARAMS, recover_from_stack

    v = values_from_args(args, RECOVER_PARAMS)
    images, pixel = read_projection_stack(args.stack)
    pixel = args.pixel_size or pixel
    truth = read_angles_star(args.truth_star)[0] if args.truth_star else None
    reference = np.asarray(read_mrc(args.reference).data, np.float32) if args.reference else None
    result = run_cli_job(recover_from_stack(images, pixel, v, truth, reference))
    out_star = (
        Path(args.out_star) if args.out_star else Path(args.stack).with_name(Path(args.stack).stem + "_orient.star")
    )
    extra = {"tlOrientErrorDeg": result.errors_deg} if result.errors_deg is not None else None
    write_angles_star(
        out_star,
        result.quats,
        Path(args.stack).name,
        pixel,
        shifts_A=result.shifts_A,
        extra=extra,
        symmetry=result.symmetry,
    )
    print(result.summary())
    if result.fsc is not None and args.fsc_csv:
        write_fsc_csv(args.fsc_csv, result.fsc)
        print(f"wrote the FSC curve to {args.fsc_csv}")
    print(f"wrote orientations to {out_star}")
    if result.reconstruction is not None and args.reconstruction:
        write_mrc(args.reconstruction, result.reconstruction, pixel)
        print(f"wrote the reconstruction to {args.reconstruction}")
    return 0


def _symmetry(args: argparse.Namespace) -> int:
    from tomolens.io import read_mrc
    from tomolens.orient.symmetry import check_symmetry, detect_symmetry

    vol = read_mrc(args.map)
    if vol.kind != "volume":
        raise ValueError(f"{Path(args.map).name} is a {vol.kind}; symmetry is measured on a 3D map (.mrc).")
    data = np.asarray(vol.data, np.float32)
    if args.check:
        sym, warning = check_symmetry(data, args.check)
        print(f"{sym.name}: score {sym.score:.3f}; n-fold axis (x, y, z) {np.round(sym.frame[:, 2], 3).tolist()}")
        if warning:
            print(f"warning: {warning}")
        return 0
    report = run_cli_job(detect_symmetry(data))
    for name, score in report.scores.items():
        print(f"{name:4s} {score:.3f}")
    print(report.summary())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from tomolens.io import read_mrc, write_mrc
    from tomolens.orient.files import read_angles_star, read_projection_stack, write_fsc_csv
    from tomolens.orient.project import pad_to_cube
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_fourier
    from tomolens.orient.symmetry import Symmetry, check_symmetry, symmetric_errors_deg

    quats, shifts_A = read_angles_star(args.star)
    symmetry = Symmetry(args.symmetry)
    reference = pad_to_cube(np.asarray(read_mrc(args.reference).data, np.float32)) if args.reference else None
    truth_symmetry = symmetry
    if reference is not None and symmetry.name != "C1":
        truth_symmetry, warning = check_symmetry(reference, symmetry)
        if warning:
            log.warning("%s", warning)
    if args.truth_star:
        truth, _ = read_angles_star(args.truth_star)
        if len(truth) != len(quats):
            raise ValueError(
                f"{Path(args.truth_star).name} has {len(truth)} orientations, {Path(args.star).name} "
                f"{len(quats)}: compare tables of the same images."
            )
        errors, quats = symmetric_errors_deg(quats, truth, truth_symmetry)
        print(
            f"up to {symmetry.name}: mean orientation error {errors.mean():.2f}° (median {np.median(errors):.2f}°, "
            f"{np.mean(errors < 10) * 100:.0f} % within 10°)"
        )
    if args.stack:
        images, pixel = read_projection_stack(args.stack)
        pixel = args.pixel_size or pixel
        if not pixel:
            raise ValueError(f"{Path(args.stack).name} has no pixel size in its header; pass --pixel-size (Å).")
        if len(images) != len(quats):
            raise ValueError(f"{Path(args.stack).name} has {len(images)} images for {len(quats)} orientations.")
        if reference is not None and reference.shape[0] != images.shape[1]:
            raise ValueError(
                f"The reference map pads to a {reference.shape[0]}³ cube but the images are "
                f"{images.shape[1]}² pixels; give the map at the images' pixel size and box."
            )
        shifts = None if shifts_A is None else shifts_A / pixel
        # aligned to the truth: the truth's frame; else the STAR's own (RELION's setting)
        recon = run_cli_job(
            reconstruct_fourier(
                images, quats, shifts, symmetry=truth_symmetry if args.truth_star else Symmetry(symmetry.name)
            )
        )
        if args.reconstruction:
            write_mrc(args.reconstruction, recon, pixel)
            print(f"wrote the reconstruction to {args.reconstruction}")
        if reference is not None:
            fsc = fourier_shell_correlation(recon, reference, pixel)
            print(f"FSC resolution {fsc.resolution_05_A:.1f} Å (0.5), {fsc.resolution_0143_A:.1f} Å (0.143)")
            if args.fsc_csv:
                write_fsc_csv(args.fsc_csv, fsc)
                print(f"wrote the FSC curve to {args.fsc_csv}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from tomolens.orient.pipeline import RECOVER_PARAMS, SIMULATE_PARAMS, TRAIN_PARAMS

    orient = sub.add_parser(
        "orient", help="single-particle orientation recovery: simulate, train, recover, evaluate, symmetry"
    )
    osub = orient.add_subparsers(dest="orient_command", metavar="STEP")
    orient.set_defaults(func=lambda a: (orient.print_help(), 2)[1])

    p = osub.add_parser("simulate", help="projections of a 3D map at random orientations (.mrcs + STAR)")
    p.add_argument("map", help="3D density map (.mrc)")
    p.add_argument("out", type=output_file, help="output stack (.mrcs)")
    p.add_argument(
        "--star", default=None, type=output_file, help="output STAR of the true angles (default: beside the stack)"
    )
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
    p.add_argument("--fsc-csv", default=None, help="output FSC curve (.csv: frequency, resolution, FSC)")
    add_arguments(p, RECOVER_PARAMS)
    p.set_defaults(func=_recover)

    p = osub.add_parser("symmetry", help="measure a map's point-group symmetry and suggest one")
    p.add_argument("map", help="3D density map (.mrc), the symmetry centre at the box centre")
    p.add_argument("--check", default=None, help="only score this group (e.g. D7), with its axes")
    p.set_defaults(func=_symmetry)

    p = osub.add_parser(
        "evaluate", help="errors of a STAR against a truth and the FSC of its reconstruction, up to a symmetry"
    )
    p.add_argument("star", help="STAR of orientations to evaluate")
    p.add_argument("--truth-star", default=None, help="STAR of the true orientations of the same images")
    p.add_argument("--stack", default=None, help="projection stack (.mrcs): reconstruct from it")
    p.add_argument("--reference", default=None, help="true map (.mrc) for the FSC (and the symmetry axes)")
    p.add_argument("--reconstruction", default=None, help="output reconstruction (.mrc)")
    p.add_argument("--fsc-csv", default=None, help="output FSC curve (.csv)")
    p.add_argument("--pixel-size", type=length_A, default=None, help="pixel size in Å (default: stack header)")
    p.add_argument(
        "--symmetry",
        default="C1",
        help="point group in RELION's settings (C1, Cn, Dn, T, O, I = I2, I1…I4; default C1)",
    )
    p.set_defaults(func=_evaluate)
