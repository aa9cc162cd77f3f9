"""CLI: ``tomolens classify TOMO COORDS`` and ``tomolens subdivide TOMO COORDS``.

Training is ``tomolens train --task classify …`` (see :mod:`tomolens.classify.train_cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tomolens.cli_args import add_voxel_size_option, length_A, output_file, read_tomogram
from tomolens.classify.predict import CLASSIFY_PARAMS, classify_points
from tomolens.io.coords import ParticleTable, write_coordinates
from tomolens.io.picks import read_picks_on_tomogram
from tomolens.io.provenance import write_provenance
from tomolens.io.mrc import write_mrc
from tomolens.cli_progress import run_cli_job
from tomolens.params import add_arguments, values_from_args


def _inputs(args: argparse.Namespace):
    vol, voxel = read_tomogram(args.tomogram, args.voxel_size)
    # picks made at another binning are converted with their own pixel size (as the docks do), with a log line
    table = read_picks_on_tomogram(args.coords, voxel, vol.data.shape, args.coords_pixel_size)
    return vol, voxel, table


def _table_with(table: ParticleTable, features, voxel) -> ParticleTable:
    merged = table.features.drop(columns=[c for c in features.columns if c in table.features], errors="ignore")
    features = features.copy()
    if "class" in features:
        features["class"] = features["class"].astype(str)
    return ParticleTable(table.coords_zyx, merged.join(features), voxel or table.pixel_size_A)


def _classify(args: argparse.Namespace) -> int:
    vol, voxel, table = _inputs(args)
    params = values_from_args(args, CLASSIFY_PARAMS)
    result = run_cli_job(
        classify_points(
            vol.data,
            table.coords_zyx,
            params["model"],
            voxel,
            box_A=params["box_A"] or None,
            edge=params["edge"],
            batch_size=params["batch_size"],
            device=params["device"],
            polarity=params["polarity"],
            unknown_scale=params["unknown_scale"],
        )
    )
    write_coordinates(args.out, _table_with(table, result.features, voxel))
    write_provenance(args.out, {"command": "classify", **result.info})
    counts = result.features["class"].astype(str).value_counts()
    print(
        f"classified {len(result.indices)} of {len(table)} particles "
        f"({len(result.padded)} padded, {len(result.skipped)} skipped at the edge); wrote {args.out}"
    )
    for name, n in counts.items():
        print(f"  {name or '(skipped)'}: {n}")
    print(result.info["unknown"]["message"])
    return 0


def _subdivide(args: argparse.Namespace) -> int:
    from tomolens.cluster.subdivide import SUBDIVIDE_PARAMS, subdivide_points

    vol, voxel, table = _inputs(args)
    cp = values_from_args(args, CLASSIFY_PARAMS)
    sp = values_from_args(args, SUBDIVIDE_PARAMS)
    result = run_cli_job(
        subdivide_points(
            vol.data,
            table.coords_zyx,
            cp["model"],
            voxel,
            edge=cp["edge"],
            batch_size=cp["batch_size"],
            device=cp["device"],
            polarity=cp["polarity"],
            unknown_scale=cp["unknown_scale"],
            **sp,
        )
    )
    write_provenance(args.out, {"command": "subdivide", **result.info})
    features = result.features.copy()
    features["embed_x"], features["embed_y"] = result.embedding_2d[:, 0], result.embedding_2d[:, 1]
    write_coordinates(args.out, _table_with(table, features, voxel))
    print(f"{result.clustering.n_clusters} clusters ({sp['method']}); wrote {args.out}")
    if args.averages:
        folder = Path(args.averages)
        folder.mkdir(parents=True, exist_ok=True)
        for k, cube in result.averages.items():
            write_mrc(folder / f"cluster_{k:02d}.mrc", cube, result.info.get("model_voxel_size_A") or voxel)
        print(f"wrote {len(result.averages)} cluster averages to {folder}")
    sizes = np.bincount(result.clustering.labels[result.clustering.labels >= 0])
    for k, n in enumerate(sizes):
        print(f"  cluster {k}: {n} particles")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("tomogram", help="tomogram MRC")
    p.add_argument("coords", help="particle coordinates (.star/.csv/.txt) on the tomogram")
    p.add_argument(
        "--out", required=True, type=output_file, help="output coordinates (.star/.csv) with the new feature columns"
    )
    add_voxel_size_option(p)
    p.add_argument(
        "--coords-pixel-size-A",
        dest="coords_pixel_size",
        type=length_A,
        default=None,
        help="pixel size in Å of the coordinates, if the file does not say (STAR rlnImagePixelSize, CSV "
        "pixel_size_A); picks at another binning than the tomogram are converted to its voxels",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify particles: class, prob_<class>, confidence columns")
    _common(p)
    add_arguments(p, CLASSIFY_PARAMS)
    p.set_defaults(func=_classify)

    from tomolens.cluster.subdivide import SUBDIVIDE_PARAMS

    p = sub.add_parser(
        "subdivide",
        help="cluster particles by a classifier's learned features (default) or a general embedding: cluster column",
    )
    _common(p)
    p.add_argument("--averages", default="", metavar="DIR", help="write each cluster's average as DIR/cluster_NN.mrc")
    add_arguments(p, CLASSIFY_PARAMS)
    add_arguments(p, SUBDIVIDE_PARAMS)
    p.set_defaults(func=_subdivide)
