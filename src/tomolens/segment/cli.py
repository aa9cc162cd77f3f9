"""CLI: ``tomolens segment TOMO.mrc --model … --out STEM``.

Writes ``STEM_labels.mrc`` (label values: 0 background, class k as k + 1), optionally
``STEM_probabilities_<class>.mrc`` (float32, one per class) and ``STEM_instances.mrc`` +
``STEM_instances.csv`` (connected components per class).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tomolens.cli_args import add_voxel_size_option, output_stem, read_tomogram
from tomolens.io.mrc import write_mrc
from tomolens.io.provenance import write_provenance
from tomolens.cli_progress import run_cli_job
from tomolens.params import add_arguments, values_from_args
from tomolens.segment.predict import PREDICT_PARAMS, segment_tomogram


def _segment(args: argparse.Namespace) -> int:
    from tomolens.io.atomic import atomic_path
    from tomolens.segment.cleanup import instances_from_classes
    from tomolens.segment.labels import parse_class_names

    vol, voxel = read_tomogram(args.tomogram, args.voxel_size)
    params = values_from_args(args, PREDICT_PARAMS)
    classes = parse_class_names(args.classes) if args.classes else None
    result = run_cli_job(segment_tomogram(vol.data, voxel, class_names=classes, **params))
    out = Path(args.out)
    stem = out.with_suffix("") if out.suffix == ".mrc" else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    legend = tuple(f"{k + 1 if k else 0}={n}" for k, n in enumerate(result.class_names))[:9]
    labels_path = write_mrc(
        stem.with_name(stem.name + "_labels.mrc"), result.labels, result.voxel_size_A, is_labels=True, labels=legend
    )
    written = [labels_path]
    if args.probabilities:
        for k, name in enumerate(result.class_names):
            written.append(
                write_mrc(
                    stem.with_name(f"{stem.name}_probabilities_{name}.mrc"),
                    result.probabilities[k],
                    result.voxel_size_A,
                )
            )
    counts = {n: int((result.classes == k).sum()) for k, n in enumerate(result.class_names)}
    if args.instances:
        instances, table = instances_from_classes(
            result.classes, result.class_names, params["min_size_voxels"], result.voxel_size_A
        )
        written.append(
            write_mrc(stem.with_name(stem.name + "_instances.mrc"), instances, result.voxel_size_A, is_labels=True)
        )
        csv = stem.with_name(stem.name + "_instances.csv")
        with atomic_path(csv) as tmp:
            table.to_csv(tmp, index=False)
        written.append(csv)
        print(
            f"{len(table)} instances: "
            + ", ".join(f"{n} {int((table['class_name'] == n).sum())}" for n in result.class_names[1:])
        )
    written.append(
        write_provenance(stem.with_name(stem.name + "_labels"), {"command": "segment", **params, **result.info})
    )
    print("voxels per class: " + ", ".join(f"{n} {c}" for n, c in counts.items()))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="semantic segmentation: labels MRC (+ probabilities, instances)",
        description="Segment a tomogram with a model (shipped name or file). Writes STEM_labels.mrc (label "
        "values: 0 background, class k as k + 1), and on request STEM_probabilities_<class>.mrc (float32, one per "
        "class) and STEM_instances.mrc + STEM_instances.csv (connected components per class).",
    )
    p.add_argument("tomogram", help="tomogram MRC, either contrast (see --polarity)")
    p.add_argument(
        "--out",
        required=True,
        type=output_stem,
        help="output stem: writes STEM_labels.mrc (and the files asked for below)",
    )
    add_voxel_size_option(p)
    p.add_argument(
        "--classes", default="", help="expected class names, comma-separated (refuses a model with other classes)"
    )
    p.add_argument("--probabilities", action="store_true", help="also write one probability MRC per class")
    p.add_argument(
        "--instances", action="store_true", help="also write connected components per class (instances MRC + CSV table)"
    )
    add_arguments(p, PREDICT_PARAMS)
    p.set_defaults(func=_segment)
