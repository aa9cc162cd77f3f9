"""Benchmark pick by example with template matching (issue 20, use 2), on shifted-domain tomograms, dark input.

Data: the shifted-domain set of ``bench_shifted.py`` (64×256×256 voxels of 24 Å, true SIRT,
±35°, held-out maps 1qvr/3cf3/3qm1/5mrc and held-out ``branched`` pseudo-proteins, crowded:
about 300-440 copies of each of 7-10 structures), seeds 9100-9102, forced dark.  Which
structure each particle is comes from rebuilding the simulator's scene with the same seed
(cheap; the centres are checked to equal the cached ones).

Per tomogram, targets: the structure with the most copies, plus the map with the most copies
when that structure is not a map (so the reference-map case is measured on every tomogram).
Per target:

- **clicks**: 5 true centres of the target (seeded choice); the radius is typed (the true
  radius) and the minimum distance set to it; all other settings default (polarity auto,
  angular step, combine, threshold);
- **reference**: the map of ``../shared/data/maps_10A`` (10 Å) instead of clicks, when the
  target is a map; same radius for the minimum distance;
- **average** (first target per tomogram only): the clicks with ``combine="average"`` (the 5
  examples aligned to the first and averaged into one template, instead of the default
  ``each``: the best of the 5);
- **DoG**: a size-matched difference-of-Gaussians picker (``bench_shifted``'s ``blob_dog``
  baseline and threshold, σ range 0.7-1.4 × r/√3 of the target's radius) — it sees size only,
  not shape.

Score: F1 at 0.5 × radius (one-to-one, ``bench_shifted.f1_of``) against the target's copies on
the **whole tomogram**, the 5 clicked examples left out (of the truth, and picks within 0.5 × radius
of one) for the template runs; DoG, which sees no clicks, is scored against all copies.  Also the F1 at the best
threshold of the same map (an oracle: shows the map's quality apart from the threshold).

Timing: one full template run per tomogram (wall, 1 torch thread, on the shared CPU) and, in a
child process, a 200×512×512 random volume with a few rotations: seconds per rotation, peak
resident memory, and the time for the default grid computed from them.

Usage::

    OMP_NUM_THREADS=1 nice python benchmarks/bench_pick_example.py --cache /work/scratch/cache

Prints a Markdown table and writes ``benchmarks/results/pick_example.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tomolens.embed.pick import PICK_PARAMS, find_similar, pick_peaks
from tomolens.io.atomic import atomic_path
from tomolens.jobs import run_job

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_segment_domain import start_results, write_results  # noqa: E402
from bench_shifted import cached, dog_centres, f1_of  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "pick_example.json"
MAPS = ROOT.parent / "shared" / "data" / "maps_10A"
N_EXAMPLES = 5
DEFAULTS = {p.name: p.default for p in PICK_PARAMS}
SWEEP = np.round(np.arange(0.05, 0.9, 0.025), 3)
log = logging.getLogger("bench_pick_example")


def template_names(kind: str, seed: int, coords: np.ndarray, cache: Path | None) -> np.ndarray:
    """Template name of every cached particle, from the rebuilt scene of the same seed."""
    key = cache / f"{kind}_{seed}_templates.npz" if cache else None
    if key is not None and key.is_file():
        with np.load(key) as f:
            return f["names"]
    from tomolens.simulate.domain import sample_domain_config, shifted_domain_config
    from tomolens.simulate.domain_scene import _particles, build_domain_scene, load_domain_templates

    cfg = shifted_domain_config(seed) if kind == "shifted" else sample_domain_config(seed=seed)
    templates = load_domain_templates(cfg, cfg.fine_voxel_A)
    scene = run_job(build_domain_scene(cfg, templates, np.random.default_rng([cfg.seed, 1])))
    table = _particles(scene, templates, cfg.supersampling, cfg.voxel_size_A)
    if table.coords_zyx.shape != coords.shape or not np.allclose(table.coords_zyx, coords):
        raise RuntimeError(f"the rebuilt scene of {kind} {seed} does not match the cached tomogram")
    names = table.features["template"].astype(str).to_numpy()
    if key is not None:
        with atomic_path(key) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, names=names.astype(str))
    return names


def choose_targets(names: np.ndarray) -> list[str]:
    counts = {n: int((names == n).sum()) for n in np.unique(names)}
    top = max(counts, key=counts.get)
    maps = [n for n in counts if (MAPS / f"{n}.mrc").is_file()]
    targets = [top]
    if top not in maps and maps:
        targets.append(max(maps, key=counts.get))
    return targets


def leave_out(found, scores, truth, radii, clicks, voxel):
    """Drop the clicked examples from the truth, and the picks within 0.5 × radius of one."""
    near = (np.linalg.norm(found[:, None] - clicks[None], axis=-1) * voxel < 0.5 * radii[0]).any(1)
    clicked = (np.linalg.norm(truth[:, None] - clicks[None], axis=-1) < 1e-6).any(1)
    return found[~near], scores[~near], truth[~clicked], radii[~clicked]


def score_map(sim, truth, radii, voxel, threshold, min_distance_A, clicks) -> dict:
    """F1 at ``threshold`` and at the best threshold of :data:`SWEEP`, the clicked examples left out
    (of the truth, and picks within 0.5 × radius of one).  Peaks above a threshold are the peaks above
    the lowest one with a score above it: no higher peak is ever suppressed by a lower one."""
    low = pick_peaks(sim, min(float(SWEEP[0]), threshold), min_distance_A)
    found, scores, truth, radii = leave_out(
        low[["z", "y", "x"]].to_numpy(), low["score"].to_numpy(), truth, radii, clicks, voxel
    )
    out = f1_of(found[scores >= threshold], truth, radii, voxel)
    sweep = [f1_of(found[scores >= t], truth, radii, voxel) for t in SWEEP]
    best = int(np.argmax([s["f1"] for s in sweep]))
    out.update(
        best_threshold=float(SWEEP[best]),
        f1_best_threshold=sweep[best]["f1"],
        precision_best_threshold=sweep[best]["precision"],
        recall_best_threshold=sweep[best]["recall"],
    )
    out["example_score"] = [round(float(a), 3) for a in np.concatenate(sim.example_similarity)]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def run_target(tomo, voxel, coords, radii, names, target, rng, with_average: bool, tilt_range_deg: float = 0.0) -> dict:
    sel = names == target
    truth, r_true = coords[sel], radii[sel]
    radius = float(r_true[0])
    clicks = truth[rng.choice(len(truth), N_EXAMPLES, replace=False)]
    settings = {"radius_A": radius, "tilt_range_deg": tilt_range_deg}
    row = {
        "target": target,
        "copies": int(sel.sum()),
        "radius_A": round(radius, 1),
        "share": round(float(sel.mean()), 3),
    }
    row["voxel_size_A"] = round(float(voxel), 2)
    t0 = time.monotonic()
    sim = run_job(find_similar(tomo, clicks, None, voxel, "template", **settings))
    row["clicks_wall_s"] = round(time.monotonic() - t0, 1)
    row["clicks"] = score_map(sim, truth, r_true, voxel, DEFAULTS["threshold"], radius, clicks)
    row["polarity"] = sim.info["polarity"]["tomogram"]
    if with_average:
        sim = run_job(find_similar(tomo, clicks, None, voxel, "template", combine="average", **settings))
        row["average"] = score_map(sim, truth, r_true, voxel, DEFAULTS["threshold"], radius, clicks)
    ref = MAPS / f"{target}.mrc"
    if ref.is_file():
        sim = run_job(find_similar(tomo, np.empty((0, 3)), None, voxel, "template", reference=ref, **settings))
        row["reference"] = score_map(sim, truth, r_true, voxel, DEFAULTS["threshold"], radius, clicks)
        row["reference_notes"] = sim.info["notes"]
    dog = json.loads((ROOT / "benchmarks" / "results" / "shifted.json").read_text())["dog_baseline"]
    sigma = radius / np.sqrt(3)
    found = dog_centres(tomo, voxel, 0.7 * sigma, 1.4 * sigma, dog["threshold"])
    row["dog"] = {
        k: (round(v, 4) if isinstance(v, float) else v) for k, v in f1_of(found, truth, r_true, voxel).items()
    }
    log.warning("%s", row)
    return row


def timing_child(n_rot: int, bin_factor: int = 1) -> None:
    """Child process: template matching of a 200×512×512 random volume over ``n_rot`` rotations, binned
    by ``bin_factor`` first (the binning counts in the setup time)."""
    import torch
    from skimage.transform import downscale_local_mean

    from tomolens.embed.template_match import cut_box, match_templates, rotation_grid, template_box

    torch.set_num_threads(1)
    vol = np.random.default_rng(0).standard_normal((200, 512, 512)).astype(np.float32)
    radius = 100.0 / 24.0
    rots = rotation_grid(DEFAULTS["angular_step_deg"])[:n_rot]
    t0 = time.monotonic()
    if bin_factor > 1:
        vol = downscale_local_mean(vol, (bin_factor,) * 3).astype(np.float32)
        radius /= bin_factor
    job = match_templates(vol, [cut_box(vol, np.array(vol.shape) // 2, template_box(radius))], radius, rots)
    first = None
    for p in job:
        if p.done == 1 and p.total == n_rot:
            first = time.monotonic()
    end = time.monotonic()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(json.dumps({"setup_s": first - t0, "per_rotation_s": (end - first) / max(n_rot - 1, 1), "peak_rss_GiB": rss}))


def measure_timing(n_rot: int, bin_factor: int = 1) -> dict:
    """:func:`timing_child` in a fresh process (its own peak memory), and the default grid's totals from it."""
    from tomolens.embed.template_match import rotation_grid

    out = subprocess.run(
        [sys.executable, __file__, "--timing-child", str(n_rot), "--timing-bin", str(bin_factor)],
        capture_output=True,
        text=True,
        check=True,
    )
    timing = json.loads(out.stdout.strip().splitlines()[-1])
    n_default = len(rotation_grid(DEFAULTS["angular_step_deg"]))
    timing.update(
        bin=bin_factor,
        rotations_timed=n_rot,
        default_rotations=n_default,
        each_5_examples_total_s=timing["setup_s"] + N_EXAMPLES * n_default * timing["per_rotation_s"],
        average_total_s=timing["setup_s"] + n_default * timing["per_rotation_s"],
    )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()}


