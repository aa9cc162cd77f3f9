"""Benchmark: subtomogram classification (seed CNN vs. our residual CNN), subdivision, speed.

Data: ``tomolens.simulate.simulate_subtomograms`` on 10 of the 12 real 10 Å maps in
``../shared/data/maps_10A`` (all but 4cr2 and 5mrc, whose radii of 149 Å and 172 Å do
not fit the 320 Å box), 32³ boxes at 10 Å, SNR 0.03 / 0.05 / ∞, split 70/15/15 per
particle (the same particle is in the same split at every SNR).

1. Classification: for every SNR, train the seed's 3D CNN and ResNet3DSmall on the train
   split, early-stop on the validation split, report accuracy and the confusion matrix on
   the test split only.  Each training run has a wall-clock budget (CPU).
2. Subdivision: at SNR 0.05, train ResNet3DSmall on 8 classes (1bxn and 3gl1 left out),
   take its subdivision embedding (forward_with_embedding) of the test split of all 10 classes, cluster (k-means,
   k = 10 and k by silhouette; agglomerative, k = 10) and report the adjusted Rand index
   against the true classes, and for each left-out class the share of its particles in
   its majority cluster and that cluster's purity.
3. Speed: subtomograms per second (extraction from a memory-mapped tomogram +
   classification) with 2 torch threads.

Writes benchmarks/results/classify.json and prints a table.  Run:
``python benchmarks/bench_classify.py --n-per-class 100``
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
CLASSES = ["1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1"]
LEFT_OUT = ["1bxn", "3gl1"]
SNRS = (0.03, 0.05, math.inf)
GOALS = {"0.03": 0.95, "0.05": 0.96, "inf": 0.99}
SEED_PAPER = {"0.03": 0.871, "0.05": 0.882, "inf": 0.906}

log = logging.getLogger("bench_classify")


def simulate(out: Path, n_per_class: int, seed: int) -> Path:
    from tomolens.jobs import run_job
    from tomolens.simulate import SubtomogramConfig, simulate_subtomograms

    if (out / "dataset.json").is_file():
        log.info("reusing dataset %s", out)
        return out
    cfg = SubtomogramConfig(templates=[str(MAPS / f"{c}.mrc") for c in CLASSES], n_per_class=n_per_class,
                            box=32, voxel_size_A=10.0, snrs=SNRS, crowding=False, seed=seed)
    t0 = time.monotonic()
    run_job(simulate_subtomograms(cfg, out),
            on_progress=lambda p: p.done % 100 == 0 and log.info("simulated %d/%d", p.done, p.total))
    log.info("simulation took %.0f s", time.monotonic() - t0)
    return out


def train_eval(ds, arch: str, minutes: float, seed: int, classes=None, width: int = 16) -> dict:
    from tomolens.classify.networks import count_parameters
    from tomolens.classify.train import TrainConfig, evaluate, train_classifier
    from tomolens.jobs import run_job

    names = ds.class_names
    tr, va, te = ds.train, ds.val, ds.test
    if classes is not None:  # keep only these classes, re-indexed
        keep = [names.index(c) for c in classes]
        remap = {old: new for new, old in enumerate(keep)}

        def sub(split):
            m = np.isin(split.y, keep)
            return split.x[m], np.array([remap[v] for v in split.y[m]], np.int64)
        (xtr, ytr), (xva, yva), (xte, yte) = sub(tr), sub(va), sub(te)
        names = list(classes)
    else:
        xtr, ytr, xva, yva, xte, yte = tr.x, tr.y, va.x, va.y, te.x, te.y
    cfg = TrainConfig(architecture=arch, epochs=40, patience=6, batch_size=32,
                      learning_rate=2e-3 if arch == "resnet" else 1e-3, seed=seed, device="cpu",
                      max_minutes=minutes, arch_kwargs={"width": width} if arch == "resnet" else {})
    t0 = time.monotonic()
    result = run_job(train_classifier(xtr, ytr, xva, yva, names, cfg),
                     on_progress=lambda p: log.info("%s %s", arch, p.message))
    seconds = time.monotonic() - t0
    out = {"architecture": arch, "parameters": count_parameters(result.model), "train_n": int(len(ytr)),
           "val_n": int(len(yva)), "epochs_run": len(result.history), "best_epoch": result.best_epoch,
           "train_seconds": round(seconds, 1), "budget_minutes": minutes,
           "stopped_by": "early stopping" if len(result.history) < cfg.epochs and
           seconds < 60 * minutes else ("time budget" if seconds >= 60 * minutes else "epoch limit")}
    if classes is None:
        out["test"] = evaluate(result.model, xte, yte, names)
    return out, result.model


def subdivision(ds, minutes: float, seed: int, width: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from tomolens.classify.train import predict_logits
    from tomolens.cluster import cluster_features

    known = [c for c in ds.class_names if c not in LEFT_OUT]
    info, model = train_eval(ds, "resnet", minutes, seed, classes=known, width=width)
    _, feats = predict_logits(model, ds.test.x, 64, with_features=True)
    truth = ds.test.y
    runs = {}
    for label, kwargs in {"kmeans_k10": dict(method="kmeans", n_clusters=10),
                          "kmeans_silhouette": dict(method="kmeans", n_clusters=0, k_max=14),
                          "agglomerative_k10": dict(method="agglomerative", n_clusters=10)}.items():
        cl = cluster_features(feats, seed=seed, **kwargs)
        left = {}
        for name in LEFT_OUT:
            c = ds.class_names.index(name)
            members = cl.labels[truth == c]
            major = int(np.bincount(members[members >= 0]).argmax())
            in_major = float(np.mean(members == major))
            purity = float(np.mean(truth[cl.labels == major] == c))
            left[name] = {"majority_cluster": major, "share_in_majority": round(in_major, 3),
                          "majority_cluster_purity": round(purity, 3)}
        runs[label] = {"k": cl.n_clusters, "ari": round(float(adjusted_rand_score(truth, cl.labels)), 4),
                       "left_out": left}
    return {"snr": 0.05, "classifier": info, "classes_trained": known, "left_out": LEFT_OUT,
            "test_n": int(len(truth)), "clustering": runs}


def throughput(n_points: int = 1000, width: int = 16) -> dict:
    import torch

    from tomolens.classify.data import ClassDataset  # noqa: F401  (import cost outside the timing)
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
            net = cls(n_classes=10, box=32, **({"width": width} if arch == "resnet" else {}))
            card = ModelCard(name=arch, task="classify", architecture=f"tomolens.classify.networks:{cls.__name__}",
                             arch_kwargs={"n_classes": 10, "box": 32, **({"width": width} if arch == "resnet" else {})},
                             classes=CLASSES, voxel_size_A=10.0,
                             patch_size=[32, 32, 32])
            save_model(net, card, Path(tmp) / f"{arch}.pt")
            n = n_points if arch == "resnet" else max(8, n_points // 10)
            t0 = time.monotonic()
            run_job(classify_points(tomo, pts[:n], Path(tmp) / f"{arch}.pt", 10.0, device="cpu"))
            out[arch] = round(n / (time.monotonic() - t0), 1)
    out["points_timed"] = {"resnet": n_points, "seed": max(8, n_points // 10)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--resnet-minutes", type=float, default=5.0, help="training budget per run")
    parser.add_argument("--seed-minutes", type=float, default=6.0, help="training budget per seed-CNN run")
    parser.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "tomolens_bench_classify"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-snrs", default="0.03,0.05,inf",
                        help="SNRs at which the (slow) seed CNN is trained; empty for none")
    parser.add_argument("--resnet-width", type=int, default=16, help="ResNet3DSmall first-stage channels")
    parser.add_argument("--seed-only", action="store_true",
                        help="add seed-CNN rows to the existing results JSON (same data), skip everything else")
    parser.add_argument("--subdivision-only", action="store_true",
                        help="redo only the subdivision part in the existing results JSON (same data)")
    parser.add_argument("--throughput-points", type=int, default=400)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not MAPS.is_dir():
        print(f"reference maps not found at {MAPS}", file=sys.stderr)
        return 1
    import torch

    from tomolens.classify.data import load_dataset
    from tomolens.simulate.subtomograms import snr_name

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    t_start = time.monotonic()
    data = simulate(Path(args.data), args.n_per_class, args.seed)
    results = {"machine": "2-core CPU, no GPU", "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
               "python": platform.python_version(),
               "torch": torch.__version__, "classes": CLASSES, "maps_not_used": ["4cr2", "5mrc"],
               "n_per_class_per_snr": args.n_per_class, "resnet_width": args.resnet_width,
               "budgets_minutes": {"resnet": args.resnet_minutes, "seed": args.seed_minutes}, "subtomograms_per_snr": 10 * args.n_per_class,
               "box": 32, "voxel_size_A": 10.0, "crowding": False, "split": [0.7, 0.15, 0.15],
               "goals": GOALS, "seed_paper_accuracy": SEED_PAPER, "classification": {}}
    if args.seed_only or args.subdivision_only:
        results = json.loads((ROOT / "benchmarks" / "results" / "classify.json").read_text())
    if args.seed_only:
        results["budgets_minutes"]["seed_later_runs"] = args.seed_minutes
    if args.subdivision_only:
        t0 = time.monotonic()
        results["subdivision"] = subdivision(load_dataset(data / "0.05"), args.resnet_minutes, args.seed,
                                             args.resnet_width)
        results["subdivision"]["seconds"] = round(time.monotonic() - t0)
        results["subdivision"]["command"] = "python benchmarks/bench_classify.py " + " ".join(sys.argv[1:])
        _write(results)
        _print(results)
        return 0
    # ResNet at every SNR, subdivision and speed first; the slow seed CNN last
    for snr in () if args.seed_only else SNRS:
        key = snr_name(snr)
        row = results["classification"].setdefault(key, {})
        row["resnet"], _ = train_eval(load_dataset(data / key), "resnet", args.resnet_minutes, args.seed,
                                      width=args.resnet_width)
        log.info("SNR %s resnet test accuracy %.3f", key, row["resnet"]["test"]["accuracy"])
        _write(results)
    if not args.seed_only:
        results["subdivision"] = subdivision(load_dataset(data / "0.05"), args.resnet_minutes, args.seed,
                                             args.resnet_width)
        _write(results)
        results["subtomograms_per_second"] = throughput(args.throughput_points, args.resnet_width)
        _write(results)
    for snr in [float(v) for v in args.seed_snrs.split(",") if v.strip()]:
        key = snr_name(snr)
        row = results["classification"][key]
        row["seed"], _ = train_eval(load_dataset(data / key), "seed", args.seed_minutes, args.seed)
        log.info("SNR %s seed test accuracy %.3f", key, row["seed"]["test"]["accuracy"])
        _write(results)
    results["total_seconds" if not args.seed_only else "seed_only_seconds"] = round(time.monotonic() - t_start)
    _write(results)
    _print(results)
    return 0


def _write(results: dict) -> None:
    out = ROOT / "benchmarks" / "results" / "classify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "src"))
    from tomolens.io.atomic import atomic_path

    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(results, indent=2))


def _print(r: dict) -> None:
    print(f"\n{r['subtomograms_per_snr']} subtomograms per SNR (10 classes), test split only")
    print(f"{'SNR':>5} | {'seed paper':>10} | {'seed CNN (ours)':>15} | {'ResNet3DSmall':>13} | goal")
    for key, row in r["classification"].items():
        seed = row.get("seed", {}).get("test", {}).get("accuracy")
        res = row["resnet"]["test"]["accuracy"]
        print(f"{key:>5} | {SEED_PAPER[key]:>10.3f} | {'not run' if seed is None else f'{seed:.3f}':>15} | "
              f"{res:>13.3f} | {GOALS[key]:.2f}")
    sub = r.get("subdivision")
    if sub:
        for name, run in sub["clustering"].items():
            print(f"subdivision {name}: k={run['k']} ARI {run['ari']:.3f}  left out: {run['left_out']}")
    if "subtomograms_per_second" in r:
        print(f"subtomograms/s (2 threads): {r['subtomograms_per_second']}")


if __name__ == "__main__":
    sys.exit(main())
