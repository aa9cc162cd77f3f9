"""Benchmark: subtomogram classification over several seeds, with a step budget; subdivision; speed.

Data: ``tomolens.simulate.simulate_subtomograms`` on 10 of the 12 real 10 Å maps in
``../shared/data/maps_10A`` (all but 4cr2 and 5mrc, whose radii of 149 Å and 172 Å plus the
20 Å jitter do not fit the 160 Å half-box: the simulator refuses them), 32³ boxes at 10 Å,
SNR 0.03 / 0.05 / ∞, split 70/15/15 per particle (the same particle is in the same split at
every SNR).

Every figure is measured once per seed (``--seeds``, default 0,1,2): the seed draws the
dataset (its own simulation) *and* the network's initial weights and batch order.  Each
figure is reported as mean ± sample standard deviation over the seeds, with the per-seed
values in the JSON (:func:`tomolens.evaluate.seed_summary`).

The training budget is a number of epochs (``--epochs``; the learning-rate schedule follows
optimiser steps) with early stopping on the validation split (median of the last
``--stop-window`` losses, never before ``--min-epochs``); there is no wall-clock limit, so
the same command gives the same figures on the same machine whatever its load (torch runs
with ``--threads`` threads; 1 by default).

Parts (``--parts``):

1. ``classify``: for every SNR and seed, train ResNet3DSmall on the train split, early-stop
   on the validation split, report accuracy and the confusion matrix on the test split only.
2. ``seedcnn``: the same with the seed paper's 3D CNN (slow; not in the default parts).
3. ``subdivision``: at SNR 0.05, train ResNet3DSmall on 8 classes (1bxn and 3gl1 left out),
   cluster its embedding of the test split of all 10 classes (k-means k = 10 and k by
   silhouette; agglomerative k = 10); adjusted Rand index against the true classes.
4. ``speed``: subtomograms per second (extraction from a memory-mapped tomogram +
   classification) with 2 torch threads (a speed, not an accuracy: one run).

Writes benchmarks/results/classify.json and prints a table.  The figures of the docs come
from it (markers, see benchmarks/README.md).  Run::

    python benchmarks/bench_classify.py                   # the defaults of the published figures
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT.parent / "shared" / "data" / "maps_10A"
CLASSES = ["1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1"]
LEFT_OUT = ["1bxn", "3gl1"]
SNRS = (0.03, 0.05, math.inf)
SEED_PAPER = {"0.03": 0.871, "0.05": 0.882, "inf": 0.906}
PARTS = ("classify", "seedcnn", "subdivision", "speed")

log = logging.getLogger("bench_classify")


def simulate(out: Path, n_per_class: int, seed: int) -> Path:
    """The dataset of one seed (reused when ``out`` already holds it)."""
    from tomolens.jobs import run_job
    from tomolens.simulate import SubtomogramConfig, simulate_subtomograms

    cfg = SubtomogramConfig(
        templates=[str(MAPS / f"{c}.mrc") for c in CLASSES],
        n_per_class=n_per_class,
        box=32,
        voxel_size_A=10.0,
        snrs=SNRS,
        crowding=False,
        seed=seed,
    )
    meta = out / "dataset.json"
    if meta.is_file() and json.loads(meta.read_text())["config"] == cfg.to_dict():
        log.info("reusing dataset %s", out)
        return out
    t0 = time.monotonic()
    run_job(
        simulate_subtomograms(cfg, out),
        on_progress=lambda p: p.done % 200 == 0 and log.info("seed %d: simulated %d/%d", seed, p.done, p.total),
    )
    log.info("seed %d: simulation took %.0f s", seed, time.monotonic() - t0)
    return out


def _subset(ds, classes):
    """(x, y) of train, val and test keeping only ``classes``, re-indexed."""
    keep = [ds.class_names.index(c) for c in classes]
    remap = {old: new for new, old in enumerate(keep)}
    out = []
    for split in (ds.train, ds.val, ds.test):
        m = np.isin(split.y, keep)
        out.append((split.x[m], np.array([remap[v] for v in split.y[m]], np.int64)))
    return out


def train_eval(ds, arch: str, args, seed: int, classes=None) -> tuple[dict, object]:
    """Train one network with the step budget of ``args``; its record and the model."""
    from tomolens.classify.networks import count_parameters
    from tomolens.classify.train import TrainConfig, evaluate, train_classifier
    from tomolens.jobs import run_job

    names = list(classes) if classes is not None else ds.class_names
    (xtr, ytr), (xva, yva), (xte, yte) = _subset(ds, names)
    cfg = TrainConfig(
        architecture=arch,
        epochs=args.epochs,
        patience=args.patience,
        min_epochs=args.min_epochs,
        stop_window=args.stop_window,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate if arch == "resnet" else args.learning_rate / 2,
        seed=seed,
        device="cpu",
        arch_kwargs={"width": args.resnet_width} if arch == "resnet" else {},
    )
    t0 = time.monotonic()
    result = run_job(
        train_classifier(xtr, ytr, xva, yva, names, cfg),
        on_progress=lambda p: log.info("seed %d %s %s", seed, arch, p.message),
    )
    out = {
        "seed": seed,
        "architecture": arch,
        "parameters": count_parameters(result.model),
        "train_n": int(len(ytr)),
        "val_n": int(len(yva)),
        "best_epoch": result.best_epoch,
        "budget": result.budget,
        "train_seconds": round(time.monotonic() - t0, 1),
    }
    if classes is None:
        out["test"] = evaluate(result.model, xte, yte, names)
    return out, result.model


def subdivision_run(ds, args, seed: int) -> dict:
    """One seed's subdivision: a classifier of 8 classes, its embedding of all 10 clustered."""
    from sklearn.metrics import adjusted_rand_score

    from tomolens.classify.train import predict_logits
    from tomolens.cluster import cluster_features

    known = [c for c in ds.class_names if c not in LEFT_OUT]
    info, model = train_eval(ds, "resnet", args, seed, classes=known)
    _, feats = predict_logits(model, ds.test.x, 64, with_features=True)
    truth = ds.test.y
    runs = {}
    for label, kwargs in {
        "kmeans_k10": dict(method="kmeans", n_clusters=10),
        "kmeans_silhouette": dict(method="kmeans", n_clusters=0, k_max=14),
        "agglomerative_k10": dict(method="agglomerative", n_clusters=10),
    }.items():
        cl = cluster_features(feats, seed=seed, **kwargs)
        left = {}
        for name in LEFT_OUT:
            c = ds.class_names.index(name)
            members = cl.labels[truth == c]
            major = int(np.bincount(members[members >= 0]).argmax())
            left[name] = {
                "share_in_majority": round(float(np.mean(members == major)), 3),
                "majority_cluster_purity": round(float(np.mean(truth[cl.labels == major] == c)), 3),
            }
        runs[label] = {"k": cl.n_clusters, "ari": float(adjusted_rand_score(truth, cl.labels)), "left_out": left}
    return {"seed": seed, "classifier": info, "test_n": int(len(truth)), "clustering": runs}