def summary(values) -> dict:
    v = [float(x) for x in values]
    return {"mean": round(float(np.mean(v)), 4), "std": round(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, 4)}


def summarise(rows: list[dict]) -> dict:
    """Mean ± sd (ddof 1) per method of F1 and best-threshold F1: over the most-copies target of each
    tomogram (``most_copies``), and over every target a map exists for (``maps``)."""
    first = {}
    for r in rows:
        first.setdefault(r["seed"], r)
    groups = {"most_copies": list(first.values()), "maps": [r for r in rows if "reference" in r]}
    out = {}
    for group, members in groups.items():
        out[group] = {"targets": [f"{r['seed']} {r['target']}" for r in members]}
        for method in ("clicks", "average", "reference", "dog"):
            for key in ("f1", "f1_best_threshold"):
                vals = [r[method][key] for r in members if method in r and key in r[method]]
                if vals:
                    out[group][f"{method}.{key}"] = {**summary(vals), "n": len(vals), "values": vals}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="9100,9101,9102")
    parser.add_argument("--kind", default="shifted", choices=("shifted", "randomised"))
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--timing-rotations", type=int, default=12, help="rotations timed on 200x512x512 (0: skip)")
    parser.add_argument(
        "--tilt-range",
        type=float,
        default=0.0,
        help="typed tilt range (± degrees) for the templates' missing wedge (default 0: off, the default setting)",
    )
    parser.add_argument("--timing-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--timing-bin", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--timing-only",
        type=int,
        default=0,
        metavar="BIN",
        help="only time the 200x512x512 volume binned by BIN and add it to --out as timing_200x512x512_binBIN",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--resummarise", action="store_true", help="recompute the summary of the rows already in --out, and stop"
    )
    args = parser.parse_args()
    if args.resummarise:
        result = json.loads(args.out.read_text())
        result["summary"] = summarise(result["rows"])
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
        return 0
    if args.timing_child:
        timing_child(args.timing_child, args.timing_bin)
        return 0
    if args.timing_only:
        t0 = time.perf_counter()
        result = json.loads(args.out.read_text())
        result[f"timing_200x512x512_bin{args.timing_only}"] = measure_timing(args.timing_rotations, args.timing_only)
        write_results(args.out, result, "bench_pick_example.py", None, t0)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        tomo, _, _, coords, radii, voxel = cached(args.kind, seed, args.cache)
        names = template_names(args.kind, seed, coords, args.cache)
        rng = np.random.default_rng(seed)
        for i, target in enumerate(choose_targets(names)):
            row = run_target(tomo, voxel, coords, radii, names, target, rng, i == 0, args.tilt_range)
            rows.append({"seed": seed, **row})
    per_tomo = summarise(rows)
    timing = None
    if args.timing_rotations:
        timing = measure_timing(args.timing_rotations)
    result = start_results(args.out, threads=1, merge=False)
    result.update(
        benchmark="pick_example",
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        data=f"{args.kind} domain seeds {args.seeds}, 64x256x256, dark",
        voxel_size_A=sorted({r["voxel_size_A"] for r in rows}),
        defaults={k: DEFAULTS[k] for k in ("threshold", "angular_step_deg", "combine", "polarity")},
        tilt_range_deg=args.tilt_range,
        examples=N_EXAMPLES,
        scored_on="whole tomogram, the 5 clicked examples left out (of the truth, and picks within 0.5 x radius of one)",
        summary=per_tomo,
        rows=rows,
        timing_200x512x512=timing,
    )
    write_results(args.out, result, "bench_pick_example.py", None, t_start)
    print("| seed | target | copies | clicks F1 (best thr) | average | reference | DoG |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda m: f"{r[m]['f1']:.2f} ({r[m]['f1_best_threshold']:.2f})" if m in r else "-"  # noqa: E731
        print(
            f"| {r['seed']} | {r['target']} | {r['copies']} | {cell('clicks')} | {cell('average')} | {cell('reference')} | {r['dog']['f1']:.2f} |"
        )
    print(json.dumps(per_tomo, indent=1), json.dumps(timing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
