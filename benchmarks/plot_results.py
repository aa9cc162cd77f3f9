"""Draw the benchmark figures of the docs from the benchmark JSON files (no number is typed here).

``python benchmarks/plot_results.py [--results benchmarks/results] [--out docs/img]`` writes

- ``bench_detect.png``: detection F1 of the shipped network and of the tuned difference-of-Gaussians
  baseline per held-out condition (``detect.json``), with the F1 goal;
- ``bench_classify.png``: test accuracy per SNR (mean ± spread over seeds), the seed paper's figure
  (``classify.json``);
- ``bench_shifted.png``: the shipped models in-domain and on the shifted domain, with the DoG baseline
  (``shifted.json``);
- ``bench_segment_domain.png``: Dice per class of each segmentation model on each simulated domain
  (``segment_domain.json``);
- ``bench_orient_maps.png``: orientation error per map (mean ± spread over seeds, up to the map's symmetry)
  before and after refinement (``orient_maps.json``).

Needs matplotlib (the ``docs`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
#: The detection goal the issue set (F1 at SNR 0.05), drawn as a line.
DETECT_F1_GOAL = 0.90


def _save(fig, ax, ylabel: str, ymax: float, title: str, legend_at: str, path: Path) -> Path:
    """Label the axes, write the PNG and close the figure."""
    import matplotlib.pyplot as plt

    ax.set_ylabel(ylabel)
    ax.set_ylim(0, ymax)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc=legend_at)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _mean_sd(cells) -> tuple[list[float], list[float]]:
    """Means and spreads of seed summaries (``{"mean", "std"}``; a missing one counts 0)."""
    cells = [c or {} for c in cells]
    return [c.get("mean") or 0 for c in cells], [c.get("std") or 0 for c in cells]


def _grouped_bars(ax, n_groups: int, series, capsize: int = 3) -> np.ndarray:
    """One bar per series in each of ``n_groups`` groups; ``series``: (label, values, spreads or None, colour or
    None).  Returns the groups' x positions."""
    x = np.arange(n_groups)
    width = 0.8 / max(len(series), 1)
    for i, (label, values, spreads, colour) in enumerate(series):
        ax.bar(x - 0.4 + width * (i + 0.5), values, width, yerr=spreads, capsize=capsize, label=label, color=colour)
    return x


def plot_detection(results: dict, out: Path) -> Path:
    """Grouped bars: network vs DoG F1 per condition of ``detect.json``."""
    import matplotlib.pyplot as plt

    rows = results["accuracy"]
    labels = [f"{textwrap.fill(r['templates'], 16)}\nSNR {r['snr']:g}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    ax.bar(x - 0.2, [r["net_f1"] for r in rows], 0.4, label=f"network ({results['model']})", color="#4c9be8")
    ax.bar(x + 0.2, [r["dog_f1"] for r in rows], 0.4, label="DoG baseline (tuned)", color="#f39c12")
    ax.axhline(DETECT_F1_GOAL, color="#2ecc71", linestyle="--", linewidth=1, label=f"goal F1 {DETECT_F1_GOAL:g}")
    ax.set_xticks(x, labels, fontsize=8)
    return _save(
        fig,
        ax,
        "F1 (held-out tomograms)",
        1.0,
        f"Particle detection, {results['machine']}",
        "upper left",
        out / "bench_detect.png",
    )


def plot_classification(results: dict, out: Path) -> Path:
    """Bars per SNR: our classifier's test accuracy (mean ± spread over seeds), the seed paper's, and the goal."""
    import matplotlib.pyplot as plt

    snrs = list(results["classification"])
    series = []
    for arch, colour in (("resnet", "#4c9be8"), ("seed", "#9b59b6")):
        if all(arch in results["classification"][s] for s in snrs):
            acc = [results["classification"][s][arch]["accuracy"] for s in snrs]
            n = acc[0].get("n_seeds", 1)
            series.append((f"{arch} (ours, {n} seeds)", [a["mean"] for a in acc], [a["std"] for a in acc], colour))
    paper = results.get("seed_paper_accuracy", {})
    if all(s in paper for s in snrs):
        series.append(("seed 000 paper", [paper[s] for s in snrs], None, "#95a5a6"))
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=110)
    x = _grouped_bars(ax, len(snrs), series)
    if "goals" in results:
        ax.hlines(
            [results["goals"][s] for s in snrs],
            x - 0.42,
            x + 0.42,
            color="#2ecc71",
            linestyles="--",
            label="goal",
            zorder=3,
        )
    ax.set_xticks(x, [f"SNR {s}" for s in snrs])
    return _save(
        fig,
        ax,
        "test accuracy",
        1.05,
        f"Subtomogram classification, {results['machine']}",
        "lower right",
        out / "bench_classify.png",
    )


