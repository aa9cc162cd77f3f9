"""CLI: ``tomolens batch PRESET TOMOGRAMS… --out DIR`` and ``tomolens batch-example``."""

from __future__ import annotations

import argparse
import json
import logging

from tomolens.batch.registry import TASKS
from tomolens.cli_args import length_A, output_folder
from tomolens.cli_progress import progress_is_quiet

log = logging.getLogger(__name__)

EXAMPLE = {
    "task": "batch",
    "voxel_size_A": None,
    "pipeline": [
        {"task": "detect", "params": {"model": "detect_default", "mask_threshold": 0.5}},
        {"task": "classify", "params": {"model": "classify_phantoms_resnet"}},
        {"task": "export", "params": {"format": "star", "star_form": "pixels"}},
    ],
}


def _batch(args: argparse.Namespace) -> int:
    from tomolens.batch.pipeline import load_pipeline, pipeline_from_dict
    from tomolens.batch.run import run_batch

    pipeline = load_pipeline(args.preset)
    if args.voxel_size_A:
        pipeline = pipeline_from_dict({**pipeline.to_dict(), "voxel_size_A": args.voxel_size_A})
    summary = run_batch(
        pipeline,
        args.tomograms,
        args.out,
        scheduler=args.scheduler or None,
        retries=args.retries,
        force=args.force,
        progress=not args.no_progress and not progress_is_quiet(),
    )
    print(summary.table())
    print(
        f"summary: {args.out}/batch_summary.json; per tomogram: {args.out}/<name>/<name>.log and <name>.tomolens.json"
    )
    return 1 if summary.failed else 0


def _example(args: argparse.Namespace) -> int:
    print(json.dumps(EXAMPLE, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tasks = "; ".join(f"{name}: {spec.summary}" for name, spec in TASKS.items())
    p = sub.add_parser(
        "batch",
        help="run a pipeline preset on many tomograms (resumable; dask.distributed optional)",
        description="Run the pipeline of PRESET on every tomogram. Finished tomograms (a matching "
        "OUT/<name>/<name>.tomolens.json) are skipped; a failure is retried once, unless the input is at fault "
        f"(a ValueError: constant volume, NaNs, a bad file…). Tasks: {tasks}.",
    )
    p.add_argument(
        "preset",
        help="batch preset (JSON/YAML with a 'pipeline'), or a widget's single-task preset; "
        "see 'tomolens batch-example'",
    )
    p.add_argument("tomograms", nargs="+", help="tomogram files, folders (their .mrc/.rec/.map) or glob patterns")
    p.add_argument("--out", required=True, type=output_folder, help="output folder: one sub-folder per tomogram")
    p.add_argument(
        "--scheduler",
        default="",
        help="'' = in this process, one by one (default); local:N = a "
        "dask LocalCluster of N single-thread workers; tcp://HOST:PORT = an existing dask scheduler",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="extra attempts for a failed tomogram (default: 1); bad input (ValueError) is not retried",
    )
    p.add_argument("--force", action="store_true", help="run finished tomograms again")
    p.add_argument(
        "--voxel-size-A",
        type=length_A,
        default=None,
        help="voxel size in Å of every tomogram (overrides their headers and the preset's); required for tomograms "
        "whose header has none",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_batch)

    p = sub.add_parser("batch-example", help="print an example batch preset (JSON)")
    p.set_defaults(func=_example)
