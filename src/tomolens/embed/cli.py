"""CLI: ``tomolens pick-by-example --tomogram T.mrc --examples EX.star --out PICKS.star``.

``--method template`` (default) matches the examples (or ``--reference MAP.mrc``) over a rotation
grid; ``--method embedding`` needs ``--embed-model``.

Training is ``tomolens train --task embed …`` (see :mod:`tomolens.embed.train`).
"""

from __future__ import annotations

import argparse

from tomolens.cli_args import add_voxel_size_option, output_file, read_tomogram
from tomolens.embed.pick import PICK_PARAMS, find_similar, pick_peaks
from tomolens.jobs import log_progress, run_job
from tomolens.params import add_arguments, values_from_args


def _pick(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from tomolens.io.coords import ParticleTable, write_coordinates
    from tomolens.io.mrc import write_mrc
    from tomolens.io.picks import read_picks_on_tomogram
    from tomolens.io.provenance import write_provenance

    if not args.examples and not args.reference:
        raise ValueError("Give --examples (clicked particles) or --reference (a map) to pick by example.")
    vol, voxel = read_tomogram(args.tomogram, args.voxel_size)
    if args.examples:
        examples = read_picks_on_tomogram(args.examples, voxel, vol.data.shape)  # other binning: converted
    else:
        examples = ParticleTable(np.empty((0, 3)), pd.DataFrame(), voxel)
    targets = None
    if args.target_column:
        if args.target_column not in examples.features:
            raise ValueError(
                f"{args.examples} has no column {args.target_column!r}; its columns are "
                f"{', '.join(map(str, examples.features.columns)) or 'none'}."
            )
        targets = examples.features[args.target_column].astype(str).to_numpy()
    p = values_from_args(args, PICK_PARAMS)
    settings = {k: v for k, v in p.items() if k != "method"}
    sim = run_job(
        find_similar(vol.data, examples.coords_zyx, targets, voxel, p["method"], reference=args.reference, **settings),
        on_progress=log_progress,
    )
    for note in sim.info.get("notes", []):
        print(note)
    picks = pick_peaks(sim, p["threshold"], p["min_distance_A"])
    table = ParticleTable(picks[["z", "y", "x"]].to_numpy(), picks[["score", "class"]], voxel)
    write_coordinates(args.out, table)
    write_provenance(args.out, {"command": "pick-by-example", "examples": str(args.examples), **p, **sim.info})
    if args.similarity_out:
        step_A = sim.step_voxels * voxel if voxel else None
        write_mrc(args.similarity_out, np.ascontiguousarray(sim.similarity[0]), step_A)
    for name, agree in zip(sim.targets, sim.example_similarity):
        n = int((picks["class"] == name).sum())
        print(
            f"{name}: {len(agree)} example(s)"
            + (f" (similarity {agree.min():.2f}-{agree.max():.2f})" if len(agree) else "")
            + f", {n} picks at similarity >= {p['threshold']:g}"
        )
    print(
        f"wrote {len(picks)} picks to {args.out}"
        + (f" and the similarity map to {args.similarity_out}" if args.similarity_out else "")
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pick-by-example",
        help="pick particles that look like a few examples or a reference map "
        "(template matching or embedding similarity map, peaks above a threshold)",
    )
    p.add_argument("--tomogram", required=True, help="tomogram MRC")
    p.add_argument(
        "--examples", default=None, help="example coordinates (.star/.csv/.txt) on the tomogram, >= 1 (or --reference)"
    )
    p.add_argument(
        "--reference",
        default=None,
        metavar="MAP.mrc",
        help="template method: a reference density map used as the template instead of the examples "
        "(resampled to the tomogram's voxel size; needs a voxel size in its header)",
    )
    p.add_argument("--out", required=True, type=output_file, help="output picks (.star/.csv) with score and class")
    p.add_argument(
        "--target-column",
        default="",
        help="examples' column naming the target of each example "
        "(several targets at once, each its own class); default: one target",
    )
    p.add_argument(
        "--similarity-out",
        default=None,
        type=output_file,
        metavar="MRC",
        help="also write the (first target's) similarity map, voxel = the map's grid step",
    )
    add_voxel_size_option(p)
    add_arguments(p, PICK_PARAMS)
    p.set_defaults(func=_pick)
