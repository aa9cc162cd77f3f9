"""Benchmark: subdivision of structures never seen in training — embedding vs classifier vs PCA.

Data: five structures no shipped model was trained on — the four held-out maps of
``../shared/data/maps_10A`` (:data:`tomolens.simulate.domain.HELD_OUT_MAPS`: 1qvr, 3cf3,
3qm1, 5mrc; 5mrc is larger than the 320 Å box and is cropped by it) and one pseudo-protein
of the held-out ``branched`` family — simulated by the project's *classification* data
generator (:func:`tomolens.simulate.simulate_subtomograms`: crowded scenes packed with the
same five structures, missing wedge + CTF, wedge-restricted noise; a different code path
from the embedding's training renderer), 32³ boxes at 10 Å, in two imaging domains:

- ``in_domain``: tilt ±60°, defocus 3 µm (inside the training ranges);
- ``shifted``: tilt ±35°, defocus 9 µm, B-factor 200 Å² (tilt and defocus outside the
  training ranges of ±45-70° and 1-8 µm);

at SNR 0.03, 0.05 and ∞, and three data seeds.  Each cube is fed bright (the polarity the
pipeline corrects to) and, for the embedding only, also dark (inverted) as-is.

Features clustered with the same pipeline as the Subdivide widget
(:func:`tomolens.cluster.cluster_features`: standardise, PCA to ≤ 32, k-means with k = 5;
with ``--silhouette`` also with k chosen by the silhouette score):

- ``embedding``: the shipped ``embed_default`` (and its training snapshots, for the step
  budgets, when their ``.stepN.pt`` files are given with ``--snapshots``);
- ``classifier``: the shipped classifier's subdivision features (``forward_with_embedding``);
- ``pca_raw``: the raw voxels of the same cubes.

Reports the adjusted Rand index (ARI) against the true structure, mean ± std over seeds.
Writes benchmarks/results/embed.json.  Run (about 10 min on one core):
``python benchmarks/bench_embed.py --n-per-class 40``
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT.parent / "shared" / "data" / "maps_10A"
DOMAINS = {
    "in_domain": {"tilt_range_deg": 60.0, "defocus_um": 3.0, "b_factor_A2": 0.0},
    "shifted": {"tilt_range_deg": 35.0, "defocus_um": 9.0, "b_factor_A2": 200.0},
}
SNRS = (0.03, 0.05, math.inf)

log = logging.getLogger("bench_embed")


def unseen_templates(folder: Path) -> list[str]:
    """Paths of the five unseen structures (the branched pseudo-protein written as an MRC)."""
    from tomolens.io.mrc import write_mrc
    from tomolens.simulate.domain import HELD_OUT_MAPS
    from tomolens.simulate.pseudoproteins import PseudoProteinSpec, render_pseudoprotein

    folder.mkdir(parents=True, exist_ok=True)
    branched = render_pseudoprotein(PseudoProteinSpec("branched", 18.0, 2020), 10.0)
    path = folder / "branched_18nm.mrc"
    write_mrc(path, branched.density, 10.0)
    return [str(MAPS / f"{m}.mrc") for m in HELD_OUT_MAPS] + [str(path)]


def simulate(out: Path, templates: list[str], domain: str, n_per_class: int, seed: int) -> Path:
    from tomolens.jobs import run_job
    from tomolens.simulate import SubtomogramConfig, simulate_subtomograms

    if (out / "dataset.json").is_file():
        return out
    cfg = SubtomogramConfig(
        templates=templates,
        n_per_class=n_per_class,
        box=32,
        voxel_size_A=10.0,
        snrs=SNRS,
        crowding=True,
        crowding_fraction=0.15,
        split=(0.98, 0.01, 0.01),
        seed=seed,
        **DOMAINS[domain],
    )
    run_job(simulate_subtomograms(cfg, out))
    return out


def load_all(folder: Path, snr_key: str) -> tuple[np.ndarray, np.ndarray]:
    """All cubes of one SNR (the splits pooled: nothing here was trained on)."""
    from tomolens.simulate.subtomograms import load_subtomogram_split

    xs, ys = [], []
    for split in ("train", "val", "test"):
        x, y, _ = load_subtomogram_split(folder / snr_key / f"{split}.npz")
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def ari_of(features: np.ndarray, truth: np.ndarray, k: int, seed: int, silhouette: bool = False) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from tomolens.cluster import cluster_features

    fixed = cluster_features(features, "kmeans", n_clusters=k, seed=seed)
    out = {"ari_k_true": float(adjusted_rand_score(truth, fixed.labels))}
    if silhouette:
        auto = cluster_features(features, "kmeans", n_clusters=0, k_max=10, seed=seed)
        out.update(
            {"ari_k_silhouette": float(adjusted_rand_score(truth, auto.labels)), "k_silhouette": auto.n_clusters}
        )
    return out


def feature_sets(x: np.ndarray, embedders: dict, classifier) -> dict:
    from tomolens.classify.predict import classify_subtomograms
    from tomolens.embed.predict import embed_subtomograms
    from tomolens.jobs import run_job

    out = {"pca_raw": x.reshape(len(x), -1)}
    _, out["classifier"] = run_job(classify_subtomograms(classifier, x))
    for name, net in embedders.items():
        out[name] = run_job(embed_subtomograms(net, x))
        if name == "embedding":
            out["embedding_dark_input"] = run_job(embed_subtomograms(net, -x))
    return out


def load_embedders(model: str, snapshots: list[str]) -> dict:
    import torch

    from tomolens.embed.network import EmbedNet3D
    from tomolens.models.card import load_model

    net, card = load_model(model, expected_task="embed")
    embedders = {"embedding": net}
    for path in snapshots:
        snap = EmbedNet3D(**card.arch_kwargs)
        snap.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        embedders[f"embedding_{Path(path).name.removesuffix('.pt')}"] = snap.eval()
    return embedders, card


def summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {
        k: {
            "mean": round(float(np.mean([r[k] for r in runs])), 3),
            "std": round(float(np.std([r[k] for r in runs])), 3),
        }
        for k in keys
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-per-class", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="embed_default", help="embedding model (shipped name or .pt)")
    parser.add_argument("--classifier", default="classify_phantoms_resnet")
    parser.add_argument("--snapshots", nargs="*", default=[], help="OUT.stepN.pt weights of the same training")
    parser.add_argument("--silhouette", action="store_true", help="also k chosen by silhouette (slow)")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "tomolens_bench_embed"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not MAPS.is_dir():
        print(f"reference maps not found at {MAPS}", file=sys.stderr)
        return 1
    import torch

    from tomolens.models.card import load_model
    from tomolens.simulate.subtomograms import snr_name

    torch.set_num_threads(1)
    t0 = time.monotonic()
    data = Path(args.data)
    templates = unseen_templates(data / "templates")
    embedders, card = load_embedders(args.model, args.snapshots)
    classifier, ccard = load_model(args.classifier, expected_task="classify")
    seeds = [int(s) for s in args.seeds.split(",")]
    results = {
        "machine": "2-core CPU shared with other jobs, 1 torch thread, no GPU",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "structures": [Path(t).stem for t in templates],
        "never_trained_on": "all five: held-out maps and a pseudo-protein of the held-out family",
        "n_per_class": args.n_per_class,
        "seeds": seeds,
        "domains": DOMAINS,
        "box": 32,
        "voxel_size_A": 10.0,
        "clustering": "cluster_features: standardise, PCA <= 32, k-means (k = 5; with --silhouette also k by "
        "silhouette over 2..10)",
        "embedding_model": {
            "name": card.name,
            "steps": card.extra.get("steps"),
            "training_seconds": card.extra.get("training_seconds"),
        },
        "classifier_model": ccard.name,
        "results": {},
        "command": "python benchmarks/bench_embed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    for domain in DOMAINS:
        for snr in SNRS:
            key = f"{domain}/snr_{snr_name(snr)}"
            per_seed = {}
            for seed in seeds:
                folder = simulate(
                    data / f"{domain}_s{seed}_n{args.n_per_class}", templates, domain, args.n_per_class, seed
                )
                x, y = load_all(folder, snr_name(snr))
                for name, feats in feature_sets(x, embedders, classifier).items():
                    for metric, value in ari_of(feats, y, 5, seed, args.silhouette).items():
                        per_seed.setdefault(f"{name}.{metric}", []).append(value)
            results["results"][key] = {
                k: {
                    "mean": round(float(np.mean(v)), 3),
                    "std": round(float(np.std(v)), 3),
                    "per_seed": [round(float(a), 3) for a in v],
                }
                for k, v in per_seed.items()
            }
            log.info("%s: %s", key, {k: v["mean"] for k, v in results["results"][key].items() if "ari_k_true" in k})
    results["total_seconds"] = round(time.monotonic() - t0)
    _write(results, Path(args.out))
    _print(results)
    return 0


def _write(results: dict, out: Path) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from tomolens.io.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))


def _print(r: dict) -> None:
    names = sorted({k.rsplit(".", 1)[0] for row in r["results"].values() for k in row})
    print(f"\nARI (k-means, k = 5) on 5 unseen structures, mean ± std over seeds {r['seeds']}")
    print(f"{'condition':<22}" + "".join(f" | {n:>22}" for n in names))
    for key, row in r["results"].items():
        cells = [f"{row[f'{n}.ari_k_true']['mean']:.3f} ± {row[f'{n}.ari_k_true']['std']:.3f}" for n in names]
        print(f"{key:<22}" + "".join(f" | {c:>22}" for c in cells))


if __name__ == "__main__":
    sys.exit(main())
