"""Benchmark training the detector on a few clicks (issue 21), on shifted-domain tomograms, dark input.

Data: :func:`tomolens.simulate.domain.shifted_domain_config` (true SIRT, ±35°/2.5°, held-out maps
and pseudo-protein family, membranes, filaments, gold, carbon, coloured noise…), forced dark, but
**simulated at 64×256×256 voxels of 10 Å** instead of 24 Å (a 2.6 µm field instead of 6.1 µm) to
keep the CPU time sane; seeds 9100–9102, never used for anything else here.

Protocol per tomogram and click count N (10, 20, 50):

- the "user" clicks every macromolecule whose centre lies in a box grown from the corner of the
  first octant (z < nz/2, y-x square growing from (0, 0)) until it holds N centres; that box is
  the fully picked region (``region=``).  Clicks are the true centres; gold is left out.
  **All templates count as one kind**: at this size each template has only 5–12 particles per
  octant, too few for 20 or 50 clicks of one structure;
- the radius is typed: the median true radius of the clicked particles, at most 150 Å (the shipped
  detector's 32-voxel patch of 20 Å takes radii up to 160 Å; the held-out pseudo-proteins reach
  220 Å);
- :func:`tomolens.detect.points_train.train_from_points` with its defaults (fine-tuning the
  shipped ``detect_default``, 20 % held-out clicks, polarity auto) but a **step budget**
  (``--steps``, default 100) instead of the 5-minute limit, so the figures do not depend on the
  machine's load;
- the trained model detects on the whole tomogram; F1 at half of each particle's radius (one-to-one
  matching) on the other seven octants, leaving out the clicked box (for N = 50 it spills out
  of the first octant): truth and detections in that part only;
- side by side, on the same part: the shipped model untouched and the difference-of-Gaussians
  baseline of ``bench_shifted.py`` (its σ range and threshold as tuned there, read from
  ``results/shifted.json``).

Usage::

    nice python benchmarks/bench_points.py [--steps 100] [--seeds 9100,9101,9102] [--cache DIR] [--start-from detect_domain --out FILE]

Prints a Markdown table and writes ``benchmarks/results/points.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tomolens.detect import detect_particles
from tomolens.detect.points_train import train_from_points
from tomolens.io.atomic import atomic_path
from tomolens.jobs import run_job

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_shifted import dog_centres, f1_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "points.json"
CLICKS = (10, 20, 50)
VOXEL_A = 10.0
MAX_RADIUS_A = 150.0
log = logging.getLogger("bench_points")


def tomogram(seed: int, cache: Path | None):
    """(dark tomogram, macromolecule centres zyx, radii Å) of one shifted-domain seed at 10 Å."""
    key = cache / f"points_shifted10A_{seed}.npz" if cache else None
    if key is not None and key.is_file():
        with np.load(key) as f:
            return f["tomogram"], f["coords"], f["radii"]
    from tomolens.simulate.domain import shifted_domain_config
    from tomolens.simulate.domain_scene import simulate_domain_tomogram

    cfg = replace(shifted_domain_config(seed), voxel_size_A=VOXEL_A, polarity="dark")
    sim = run_job(simulate_domain_tomogram(cfg))
    keep = sim.particles.features["class_name"].astype(str).to_numpy() == "macromolecule"
    out = (
        np.asarray(sim.tomogram, np.float32),
        sim.particles.coords_zyx[keep],
        np.asarray(sim.particles.features["radius_A"], float)[keep],
    )
    if key is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(key) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, tomogram=out[0], coords=out[1], radii=out[2])
    return out


def click_box(coords: np.ndarray, shape, n: int) -> tuple[slice, slice, slice]:
    """The box z < nz/2, y, x < s with the smallest s holding ``n`` centres."""
    nz = shape[0] // 2
    low_z = coords[coords[:, 0] < nz]
    reach = np.sort(np.max(low_z[:, 1:], axis=1))
    if len(reach) < n:
        raise ValueError(f"only {len(reach)} particles in the lower half; cannot click {n}")
    s = int(np.floor(reach[n - 1])) + 1
    return slice(0, nz), slice(0, min(s, shape[1])), slice(0, min(s, shape[2]))


def scored_part(coords: np.ndarray, shape, box) -> np.ndarray:
    """True for centres in the other seven octants and outside the clicked box."""
    half = np.asarray(shape) / 2
    first_octant = np.all(coords < half, axis=1)
    in_box = np.all([(coords[:, i] >= s.start) & (coords[:, i] < s.stop) for i, s in enumerate(box)], axis=0)
    return ~first_octant & ~in_box


def score(found: np.ndarray, coords: np.ndarray, radii: np.ndarray, shape, box) -> dict:
    found = np.asarray(found, float).reshape(-1, 3)
    t, f = scored_part(coords, shape, box), scored_part(found, shape, box)
    return f1_of(found[f], coords[t], radii[t], VOXEL_A)


def summary(values: list[float]) -> dict:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "n": len(values),
        "values": [round(float(v), 4) for v in values],
    }


def write(args, rows: dict, per_run: list, dog: dict, t_start: float, max_radius: float) -> dict:
    """Write the JSON (after every run, so that an interrupted benchmark keeps what it measured)."""
    import torch

    table = {n: {m: summary(v) for m, v in methods.items()} for n, methods in rows.items()}
    result = {
        "benchmark": "points",
        "machine": f"{platform.machine()}, torch threads 1, no GPU",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "data": "shifted_domain_config seeds " + args.seeds + ", simulated at 64x256x256 voxels of 10 A, dark",
        "steps": args.steps,
        "start_from": args.start_from,
        "max_radius_A": max_radius,
        "dog_params": dog,
        "f1_by_clicks": table,
        "runs": per_run,
        "total_s": round(time.monotonic() - t_start, 1),
    }
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="step budget of each training (default: 100)")
    parser.add_argument("--seeds", default="9100,9101,9102", help="shifted-domain seeds")
    parser.add_argument("--clicks", default=",".join(map(str, CLICKS)), help="click counts")
    parser.add_argument("--cache", type=Path, default=None, help="folder caching the simulated tomograms")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--start-from",
        default="detect_default",
        help="detector to fine-tune and to score untouched (shipped name or .pt; default: detect_default)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    from tomolens.detect.points_train import largest_radius_A
    from tomolens.models.card import read_card, resolve_model

    # the largest radius the start model's patch takes (a quarter of it), at most MAX_RADIUS_A
    max_radius = min(MAX_RADIUS_A, largest_radius_A(read_card(resolve_model(args.start_from))))
    seeds = [int(s) for s in args.seeds.split(",")]
    clicks = [int(n) for n in args.clicks.split(",")]
    dog = json.loads((ROOT / "benchmarks" / "results" / "shifted.json").read_text())["dog_baseline"]
    dog = {k: dog[k] for k in ("min_sigma_A", "max_sigma_A", "threshold")}
    rows: dict[str, dict[str, list]] = {}
    per_run = []
    t_start = time.monotonic()
    for seed in seeds:
        t0 = time.monotonic()
        tomo, coords, radii = tomogram(seed, args.cache)
        sim_s = time.monotonic() - t0
        shipped = run_job(detect_particles(tomo, VOXEL_A, model=args.start_from, device="cpu")).particles.coords_zyx
        dog_found = dog_centres(tomo, VOXEL_A, **dog)
        for n in clicks:
            box = click_box(coords, tomo.shape, n)
            inside = np.all([(coords[:, i] >= s.start) & (coords[:, i] < s.stop) for i, s in enumerate(box)], axis=0)
            clicked, radius = coords[inside], min(float(np.median(radii[inside])), max_radius)
            with tempfile.TemporaryDirectory() as tmp:
                t1 = time.monotonic()
                res = run_job(
                    train_from_points(
                        tomo,
                        VOXEL_A,
                        clicked,
                        Path(tmp) / "m.pt",
                        radius_A=radius,
                        region=box,
                        steps=args.steps,
                        minutes=60,
                        seed=0,
                        start_from=args.start_from,
                        source=f"shifted seed {seed}, {n} true centres",
                    )
                )
                train_s = time.monotonic() - t1
                found = run_job(detect_particles(tomo, VOXEL_A, model=str(res.path), device="cpu")).particles
            entry = {
                "seed": seed,
                "clicks": int(len(clicked)),
                "region": [[s.start, s.stop] for s in box],
                "radius_A": round(radius, 1),
                "train_s": round(train_s, 1),
                "simulate_s": round(sim_s, 1),
                "trained": score(found.coords_zyx, coords, radii, tomo.shape, box),
                "shipped": score(shipped, coords, radii, tomo.shape, box),
                "dog": score(dog_found, coords, radii, tomo.shape, box),
                "validation_f1_tuned": res.card.metrics["validation_f1_tuned"],
                "best_step": res.card.metrics["best_step"],
            }
            per_run.append(entry)
            for method in ("trained", "shipped", "dog"):
                rows.setdefault(f"{n}", {}).setdefault(method, []).append(entry[method]["f1"])
            write(args, rows, per_run, dog, t_start, max_radius)
            print(
                f"seed {seed} N={n}: trained {entry['trained']['f1']:.3f} shipped {entry['shipped']['f1']:.3f} "
                f"dog {entry['dog']['f1']:.3f} ({train_s:.0f} s training)",
                flush=True,
            )
    result = write(args, rows, per_run, dog, t_start, max_radius)
    table = result["f1_by_clicks"]
    print("\n| clicks | trained (mean ± sd) | shipped untouched | DoG |\n|---|---|---|---|")
    for n, methods in table.items():
        print(
            f"| {n} | "
            + " | ".join(f"{methods[m]['mean']:.3f} ± {methods[m]['std']:.3f}" for m in ("trained", "shipped", "dog"))
            + " |"
        )
    print(f"wrote {args.out} ({result['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
