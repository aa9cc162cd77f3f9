"""Batch throughput: tomograms per minute in-process and on a dask LocalCluster of 1 and 2 workers.

Simulates N tomograms (seeded), then runs the same pipeline (detect → export, plus
classify when a shipped classifier exists) three ways into fresh output folders:
in this process one by one, ``--scheduler local:1`` and ``--scheduler local:2``.  The
wall time includes starting the cluster (what a user waits for).  The detection model
is the shipped ``detect_default`` when it exists; otherwise a small model is trained
here first (stated in the JSON).  Writes ``benchmarks/results/batch.json``.

Usage::

    python benchmarks/bench_batch.py [--n 8] [--shape 64 96 96]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from tomolens import __version__
from tomolens.batch import Pipeline, make_step, run_batch
from tomolens.io import atomic_path, write_mrc
from tomolens.jobs import run_job
from tomolens.models.card import shipped_models
from tomolens.simulate.tomogram import SimulationConfig, simulate_tomogram

MACHINE = "2-core CPU, no GPU"
VOXEL_A = 10.0


def detection_model(folder: Path, shape) -> tuple[str, str]:
    """The shipped detection model, or one trained here for a few epochs (path, description)."""
    shipped = shipped_models("detect")
    if "detect_default" in shipped:
        return "detect_default", "shipped detect_default"
    from tomolens.detect.train import train_and_save

    sim = run_job(simulate_tomogram(SimulationConfig(shape_zyx=shape, voxel_size_A=VOXEL_A, seed=1000, mode="fourier")))
    path = run_job(
        train_and_save(
            sim.tomogram, sim.instances, VOXEL_A, folder / "bench_detect.pt", epochs=3, device="cpu", patch=32
        )
    )
    return str(path), "no shipped model yet: trained here (train_and_save, 3 epochs, simulated seed 1000)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8, help="tomograms")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 96, 96), metavar=("Z", "Y", "X"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "batch.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tomolens_bench_batch_"))
    try:
        tomo_dir = work / "tomograms"
        tomo_dir.mkdir()
        for seed in range(args.n):
            sim = run_job(
                simulate_tomogram(
                    SimulationConfig(shape_zyx=tuple(args.shape), voxel_size_A=VOXEL_A, seed=seed, mode="fourier")
                )
            )
            write_mrc(tomo_dir / f"tomo_{seed:03d}.mrc", sim.tomogram, VOXEL_A)
        model, model_note = detection_model(work, tuple(args.shape))
        steps = [make_step("detect", {"model": model, "device": "cpu"})]
        classifiers = shipped_models("classify")
        if classifiers:
            steps.append(make_step("classify", {"model": next(iter(classifiers)), "device": "cpu"}))
        steps.append(make_step("export", {"format": "star"}))
        pipeline = Pipeline(tuple(steps))

        rows = []
        for label, scheduler in (
            ("in-process, sequential", None),
            ("dask local:1", "local:1"),
            ("dask local:2", "local:2"),
        ):
            out = work / f"out_{len(rows)}"
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            summary = run_batch(pipeline, [tomo_dir], out, scheduler=scheduler, progress=False)
            wall = time.perf_counter() - start
            done = summary.count("done")
            rows.append(
                {
                    "run": label,
                    "scheduler": scheduler or "",
                    "tomograms": done,
                    "failed": summary.count("failed"),
                    "wall_s": round(wall, 2),
                    "tomograms_per_minute": round(60.0 * done / wall, 2),
                    "mean_s_per_tomogram_inside_worker": round(
                        sum(r.seconds for r in summary.results) / max(1, done), 2
                    ),
                    "load_average_before": round(load_before, 2),
                }
            )
            print(f"{label:24s} {done} tomograms in {wall:6.1f} s = {rows[-1]['tomograms_per_minute']:.2f} / min")

        result = {
            "benchmark": "batch throughput (tomograms per minute)",
            "machine": MACHINE,
            "cpu_count": os.cpu_count(),
            "host": platform.node(),
            "tomolens_version": __version__,
            "command": f"python benchmarks/bench_batch.py --n {args.n} --shape {' '.join(map(str, args.shape))}",
            "tomogram_shape_zyx": list(args.shape),
            "voxel_size_A": VOXEL_A,
            "pipeline": [s.task for s in pipeline.steps],
            "detection_model": model_note,
            "note": "wall time includes starting the dask cluster; the machine is shared with other jobs, "
            "so figures vary with its load (load_average_before)",
            "runs": rows,
        }
        out_path = Path(args.out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        print("\n| run | tomograms | wall (s) | tomograms / min |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['tomograms']} | {r['wall_s']} | {r['tomograms_per_minute']} |")
        print(f"wrote {out_path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
