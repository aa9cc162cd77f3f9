"""Benchmark: recovery from exact distances up to a point group, plain against symmetric Adam loss.

Only the recovery from distances is tested: the distances are the exact ones up to the map's group (what a
network trained with ``--symmetry`` estimates at best), the recovered orientations get the common-line frame
(:func:`tomolens.orient.frame.fix_frame`) from noise-free projections, and the errors are measured up to the
group.  Three variants: the plain loss from the spectral start (before issue 25's change), the symmetric loss
from the spectral start (now the default with a symmetry) and from random quaternions (the paper's start).

Usage::

    python benchmarks/bench_orient_symmetric_recovery.py 1bxn C4 [--n 600]
    python benchmarks/bench_orient_symmetric_recovery.py 3d2f D7    # the map symmetrised to D7 first

Writes ``benchmarks/results/orient_symmetric_recovery_<map>_<group>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "maps_10A"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("map", help="map name in ../shared/data/maps_10A")
    parser.add_argument("group", help="point group; the map is symmetrised to it unless it scores >= 0.9 already")
    parser.add_argument("--n", type=int, default=600, help="projections")
    parser.add_argument("--steps", type=int, default=1000, help="Adam steps")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from tomolens.io import atomic_path, read_mrc
    from tomolens.jobs import run_job
    from tomolens.orient.frame import fix_frame
    from tomolens.orient.project import pad_to_cube, simulate_projections
    from tomolens.orient.recover import ExactDistances, recover_orientations
    from tomolens.orient.symmetry import (
        SYMMETRY_THRESHOLD,
        Symmetry,
        check_symmetry,
        symmetric_errors_deg,
        symmetrise_volume,
    )

    vol = read_mrc(DATA / f"{args.map}.mrc")
    cube, voxel = pad_to_cube(np.asarray(vol.data, np.float32)), float(vol.voxel_size_A[-1])
    sym, _ = check_symmetry(cube, args.group)
    symmetrised = sym.score < SYMMETRY_THRESHOLD
    if symmetrised:
        cube = symmetrise_volume(cube, Symmetry(args.group))
        sym, _ = check_symmetry(cube, args.group)
    pset = run_job(simulate_projections(cube, voxel, args.n, seed=3))
    rows = []
    for label, loss, start in (
        ("plain loss, spectral start", None, "spectral"),
        ("symmetric loss, spectral start", args.group, "spectral"),
        ("symmetric loss, random start", args.group, "random"),
    ):
        t = time.process_time()
        res = run_job(
            recover_orientations(
                ExactDistances(pset.quats, sym), initialisation=start, steps=args.steps, seed=0, symmetry=loss
            )
        )
        fixed, _ = run_job(fix_frame(pset.images, res.quats, voxel))
        err, _ = symmetric_errors_deg(fixed, pset.quats, sym)
        rows.append(
            {
                "case": label,
                "final_loss": res.loss_history[-1],
                "mean_error_deg": float(err.mean()),
                "median_error_deg": float(np.median(err)),
                "within_10deg": float(np.mean(err < 10)),
                "cpu_s": time.process_time() - t,
            }
        )
        print(
            f"{label:32s} mean {err.mean():6.2f}°  median {np.median(err):6.2f}°  loss {res.loss_history[-1]:.4f}",
            flush=True,
        )
    out = ROOT / "benchmarks" / "results" / f"orient_symmetric_recovery_{args.map}_{args.group}.json"
    result = {
        "benchmark": "orient_symmetric_recovery",
        "map": args.map,
        "group": args.group,
        "symmetrised": symmetrised,
        "symmetry_score": sym.score,
        "n_projections": args.n,
        "adam_steps": args.steps,
        "threads": 1,
        "rows": rows,
        "command": "python benchmarks/bench_orient_symmetric_recovery.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
