"""Benchmark particle detection: F1 of the shipped model vs a LoG/DoG baseline; speed and memory.

Accuracy: held-out simulated crowded tomograms (64×128×128 at 10 Å, volume fraction
0.2, random seeds from ``--seed`` on, never used for training or stopping — the shipped
model's card lists its seeds, all below 1000) at SNR 0.05 and 0.03, with the built-in
phantoms, with the real maps in ``../shared/data/maps_10A``, and "cell-like" (phantoms
with one vesicle and two filaments at volume fraction 0.15, like the sample data; only
particles count as truth).  A prediction is a true positive within
half of the matched particle's ``radius_A`` (one-to-one matching).

Seeds: every condition is measured on ``--n`` (default 3) held-out tomograms, each of its own
simulator seed; every F1 is reported as mean ± sample standard deviation over them
(``net_f1_summary``, ``dog_f1_summary``, with the per-tomogram values and seeds;
:func:`tomolens.evaluate.seed_summary`).  The network is the one shipped model (its training
is not repeated here), so the spread is that of the data.

Baseline: ``skimage.feature.blob_dog`` on the z-scored tomogram (particles bright);
its sigma range and threshold are tuned for the best mean F1 on simulated tomograms of
seeds 500.. (phantoms, volume fraction 0.2, SNR 0.03 / 0.05 / …), never in the test set.

Speed: wall time and peak RSS (of a fresh subprocess) to detect in a 512×512×200
float32 tomogram (a simulated tomogram tiled to that size, memory-mapped MRC) with the
CPU threads given.

Usage::

    python benchmarks/bench_detect.py [--n 3] [--threads 2] [--skip-speed]

Prints a table and writes ``benchmarks/results/detect.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.feature import blob_dog

from tomolens.detect import detect_particles
from tomolens.evaluate import match_centres, seed_summary
from tomolens.io.atomic import atomic_path
from tomolens.io.coords import ParticleTable
from tomolens.jobs import run_job
from tomolens.models.card import load_model
from tomolens.simulate import SimulationConfig, simulate_tomogram

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT.parent / "shared" / "data" / "maps_10A"
SHAPE = (64, 128, 128)
VOXEL_A = 10.0
TRAIN_SEEDS = (500, 501, 502, 503)
TRAIN_SNRS = (0.03, 0.05, 0.1, math.inf)


@dataclass
class Sim:
    """The parts of a simulated tomogram the benchmark needs."""

    tomogram: np.ndarray
    particles: ParticleTable


#: The "cell-like" condition: like the sample data, one vesicle and two filaments among the
#: particles (volume fraction 0.15); the truth is the particles only.
CELL = {"n_membranes": 1, "n_filaments": 2, "volume_fraction": 0.15}


def simulate(seed: int, snr: float, templates=None, cache: Path | None = None, cell: bool = False) -> Sim:
    """Simulate (or load from ``cache``) one crowded tomogram at 10 Å."""
    key = f"s{seed}_snr{snr:g}_{'maps' if templates else 'phantoms'}{'_cell' if cell else ''}.npz"
    if cache is not None and (cache / key).is_file():
        with np.load(cache / key) as f:
            return Sim(f["tomogram"], ParticleTable(f["coords"], pd.DataFrame({"radius_A": f["radius_A"]}), VOXEL_A))
    settings = {"volume_fraction": 0.2, **(CELL if cell else {})}
    cfg = SimulationConfig(shape_zyx=SHAPE, voxel_size_A=VOXEL_A, snr=snr, seed=seed, templates=templates, **settings)
    sim = run_job(simulate_tomogram(cfg))
    out = Sim(sim.tomogram, sim.particles)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache / key) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                tomogram=out.tomogram,
                coords=out.particles.coords_zyx,
                radius_A=np.asarray(out.particles.features["radius_A"], float),
            )
    return out


def f1_of(found_zyx: np.ndarray, sim) -> dict:
    truth = sim.particles
    m = match_centres(
        found_zyx * VOXEL_A, truth.coords_zyx * VOXEL_A, np.asarray(truth.features["radius_A"], float) / 2
    )
    return {
        "f1": m.f1,
        "precision": m.precision,
        "recall": m.recall,
        "n_true": len(truth),
        "n_found": m.true_positives + m.false_positives,
    }


def dog_centres(tomogram: np.ndarray, min_sigma: float, max_sigma: float, threshold: float) -> np.ndarray:
    z = (tomogram - tomogram.mean()) / tomogram.std()
    blobs = blob_dog(
        z, min_sigma=min_sigma, max_sigma=max_sigma, threshold=threshold, overlap=0.5, exclude_border=False
    )
    return blobs[:, :3] if len(blobs) else np.zeros((0, 3))


DOG_GRID = {"min_sigma": (2.0,), "max_sigma": (4.0, 7.0), "threshold": (0.2, 0.25, 0.3, 0.35)}


def tune_dog(sims) -> tuple[dict, float]:
    best, best_f1 = {}, -1.0
    for min_s, max_s, thr in product(*DOG_GRID.values()):
        f1 = float(np.mean([f1_of(dog_centres(s.tomogram, min_s, max_s, thr), s)["f1"] for s in sims]))
        if f1 > best_f1:
            best, best_f1 = {"min_sigma": min_s, "max_sigma": max_s, "threshold": thr}, f1
    return best, best_f1


SPEED_CHILD = """
import resource, sys, time, json
import numpy as np
from tomolens.detect import detect_particles
from tomolens.io.mrc import read_mrc
from tomolens.jobs import run_job
import torch
torch.set_num_threads(int(sys.argv[2]))
vol = read_mrc(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
res = run_job(detect_particles(vol.data, 10.0, model=sys.argv[3], device="cpu"))
wall = time.perf_counter() - t
print(json.dumps({"seconds": wall, "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_MiB": before / 1024, "particles": len(res.particles)}))
"""


def speed(model: str, threads: int, seed: int, cache: Path | None) -> dict:
    from tomolens.io.mrc import write_mrc

    sim = simulate(seed, 0.05, cache=cache)
    big = np.tile(sim.tomogram, (4, 4, 4))[:200, :512, :512].astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.mrc"
        write_mrc(path, big, VOXEL_A)
        size_mib = path.stat().st_size / 2**20
        del big
        out = subprocess.run(
            [sys.executable, "-c", SPEED_CHILD, str(path), str(threads), model],
            capture_output=True,
            text=True,
            check=True,
        )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["input_MiB"] = size_mib
    res["shape_zyx"] = [200, 512, 512]
    res["threads"] = threads
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="detect_default")
    parser.add_argument("--n", type=int, default=3, help="held-out tomograms (seeds) per condition, at least 3")
    parser.add_argument("--seed", type=int, default=5000, help="first held-out seed")
    parser.add_argument("--tune-n", type=int, default=2, help="training tomograms to tune the baseline on")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "detect.json"))
    parser.add_argument("--cache", default=None, help="folder caching simulated tomograms between runs")
    args = parser.parse_args(argv)
    if args.n < 3:
        parser.error("--n: F1 figures need at least 3 held-out tomograms (mean ± spread)")
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    import torch

    torch.set_num_threads(args.threads)
    net, card = load_model(args.model, expected_task="detect")
    t0 = time.time()
    cache = Path(args.cache) if args.cache else None
    tune_sims = [
        simulate(s, TRAIN_SNRS[i % len(TRAIN_SNRS)], cache=cache) for i, s in enumerate(TRAIN_SEEDS[: args.tune_n])
    ]
    dog_params, dog_train_f1 = tune_dog(tune_sims)
    print(
        f"baseline DoG tuned on seeds {TRAIN_SEEDS[: args.tune_n]} (never in the test set): {dog_params} (F1 {dog_train_f1:.3f})"
    )
    templates = {"phantoms": (None, False)}
    if MAPS.is_dir():
        templates["real maps"] = (sorted(str(p) for p in MAPS.glob("*.mrc")), False)
    else:
        print(f"(real maps not found at {MAPS}; skipping them)")
    templates["phantoms + vesicle + filaments"] = (None, True)
    rows = []
    seed = args.seed
    for (tname, (tlist, cell)), snr in product(templates.items(), (0.05, 0.03)):
        net_scores, dog_scores, seconds = [], [], []
        for _ in range(args.n):
            sim = simulate(seed, snr, tlist, cache, cell=cell)
            seed += 1
            t = time.perf_counter()
            found = run_job(detect_particles(sim.tomogram, VOXEL_A, model=(net, card), device="cpu")).particles
            seconds.append(time.perf_counter() - t)
            net_scores.append(f1_of(found.coords_zyx, sim))
            dog_scores.append(f1_of(dog_centres(sim.tomogram, **dog_params), sim))
        row = {"templates": tname, "snr": snr, "tomograms": args.n, "seeds": f"{seed - args.n}..{seed - 1}"}
        for key in ("f1", "precision", "recall"):
            row[f"net_{key}"] = float(np.mean([s[key] for s in net_scores]))
            row[f"dog_{key}"] = float(np.mean([s[key] for s in dog_scores]))
        row["seed_list"] = list(range(seed - args.n, seed))
        for who, scores in (("net", net_scores), ("dog", dog_scores)):
            row[f"{who}_f1_summary"] = seed_summary([s["f1"] for s in scores], scale=1.0, unit="", decimals=2)
        row["n_true_mean"] = float(np.mean([s["n_true"] for s in net_scores]))
        row["net_seconds_per_tomogram"] = float(np.mean(seconds))
        row["ratio_f1"] = row["net_f1"] / row["dog_f1"] if row["dog_f1"] > 0 else float("inf")
        rows.append(row)
        print(
            f"{tname:30s} SNR {snr:<5g} net F1 {row['net_f1_summary']['text']} (P {row['net_precision']:.2f} "
            f"R {row['net_recall']:.2f})  DoG F1 {row['dog_f1_summary']['text']}  ×{row['ratio_f1']:.2f}",
            flush=True,
        )
    result = {
        "benchmark": "detect",
        "machine": f"2-core CPU, no GPU ({platform.processor() or platform.machine()})",
        "load_average_at_start": load_at_start,
        "model": card.name,
        "model_sha256": card.sha256,
        "baseline": {"method": "skimage.feature.blob_dog", "params": dog_params, "train_f1": dog_train_f1},
        "shape_zyx": list(SHAPE),
        "voxel_size_A": VOXEL_A,
        "accuracy": rows,
        "command": "python benchmarks/bench_detect.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    earlier = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    if args.skip_speed and "speed" in earlier:  # a speed is not an accuracy: keep the last one measured
        result["speed"] = earlier["speed"] | {
            "from_earlier_run": earlier["speed"].get("from_earlier_run", earlier.get("command", ""))
        }
    if not args.skip_speed:
        result["speed"] = speed(args.model, args.threads, args.seed, cache)
        s = result["speed"]
        print(
            f"512×512×200: {s['seconds']:.1f} s, peak RSS {s['peak_rss_MiB']:.0f} MiB "
            f"(input {s['input_MiB']:.0f} MiB), {s['particles']} particles, {s['threads']} threads"
        )
    result["total_seconds"] = time.time() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