def summarise_subdivision(runs: list[dict]) -> dict:
    from tomolens.evaluate import seed_summary

    methods = runs[0]["clustering"]
    return {
        "snr": 0.05,
        "classes_trained": [c for c in CLASSES if c not in LEFT_OUT],
        "left_out": LEFT_OUT,
        "ari": {
            m: seed_summary([r["clustering"][m]["ari"] for r in runs], scale=1.0, unit="", decimals=3) for m in methods
        },
        "runs": runs,
    }


def throughput(n_points: int = 400, width: int = 16) -> dict:
    import torch

    from tomolens.classify.networks import ResNet3DSmall, SeedCNN3D
    from tomolens.classify.predict import classify_points
    from tomolens.jobs import run_job
    from tomolens.models.card import ModelCard, save_model

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tomo_path = Path(tmp) / "tomo.npy"
        np.save(tomo_path, rng.normal(size=(200, 400, 400)).astype(np.float32))
        tomo = np.load(tomo_path, mmap_mode="r")
        pts = rng.uniform([16, 16, 16], [184, 384, 384], (n_points, 3))
        for arch, cls in (("resnet", ResNet3DSmall), ("seed", SeedCNN3D)):
            kwargs = {"n_classes": 10, "box": 32, **({"width": width} if arch == "resnet" else {})}
            card = ModelCard(
                name=arch,
                task="classify",
                architecture=f"tomolens.classify.networks:{cls.__name__}",
                arch_kwargs=kwargs,
                classes=CLASSES,
                voxel_size_A=10.0,
                patch_size=[32, 32, 32],
            )
            save_model(cls(**kwargs), card, Path(tmp) / f"{arch}.pt")
            n = n_points if arch == "resnet" else max(8, n_points // 10)
            t0 = time.monotonic()
            run_job(classify_points(tomo, pts[:n], Path(tmp) / f"{arch}.pt", 10.0, device="cpu"))
            out[arch] = round(n / (time.monotonic() - t0), 1)
    out["points_timed"] = {"resnet": n_points, "seed": max(8, n_points // 10)}
    out["threads"] = 2
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="data + initialisation seeds (at least 3 for a spread)")
    parser.add_argument("--n-per-class", type=int, default=200, help="subtomograms per class and SNR")
    parser.add_argument("--epochs", type=int, default=7, help="training budget in epochs (passes over train)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak rate (the seed CNN: half)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-epochs", type=int, default=5)
    parser.add_argument("--stop-window", type=int, default=3)
    parser.add_argument("--resnet-width", type=int, default=8, help="ResNet3DSmall first-stage channels")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of training (fixed: figures reproduce only with the same count)",
    )
    parser.add_argument("--parts", default="classify", help=f"comma-separated of {', '.join(PARTS)}")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "tomolens_bench_classify_seeds"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "classify.json"))
    args = parser.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.part_set = {p.strip() for p in args.parts.split(",") if p.strip()}
    if args.part_set - set(PARTS):
        parser.error(f"--parts: unknown {sorted(args.part_set - set(PARTS))}; choose from {', '.join(PARTS)}")
    if len(args.seed_list) < 3 and args.part_set - {"speed"}:
        parser.error("--seeds: accuracy figures need at least 3 seeds (mean ± spread)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not MAPS.is_dir():
        print(f"reference maps not found at {MAPS}", file=sys.stderr)
        return 1
    import torch

    from tomolens.classify.data import load_dataset
    from tomolens.evaluate import seed_summary
    from tomolens.simulate.subtomograms import snr_name

    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    t_start, cpu_start = time.monotonic(), time.process_time()
    steps_per_epoch = math.ceil(round(0.7 * 10 * args.n_per_class) / args.batch_size)
    command = "python benchmarks/bench_classify.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if results.get("seeds") != args.seed_list or results.get("n_per_class_per_snr") != args.n_per_class:
        results = {}  # figures of other data are not kept beside these
    results.update(
        {
            "benchmark": "classify",
            "machine": f"2-core CPU, no GPU ({platform.machine()})",
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
            "classes": CLASSES,
            "maps_not_used": ["4cr2", "5mrc"],
            "seeds": args.seed_list,
            "seed_meaning": "each seed simulates its own dataset and draws the initial weights and batch order",
            "spread": "± is the sample standard deviation (ddof 1) over the seeds; per_seed lists every value",
            "n_per_class_per_snr": args.n_per_class,
            "subtomograms_per_snr": 10 * args.n_per_class,
            "box": 32,
            "voxel_size_A": 10.0,
            "crowding": False,
            "split": [0.7, 0.15, 0.15],
            "resnet_width": args.resnet_width,
            "budget": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "steps_per_epoch": steps_per_epoch,
                "max_steps": args.epochs * steps_per_epoch,
                "learning_rate": args.learning_rate,
                "schedule": "10 % warm-up then cosine over the max_steps",
                "patience": args.patience,
                "min_epochs": args.min_epochs,
                "stop_window": args.stop_window,
                "time_limit": None,
            },
            "seed_paper_accuracy": SEED_PAPER,
        }
    )
    results.setdefault("commands", {})[",".join(sorted(args.part_set))] = command
    data = {s: simulate(Path(args.data) / f"seed_{s}", args.n_per_class, s) for s in args.seed_list}
    for arch in [a for part, a in (("classify", "resnet"), ("seedcnn", "seed")) if part in args.part_set]:
        for snr in SNRS:
            key = snr_name(snr)
            runs = []
            for seed in args.seed_list:
                run, _ = train_eval(load_dataset(data[seed] / key), arch, args, seed)
                runs.append(run)
                log.info("SNR %s %s seed %d: test accuracy %.3f", key, arch, seed, run["test"]["accuracy"])
            results.setdefault("classification", {}).setdefault(key, {})[arch] = {
                "accuracy": seed_summary([r["test"]["accuracy"] for r in runs]),
                "runs": runs,
            }
            _write(results, out_path)
    if "subdivision" in args.part_set:
        results["subdivision"] = summarise_subdivision(
            [subdivision_run(load_dataset(data[s] / "0.05"), args, s) for s in args.seed_list]
        )
        _write(results, out_path)
    if "speed" in args.part_set:
        results["subtomograms_per_second"] = throughput(width=args.resnet_width)
    results.setdefault("seconds", {})[",".join(sorted(args.part_set))] = {
        "wall": round(time.monotonic() - t_start),
        "cpu": round(time.process_time() - cpu_start + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime),
    }
    _write(results, out_path)
    _print(results)
    return 0


def _write(results: dict, out: Path) -> None:
    from tomolens.io.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))


def _print(r: dict) -> None:
    print(
        f"\n{r['subtomograms_per_snr']} subtomograms per SNR (10 classes), test split only, "
        f"{len(r['seeds'])} seeds, {r['budget']['epochs']} epochs"
    )
    print(f"{'SNR':>5} | {'seed paper':>10} | {'seed CNN (ours)':>24} | {'ResNet3DSmall':>24}")
    for key, row in r.get("classification", {}).items():
        cells = [row[a]["accuracy"]["text"] if a in row else "not run" for a in ("seed", "resnet")]
        print(f"{key:>5} | {SEED_PAPER[key]:>10.3f} | {cells[0]:>24} | {cells[1]:>24}")
    for name, summary in r.get("subdivision", {}).get("ari", {}).items():
        print(f"subdivision {name}: ARI {summary['text']}")
    if "subtomograms_per_second" in r:
        print(f"subtomograms/s (2 threads): {r['subtomograms_per_second']}")


if __name__ == "__main__":
    sys.exit(main())
