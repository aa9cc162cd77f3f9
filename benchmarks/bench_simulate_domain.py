"""Domain-randomised simulator: time and memory per 64×256×256 tomogram, and the docs figure.

Simulates ``--n`` training tomograms (seeds 0..n-1) and ``--n-shifted`` shifted-domain
tomograms (seeds 10000..) of ``--shape`` one after the other in this process, on the
threads the environment allows (run with OMP_NUM_THREADS=1 and ``taskset -c 0`` for
one core), and records per tomogram the wall and CPU seconds with the settings that
drive the cost (voxel size, supersampling, number of tilts, reconstruction, particles).
With ``--figure PATH`` it also writes a PNG of one randomised dark tomogram
(``--figure-seed``): central x-y slice, its semantic labels, the clean density, and a
central x-z slice.  Writes ``benchmarks/results/simulate_domain.json``.  Usage::

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_simulate_domain.py [--n 8] [--n-shifted 3] \\
        [--figure docs/img/simulate_domain.png --figure-seed 177]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from tomolens import __version__
from tomolens.io import atomic_path
from tomolens.jobs import run_job
from tomolens.simulate.domain import TRAINING_RANGES, default_maps_dir, sample_domain_config, shifted_domain_config
from tomolens.simulate.domain_scene import simulate_domain_tomogram

MACHINE = "2-core CPU, no GPU (shared with other jobs)"
#: label colours (background, membrane, microtubule, actin, macromolecule, gold, carbon)
COLOURS = np.array(
    [[0, 0, 0], [255, 200, 0], [0, 200, 255], [255, 60, 60], [80, 220, 80], [255, 255, 255], [160, 80, 255]], np.uint8
)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _grey(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [1, 99])
    g = (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def figure(sim, path: Path) -> None:
    """Central x-y slice | labels | clean density, and below the central x-z slice and its labels."""
    from skimage.io import imsave

    nz, ny, nx = sim.tomogram.shape
    top = np.concatenate(
        [_grey(sim.tomogram[nz // 2]), COLOURS[sim.semantic[nz // 2]], _grey(sim.density[nz // 2])], axis=1
    )
    gap = np.full((4, top.shape[1], 3), 128, np.uint8)
    bottom = np.concatenate(
        [_grey(sim.tomogram[:, ny // 2]), COLOURS[sim.semantic[:, ny // 2]], _grey(sim.density[:, ny // 2])], axis=1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, np.concatenate([top, gap, bottom], axis=0), check_contrast=False)


def time_one(cfg) -> tuple[dict, object]:
    t0, c0 = time.perf_counter(), cpu_seconds()
    sim = run_job(simulate_domain_tomogram(cfg))
    row = {
        "seed": cfg.seed,
        "wall_s": round(time.perf_counter() - t0, 2),
        "cpu_s": round(cpu_seconds() - c0, 2),
        "voxel_size_A": cfg.voxel_size_A,
        "binning": cfg.binning,
        "supersampling": cfg.supersampling,
        "tilts": len(sim.tilt_angles_deg),
        "reconstruction": cfg.reconstruction,
        "polarity": cfg.polarity,
        "particles": len(sim.particles),
        "structures": len(sim.structures),
        "class_voxel_fraction": [
            round(float(f), 4) for f in np.bincount(sim.semantic.ravel(), minlength=7) / sim.semantic.size
        ],
    }
    return row, sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--n-shifted", type=int, default=3)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--figure-seed", type=int, default=177)
    parser.add_argument("--machine", default=MACHINE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "simulate_domain.json")
    args = parser.parse_args()
    shape = tuple(args.shape)
    rows = {"randomised": [], "shifted": []}
    for seed in range(args.n):
        row, _ = time_one(sample_domain_config(TRAINING_RANGES, seed, shape))
        rows["randomised"].append(row)
        print(row)
    for seed in range(10000, 10000 + args.n_shifted):
        row, _ = time_one(shifted_domain_config(seed, shape))
        rows["shifted"].append(row)
        print(row)
    if args.figure:
        cfg = sample_domain_config(TRAINING_RANGES, args.figure_seed, shape)
        row, sim = time_one(cfg)
        figure(sim, args.figure)
        rows["figure"] = [row | {"config": cfg.to_dict()}]
    summary = {
        k: {
            "wall_s_median": statistics.median(r["wall_s"] for r in v),
            "wall_s_max": max(r["wall_s"] for r in v),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in v),
        }
        for k, v in rows.items()
        if v
    }
    result = {
        "benchmark": "simulate_domain",
        "tomolens": __version__,
        "machine": args.machine,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu_count_visible": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "shape_zyx": list(shape),
        "maps_dir": str(default_maps_dir()),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "summary": summary,
        "tomograms": rows,
        "command": "python benchmarks/bench_simulate_domain.py "
        + " ".join(["--shape", *map(str, shape), "--n", str(args.n), "--n-shifted", str(args.n_shifted)]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
