"""Segmentation models side by side on three simulated domains and a real tomogram, dark input.

Sets (never used for training or for choosing when to stop: the domain model trained on seeds
1000–1095 and validated on 8000–8003; the shipped ``segment_default`` on seeds below 7200):

- **randomised**: :func:`tomolens.simulate.domain.sample_domain_config` (the domain model's
  training ranges, unseen seeds 9200–9202), 64×256×256 voxels, dark;
- **shifted**: :func:`tomolens.simulate.domain.shifted_domain_config` (outside every training range:
  24 Å voxels, SIRT, ±35°, held-out maps and pseudo-protein family), seeds 9100–9102, dark;
- **legacy**: the phantom simulator ``segment_default`` was trained on (64×128×128 at 10 Å,
  SNR 0.05), seeds 9000–9002, dark (negated);
- **real**: ``../shared/data/real/microtubule_14pf.mrc`` (in-vitro microtubule at 10.52 Å): Dice of
  "microtubule" (or the shipped model's "filament") against the tube of radius 13 nm around the
  published axis, and the fraction of the volume called macromolecule/particle.

Dice per truth group: membrane; microtubule; actin; filament = microtubule ∪ actin (the shipped
model's single filament class); macromolecule (the shipped model's "particle"; in the legacy
simulator every template).  A model without a class for a group gets "—".  Every model runs at
default settings (polarity ``auto``).  Figures are mean ± standard deviation over the seeds.

Usage::

    python benchmarks/bench_segment_domain.py --models segment_default,segment_domain \
        [--threads 2] [--cache DIR] [--seeds 3] [--sets randomised,shifted,legacy,real]

Writes ``benchmarks/results/segment_domain.json`` (``--merge``: adds to it) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shifted import SHARED, cached, dice, segment_real, summary, truth_groups  # noqa: E402

from tomolens.io.atomic import atomic_path  # noqa: E402
from tomolens.jobs import run_job  # noqa: E402
from tomolens.segment.predict import segment_tomogram  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "segment_domain.json"
FIRST_SEED = {"randomised": 9200, "shifted": 9100, "legacy": 9000}
GROUPS = ("membrane", "microtubule", "actin", "filament", "macromolecule")
# which of a model's classes count for each truth group
PRED_CLASSES = {
    "membrane": ("membrane",),
    "microtubule": ("microtubule",),
    "actin": ("actin",),
    "filament": ("filament", "microtubule", "actin"),
    "macromolecule": ("macromolecule", "particle"),
}


def predicted_group(classes: np.ndarray, names: list[str], group: str) -> np.ndarray | None:
    ids = [names.index(n) for n in PRED_CLASSES[group] if n in names]
    return np.isin(classes, ids) if ids else None


def set_data(kind: str, seed: int, cache: Path | None):
    """(dark tomogram, semantic, class names, voxel size) of one set member."""
    tomo, semantic, names, _, _, vs = cached("in-domain" if kind == "legacy" else kind, seed, cache)
    return (-tomo if kind == "legacy" else tomo), semantic, names, vs


def scores(model: str, tomogram, semantic, names, voxel: float, threads: int) -> dict:
    res = run_job(segment_tomogram(tomogram, voxel, model=model, device="cpu", threads=threads))
    truth = truth_groups(semantic, names)
    out: dict = {}
    for g in GROUPS:
        pred = predicted_group(res.classes, res.class_names, g)
        out[g] = None if pred is None or truth[g] is None else dice(pred, truth[g])
    out["polarity"] = res.info["polarity"]["tomogram"]
    return out


def real_scores(model: str, threads: int) -> dict:
    found = segment_real(threads, model)
    if found is None:
        return {"skipped": f"{SHARED / 'real' / 'microtubule_14pf.mrc'} not found"}
    res, tube = found
    mt = predicted_group(res.classes, res.class_names, "microtubule")
    if mt is None:
        mt = predicted_group(res.classes, res.class_names, "filament")
    macro = predicted_group(res.classes, res.class_names, "macromolecule")
    return {
        "microtubule_dice_vs_tube": dice(mt, tube),
        "macromolecule_fraction": float(np.mean(macro)) if macro is not None else None,
        "polarity": res.info["polarity"]["tomogram"],
    }


def start_results(path: Path, threads: int, merge: bool, keep: tuple[str, ...] = ()) -> dict:
    """A results dict naming the machine; with ``merge``, the models, commands and ``keep`` keys of ``path``."""
    import torch

    results = {
        "machine": f"{platform.processor() or platform.machine()}, {threads} threads, no GPU",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "models": {},
        "commands": [],
    }
    if merge and path.is_file():
        previous = json.loads(path.read_text())
        results["models"] = previous.get("models", {})
        results["commands"] = previous.get("commands", [])
        results.update({k: previous[k] for k in keep if k in previous})
    return results


def write_results(path: Path, results: dict, script: str, argv, t0: float) -> None:
    """Append this run's command and wall time to ``results["commands"]`` and write ``path`` atomically."""
    results["commands"].append(
        {
            "command": f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
            "wall_seconds": round(time.perf_counter() - t0, 1),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2))


def fmt(cell) -> str:
    if not isinstance(cell, dict) or cell.get("mean") is None:
        return "—"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}"


def markdown_table(results: dict) -> str:
    lines = ["| model | set | " + " | ".join(f"{g} Dice" for g in GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]
    for model, sets in results["models"].items():
        for label, row in sets.items():
            if label == "real":
                d, f = row.get("microtubule_dice_vs_tube"), row.get("macromolecule_fraction")
                lines.append(
                    f"| {model} | real microtubule | microtubule vs tube "
                    f"{'—' if d is None else f'{d:.2f}'}, macromolecule "
                    f"{'—' if f is None else f'{100 * f:.1f} %'} of the volume |" + " |" * (len(GROUPS) - 1)
                )
            else:
                lines.append(f"| {model} | {label} | " + " | ".join(fmt(row.get(g)) for g in GROUPS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default="segment_default,segment_domain", help="comma-separated shipped model names or .pt paths"
    )
    parser.add_argument("--sets", default="randomised,shifted,legacy,real")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep simulated tomograms in")
    parser.add_argument(
        "--merge", action="store_true", help="add these models' results to the existing JSON (other models' kept)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    sets = args.sets.split(",")
    results = start_results(RESULTS, args.threads, args.merge)
    for model in args.models.split(","):
        per_set: dict = {}
        for kind in [s for s in sets if s != "real"]:
            rows: dict[str, list] = {}
            for seed in range(FIRST_SEED[kind], FIRST_SEED[kind] + args.seeds):
                tomo, semantic, names, vs = set_data(kind, seed, args.cache)
                sc = scores(model, tomo, semantic, names, vs, args.threads)
                for k, v in sc.items():
                    rows.setdefault(k, []).append(v)
                print(f"{model} {kind} seed {seed}: {sc}", flush=True)
            per_set[kind] = {
                k: (v if k == "polarity" else summary(v) if any(x is not None for x in v) else None)
                for k, v in rows.items()
            }
        if "real" in sets:
            per_set["real"] = real_scores(model, args.threads)
            print(f"{model} real: {per_set['real']}", flush=True)
        results["models"].setdefault(model, {}).update(per_set)
    write_results(RESULTS, results, "bench_segment_domain.py", argv, t0)
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
