"""Detection models side by side on three simulated domains, dark input, with a DoG baseline.

Sets (never used for training or for choosing when to stop: the domain detector trained on seeds
1000–1095 and validated on 8000–8003; the shipped ``detect_default`` on seeds below 7200):

- **randomised**: :func:`tomolens.simulate.domain.sample_domain_config` (the domain training
  ranges, unseen seeds 9200–9202), 64×256×256 voxels, dark;
- **shifted**: :func:`tomolens.simulate.domain.shifted_domain_config` (outside every training
  range: 24 Å voxels, SIRT, ±35°, held-out maps and pseudo-protein family), seeds 9100–9102, dark;
- **legacy**: the phantom simulator ``detect_default`` was trained on (64×128×128 at 10 Å, SNR
  0.05), seeds 9000–9002, dark (negated).

Every model runs at its default settings (polarity ``auto``, radius estimated per particle, the
card's thresholds).  A pick matches a particle within half that particle's radius, one to one
(the CZII challenge's rule); gold beads are not particles.  The baseline is the size-matched
difference-of-Gaussians picker of ``bench_shifted`` (σ range and threshold tuned on the legacy
simulator's training seeds 500–503).

**Calibration.**  Scores are calibrated when one threshold works everywhere.  For every model and
tomogram the picks are re-scored at each ``min_score`` of :data:`SCORE_GRID` (post hoc, on the
picks of a run at ``min_score`` 0; the default is the card's ``min_score``, 0 for an uncalibrated
card, applied the same way): the JSON keeps precision, recall and F1 at
the default and at every threshold, and the threshold that would have been best per set — a
spread of best thresholds across sets means no single default serves them all.

Usage::

    python benchmarks/bench_detect_domain.py --models detect_default,detect_domain \
        [--threads 2] [--cache DIR] [--seeds 3] [--sets randomised,shifted,legacy] [--merge]

Writes ``benchmarks/results/detect_domain.json`` and prints a Markdown table.  Figures are mean ±
standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment_domain import FIRST_SEED, start_results, write_results  # noqa: E402
from bench_shifted import DOG_GRID, cached, dog_centres, f1_of, summary, tune_dog  # noqa: E402

from tomolens.detect import detect_particles  # noqa: E402
from tomolens.jobs import run_job  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "detect_domain.json"
SCORE_GRID = tuple(round(x, 2) for x in np.arange(0.0, 0.95, 0.05))
METRICS = ("f1", "precision", "recall")


def set_data(kind: str, seed: int, cache: Path | None):
    """(dark tomogram, true centres zyx, radii Å, voxel size) of one set member."""
    tomo, _, _, coords, radii, vs = cached("in-domain" if kind == "legacy" else kind, seed, cache)
    return (-tomo if kind == "legacy" else tomo), coords, radii, vs


def default_min_score(model: str) -> float:
    """The ``min_score`` a run of ``model`` uses by default (its card's tuned or calibrated one, else 0)."""
    from tomolens.detect.postprocess import card_postprocess_defaults
    from tomolens.models.card import read_card, resolve_model

    return float(card_postprocess_defaults(read_card(resolve_model(model))).get("min_score", 0.0))


def model_scores(model: str, tomogram, coords, radii, voxel: float) -> dict:
    """F1, precision, recall at the default settings, and F1 per ``min_score`` of SCORE_GRID.

    The run keeps every candidate (``min_score`` 0); the default is the card's ``min_score``
    applied to those picks, as the post-processing would (calibrated scores included)."""
    res = run_job(detect_particles(tomogram, voxel, model=model, device="cpu", min_score=0.0))
    found = np.asarray(res.particles.coords_zyx)
    score = np.asarray(res.particles.features["score"], float) if len(found) else np.zeros(0)
    default = default_min_score(model)
    out = f1_of(found[score >= default], coords, radii, voxel)
    out["sweep"] = {f"{t:g}": f1_of(found[score >= t], coords, radii, voxel) for t in SCORE_GRID}
    out["polarity"] = res.params["polarity_decision"]["tomogram"]
    out["score"] = res.params.get("score", "raw")
    out["default_min_score"] = default
    return out


def best_threshold(sweeps: list[dict], default: float = 0.0) -> dict:
    """The ``min_score`` with the best mean F1 over a set's tomograms, that F1, and the F1 at ``default``."""
    mean_f1 = {t: float(np.mean([s[t]["f1"] for s in sweeps])) for t in sweeps[0]}
    t = max(mean_f1, key=mean_f1.get)
    return {"min_score": float(t), "f1": mean_f1[t], "f1_at_default": mean_f1.get(f"{default:g}")}


def run_set(name: str, kind: str, seeds: range, cache: Path | None, scorer) -> dict:
    """Scores of one method on one set: ``scorer(tomogram, centres, radii, voxel)`` per seed."""
    rows: dict[str, list] = {}
    for seed in seeds:
        sc = scorer(*set_data(kind, seed, cache))
        for k, v in sc.items():
            rows.setdefault(k, []).append(v)
        print(f"{name} {kind} seed {seed}: " + ", ".join(f"{k} {sc[k]:.3f}" for k in METRICS), flush=True)
    out = {k: summary(rows[k]) for k in METRICS} | {"n_true": rows["n_true"], "n_found": rows["n_found"]}
    if "sweep" in rows:
        out["best_threshold"] = best_threshold(rows["sweep"], rows["default_min_score"][0])
        out["sweep"] = rows["sweep"]
        out["polarity"] = rows["polarity"]
        out["score"] = rows["score"][0]
        out["default_min_score"] = rows["default_min_score"][0]
    return out


def fmt(cell) -> str:
    return "—" if not isinstance(cell, dict) or cell.get("mean") is None else f"{cell['mean']:.2f} ± {cell['std']:.2f}"


def markdown_table(results: dict) -> str:
    lines = [
        "| method | set | F1 | precision | recall | best min_score (F1 there) |",
        "|---|---|---|---|---|---|",
    ]
    for method, sets in results["models"].items():
        for kind, row in sets.items():
            best = row.get("best_threshold")
            tail = f"{best['min_score']:g} ({best['f1']:.2f})" if best else "—"
            lines.append(f"| {method} | {kind} | " + " | ".join(fmt(row.get(m)) for m in METRICS) + f" | {tail} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="detect_default", help="comma-separated shipped model names or .pt paths")
    parser.add_argument("--sets", default="randomised,shifted,legacy")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the DoG part (detection: all cores but one)"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep simulated tomograms in")
    parser.add_argument("--no-baseline", action="store_true", help="skip the DoG baseline (e.g. with --merge)")
    parser.add_argument("--merge", action="store_true", help="add to the existing JSON (other methods' results kept)")
    args = parser.parse_args(argv)
    if args.seeds < 3:
        parser.error("--seeds: figures need at least 3 seeds (mean ± spread)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sets = [s for s in args.sets.split(",") if s]
    unknown = set(sets) - set(FIRST_SEED)
    if unknown:
        parser.error(f"--sets: unknown {sorted(unknown)}; choose from {', '.join(FIRST_SEED)}")
    results = start_results(RESULTS, args.threads, args.merge, keep=("dog_params",))
    results["match_rule"] = "one-to-one within 0.5 x the particle's radius; gold beads excluded"
    results["score_grid"] = list(SCORE_GRID)
    seeds = {kind: range(FIRST_SEED[kind], FIRST_SEED[kind] + args.seeds) for kind in sets}
    if not args.no_baseline:
        dog = tune_dog(args.cache)
        params = {k: dog[k] for k in DOG_GRID}
        results["dog_params"] = dog
        results["models"].setdefault("DoG (tuned on legacy training seeds)", {}).update(
            {
                kind: run_set(
                    "DoG", kind, seeds[kind], args.cache, lambda t, c, r, v: f1_of(dog_centres(t, v, **params), c, r, v)
                )
                for kind in sets
            }
        )
    for model in [m for m in args.models.split(",") if m]:
        # with --merge, a model's other sets stay as they were
        results["models"].setdefault(model, {}).update(
            {
                kind: run_set(model, kind, seeds[kind], args.cache, lambda t, c, r, v: model_scores(model, t, c, r, v))
                for kind in sets
            }
        )
    write_results(RESULTS, results, "bench_detect_domain.py", argv, t0)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