def plot_shifted(results: dict, out: Path) -> Path:
    """In-domain vs shifted-domain side by side (``shifted.json``): detection F1 vs the DoG baseline, and Dice."""
    import matplotlib.pyplot as plt

    sets = [label for label in results["sets"] if "dark" in label]
    keys = [
        ("detect_f1", "detection F1"),
        ("dog_f1", "DoG baseline F1"),
        ("dice_membrane", "membrane Dice"),
        ("dice_filament", "filament Dice"),
        ("dice_particle", "particle Dice"),
    ]
    colours = ("#4c9be8", "#f39c12", "#1abc9c", "#9b59b6", "#e74c3c")
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    series = [
        (name, *_mean_sd(results["sets"][label].get(key) for label in sets), colour)
        for (key, name), colour in zip(keys, colours)
    ]
    x = _grouped_bars(ax, len(sets), series)
    ax.set_xticks(x, sets)
    return _save(
        fig,
        ax,
        "score (mean ± sd, 3 seeds)",
        1.05,
        "Shipped models in-domain and on the shifted domain",
        "upper right",
        out / "bench_shifted.png",
    )


def plot_segment_domain(results: dict, out: Path) -> Path:
    """Dice per class, model and set (``segment_domain.json``)."""
    import matplotlib.pyplot as plt

    groups = ("membrane", "microtubule", "actin", "filament", "macromolecule")
    bars = [(model, kind) for model, sets in results["models"].items() for kind in sets if kind != "real"]
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    series = [
        (f"{model}, {kind}", *_mean_sd(results["models"][model][kind].get(g) for g in groups), None)
        for model, kind in bars
    ]
    x = _grouped_bars(ax, len(groups), series, capsize=2)
    ax.set_xticks(x, groups)
    return _save(
        fig,
        ax,
        "Dice (mean ± sd)",
        1.55,
        "Segmentation models on simulated domains (dark input)",
        "upper right",
        out / "bench_segment_domain.png",
    )


def plot_orientation_maps(results: dict, out: Path) -> Path:
    """Mean and median orientation error per map, before and after refinement (``orient_maps.json``)."""
    import matplotlib.pyplot as plt

    rows = results["summary"]
    labels = [
        f"{r['map']} ({r['symmetry']})\n{r['condition']}"
        + (f", {r['n_projections']} / {r['train_steps']}" if r.get("n_projections") else "")
        + f"\n{len(r['seeds'])} seed{'s' * (len(r['seeds']) > 1)}"
        for r in rows
    ]
    keys = [
        ("before_refinement_mean_deg", "mean, before refinement", "#95a5a6"),
        ("mean_error_deg", "mean", "#4c9be8"),
        ("median_error_deg", "median", "#1abc9c"),
    ]
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=110)
    x = _grouped_bars(
        ax, len(rows), [(name, *_mean_sd(r.get(key) for r in rows), colour) for key, name, colour in keys]
    )
    ax.axhline(5.0, color="#2ecc71", linestyle="--", linewidth=1, label="goal 5°")
    ax.set_xticks(x, labels, fontsize=8)
    top = max([(r.get("before_refinement_mean_deg") or {}).get("mean") or 0 for r in rows] + [10.0])
    return _save(
        fig,
        ax,
        "orientation error (°, up to symmetry)",
        1.25 * top,
        "Orientation recovery on several maps (projections / training steps)",
        "upper left",
        out / "bench_orient_maps.png",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    plots = (
        ("detect.json", plot_detection),
        ("classify.json", plot_classification),
        ("shifted.json", plot_shifted),
        ("segment_domain.json", plot_segment_domain),
        ("orient_maps.json", plot_orientation_maps),
    )
    for name, plot in plots:
        results = json.loads((args.results / name).read_text())
        log.info("wrote %s", plot(results, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
