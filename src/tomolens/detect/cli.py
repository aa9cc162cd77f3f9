"""CLI: ``tomolens detect TOMO.mrc`` and ``tomolens evaluate PRED TRUE``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tomolens.cli_args import add_voxel_size_option, length_A, output_stem, read_tomogram
from tomolens.detect.detector import DEFAULT_MODEL, DETECT_PARAMS, detect_particles
from tomolens.evaluate import evaluate_tables
from tomolens.io.coords import read_coordinates, write_coordinates
from tomolens.io.mrc import write_mrc
from tomolens.io.provenance import write_provenance
from tomolens.cli_progress import run_cli_job
from tomolens.params import add_arguments, explicit_values


def _detect(args: argparse.Namespace) -> int:
    vol, voxel = read_tomogram(args.tomogram, args.voxel_size)
    # options not typed (or set by a preset) fall back to the model card's tuned values
    params = explicit_values(args, DETECT_PARAMS)
    params.pop("model", None)
    model = args.model
    result = run_cli_job(detect_particles(vol.data, voxel, model=model, **params))
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix in (".mrc", ".star", ".csv") else out
    labels_path = stem.with_name(stem.name + "_instances.mrc")
    decision = result.params["polarity_decision"]
    write_mrc(
        labels_path,
        result.instances,
        result.voxel_size_A,
        is_labels=True,
        labels=(
            f"tomolens detect {result.params['model']}",
            f"polarity {decision['tomogram']} ({decision['source']}), inverted {decision['invert']}",
        ),
    )
    coords_path = stem.with_name(stem.name + f"_centres.{args.format}")
    write_coordinates(coords_path, result.particles)
    prov = write_provenance(stem.with_name(stem.name + "_centres"), {"command": "detect", **result.params})
    print(f"{len(result.particles)} particles; wrote {labels_path}, {coords_path} and {prov}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    pred = read_coordinates(args.pred, pixel_size_A=args.pixel_size)
    true = read_coordinates(args.true, pixel_size_A=args.pixel_size)
    result = evaluate_tables(
        pred, true, tolerance_A=args.tolerance_A, radius_A=args.radius_A, voxel_size_A=args.pixel_size
    )
    s = result.summary()
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        print(
            f"tolerance {s['tolerance_A']:.1f} Å: TP {s['true_positives']}  FP {s['false_positives']}  "
            f"FN {s['false_negatives']}"
        )
        print(
            f"precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}  "
            f"mean distance {s['mean_distance_A']:.1f} Å"
        )
    return 0


def _show_card_defaults(parser: argparse.ArgumentParser) -> None:
    """Help texts of the post-processing options state the default actually used: the model
    card's tuned value (the shipped model's shown), not the parameter table's fallback."""
    from tomolens.detect.postprocess import card_postprocess_defaults
    from tomolens.models.card import read_card, resolve_model

    tuned = card_postprocess_defaults(read_card(resolve_model(DEFAULT_MODEL)))
    params = {q.name: q for q in DETECT_PARAMS}
    for action in parser._actions:
        if action.dest in tuned and action.dest in params:
            action.help = (
                f"{params[action.dest].help} (default: the model card's value, {tuned[action.dest]:.3g} "
                f"for {DEFAULT_MODEL}; {params[action.dest].default:g} for a card without one)"
            ).replace("%", "%%")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect particles: instance-label MRC + centres (STAR/CSV)")
    p.add_argument("tomogram", help="tomogram MRC, either contrast (see --polarity)")
    p.add_argument(
        "--out", required=True, type=output_stem, help="output stem: writes STEM_instances.mrc and STEM_centres.star"
    )
    p.add_argument("--format", choices=("star", "csv"), default="star", help="centres file format")
    add_voxel_size_option(p)
    add_arguments(p, DETECT_PARAMS)
    _show_card_defaults(p)
    p.set_defaults(func=_detect)

    p = sub.add_parser("evaluate", help="precision/recall/F1 of picked centres against ground truth")
    p.add_argument("pred", help="predicted centres (.star/.csv/.txt)")
    p.add_argument("true", help="true centres (.star/.csv/.txt)")
    p.add_argument(
        "--tolerance-A", type=length_A, default=None, help="match distance in Å (default: half the particle radius)"
    )
    p.add_argument(
        "--radius-A",
        type=length_A,
        default=None,
        help="particle radius in Å (used when no tolerance is given and TRUE has no radius_A)",
    )
    p.add_argument("--pixel-size", type=length_A, default=None, help="pixel size in Å if the files lack it")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_evaluate)
