"""Benchmark: unknown detection — known particles flagged (false alarms) and never-seen structures flagged.

Data: ``tomolens.simulate.simulate_subtomograms`` on the 10 real 10 Å maps of
``../shared/data/maps_10A`` that fit a 32³ box at 10 Å (as ``bench_classify.py``), no
crowding, split 70/15/15 per particle.  ``--unseen`` maps (default 1bxn, 3gl1, 3qm1) are
never trained on nor calibrated with: the classifier learns the other 7.

Per seed (data, initialisation and batch order) and SNR, a ResNet3DSmall is trained with
``tomolens.classify.train.train_classifier`` — an epoch budget, early stopping on the
validation split — and saved with ``save_classifier``, which writes the feature statistics
and the threshold (99th percentile of the validation split's distances) to the card exactly
as ``tomolens train --task classify`` does.  The card is read back
(:func:`tomolens.classify.unknown.unknown_model_from_card`) and applied to subtomograms
used neither for training nor for calibration:

- known: the test split of the 7 trained classes → **false-alarm rate** (flagged unknown);
- unseen: every subtomogram of the unseen maps (all splits) → **detection rate**;
- accuracy of the known test particles that remain (not flagged), and of all of them;
- the same two rates at a lower threshold, the validation split's 95th percentile (what a
  user gets with ``unknown_scale`` below 1; ``scale_at_val_q95`` says which);
- per unseen map: the share flagged, and the known class the classifier calls most of it;
- threshold-free: AUROC of ``ood_distance`` known-vs-unseen, beside the AUROC of
  1 − softmax confidence (what the classifier's own probability tells), the unseen
  particles' median confidence, and the AUROC of alternative distances on the same
  features (:func:`alternatives`; the pilot that chose the shipped one used
  ``--seeds 100 --unseen 1qvr,3d2f,3h84``, other data and other unseen maps).

Figures are mean ± sample standard deviation over ``--seeds`` (per-seed values in the JSON).
Writes ``benchmarks/results/unknown.json`` and prints a table.  Run::

    python benchmarks/bench_unknown.py            # the defaults of the published figures
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classify import CLASSES, ROOT, _write, simulate  # noqa: E402

UNSEEN = ["1bxn", "3gl1", "3qm1"]

log = logging.getLogger("bench_unknown")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (data + initialisation)")
    p.add_argument("--snrs", default="inf,0.05", help="comma-separated SNRs among 0.03, 0.05, inf (noise-free)")
    p.add_argument("--data", default="", help="folder for the simulated datasets, reused (default: a temporary one)")
    p.add_argument("--unseen", default=",".join(UNSEEN), help="maps held out as never-seen structures")
    p.add_argument("--n-per-class", type=int, default=80, help="subtomograms per map")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--width", type=int, default=16, help="ResNet3DSmall width")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "unknown.json"))
    return p.parse_args(argv)


def _largest_share(predicted: np.ndarray, names: list[str]) -> dict:
    counts = np.bincount(predicted, minlength=len(names))
    return {"class": names[int(counts.argmax())], "share": float(counts.max() / max(len(predicted), 1))}


def _auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    scores = np.concatenate([negatives, positives])
    return float(roc_auc_score(np.r_[np.zeros(len(negatives)), np.ones(len(positives))], scores))


def run_one(ds, unseen: list[str], args, seed: int, tmp: Path) -> dict:
    """Train on the known classes of ``ds``; the card's unknown detection on test and unseen subtomograms."""
    from tomolens.classify.predict import softmax
    from tomolens.classify.train import TrainConfig, predict_logits, save_classifier, train_classifier
    from tomolens.classify.unknown import unknown_model_from_card
    from tomolens.jobs import run_job
    from tomolens.models.card import load_model

    known = [c for c in ds.class_names if c not in unseen]
    known_ids = [ds.class_names.index(c) for c in known]
    remap = np.full(len(ds.class_names), -1)
    remap[known_ids] = np.arange(len(known))

    def part(split, seen: bool):
        m = np.isin(split.y, known_ids) == seen
        return split.x[m], remap[split.y[m]]

    (xtr, ytr), (xva, yva), (xte, yte) = (part(s, True) for s in (ds.train, ds.val, ds.test))
    x_unseen = np.concatenate([part(s, False)[0] for s in (ds.train, ds.val, ds.test)])
    y_unseen = np.concatenate([s.y[~np.isin(s.y, known_ids)] for s in (ds.train, ds.val, ds.test)])
    cfg = TrainConfig(
        epochs=args.epochs,
        patience=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=seed,
        device="cpu",
        arch_kwargs={"width": args.width},
    )
    t0 = time.monotonic()
    result = run_job(train_classifier(xtr, ytr, xva, yva, known, cfg))
    path = save_classifier(result, str(tmp / f"seed{seed}.pt"), known, 10.0)[0]
    model, card = load_model(path, expected_task="classify")
    stats, note = unknown_model_from_card(card)
    if stats is None:
        raise RuntimeError(note)
    seconds = time.monotonic() - t0
    out, feats = {}, {}
    for name, x in (("train", xtr), ("val", xva), ("known", xte), ("unseen", x_unseen)):
        logits, feats[name] = predict_logits(model, x, 64, with_features=True)
        out[name] = (softmax(logits.astype(np.float64)), stats.distances(feats[name]))
    (p_known, d_known), (p_unseen, d_unseen) = out["known"], out["unseen"]
    flag_known, flag_unseen = d_known > stats.threshold, d_unseen > stats.threshold
    q95 = float(np.quantile(out["val"][1], 0.95))  # a lower threshold a user can set with unknown_scale
    correct = p_known.argmax(1) == yte
    return {
        "seed": seed,
        "train_n": int(len(ytr)),
        "calibration_n": int(len(yva)),
        "known_test_n": int(len(yte)),
        "unseen_n": int(len(x_unseen)),
        "best_epoch": result.best_epoch,
        "train_seconds": round(seconds, 1),
        "threshold": stats.threshold,
        "false_alarm_rate": float(flag_known.mean()),
        "detection_rate": float(flag_unseen.mean()),
        "detection_rate_per_map": {
            ds.class_names[c]: float(flag_unseen[y_unseen == c].mean()) for c in np.unique(y_unseen)
        },
        "called_as_per_map": {  # what the classifier says the unseen particles are (the largest share)
            ds.class_names[c]: _largest_share(p_unseen[y_unseen == c].argmax(1), known) for c in np.unique(y_unseen)
        },
        "accuracy_known_all": float(correct.mean()),
        "accuracy_known_kept": float(correct[~flag_known].mean()) if (~flag_known).any() else math.nan,
        "scale_at_val_q95": q95 / stats.threshold,
        "false_alarm_rate_q95": float(np.mean(d_known > q95)),
        "detection_rate_q95": float(np.mean(d_unseen > q95)),
        "auroc_distance": _auroc(d_known, d_unseen),
        "auroc_confidence": _auroc(-p_known.max(1), -p_unseen.max(1)),
        "median_confidence_unseen": float(np.median(p_unseen.max(1))),
        "alternatives_auroc": alternatives(feats, ytr, yva, len(known), 4 * args.width),
        "card_floats": int(sum(np.asarray(v).size for v in card.extra["unknown"].values() if isinstance(v, list))),
    }


def alternatives(feats: dict, y_train: np.ndarray, y_val: np.ndarray, n_classes: int, last: int) -> dict:
    """Threshold-free AUROC (known test vs unseen) of other distances on the same features.

    ``rank_K``: the shipped statistics with K leading eigenvectors (``rank_full``: the whole
    shrunk covariance, too large for a card); ``last_stage``: only the ``last`` features of
    the final stage (the classifier layer's input) instead of all three stages;
    ``no_scales``: low rank without the per-feature scales; ``cosine``: 1 − the largest cosine
    similarity to a class mean.
    """
    from tomolens.classify.unknown import fit_unknown_model

    out = {}
    dim = feats["train"].shape[1]
    for name, rank, cols in (
        ("rank_4", 4, slice(None)),
        ("rank_16", 16, slice(None)),
        ("rank_32", 32, slice(None)),
        ("rank_full", dim, slice(None)),
        ("last_stage", 16, slice(dim - last, None)),
    ):
        model = fit_unknown_model(feats["train"][:, cols], y_train, n_classes, feats["val"][:, cols], y_val, rank=rank)
        out[name] = _auroc(model.distances(feats["known"][:, cols]), model.distances(feats["unseen"][:, cols]))
    flat = fit_unknown_model(feats["train"], y_train, n_classes, feats["val"], y_val, scale_features=False)
    out["no_scales"] = _auroc(flat.distances(feats["known"]), flat.distances(feats["unseen"]))
    means = np.stack([feats["train"][y_train == c].mean(0) for c in range(n_classes)])
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)

    def cosine(f):
        return 1 - np.max(f @ unit.T / np.linalg.norm(f, axis=1, keepdims=True).clip(1e-12), axis=1)

    out["cosine"] = _auroc(cosine(feats["known"]), cosine(feats["unseen"]))
    return out


FIGURES = {
    "false_alarm_rate": (100.0, " %", 1),
    "detection_rate": (100.0, " %", 1),
    "false_alarm_rate_q95": (100.0, " %", 1),
    "detection_rate_q95": (100.0, " %", 1),
    "accuracy_known_all": (100.0, " %", 1),
    "accuracy_known_kept": (100.0, " %", 1),
    "auroc_distance": (1.0, "", 3),
    "auroc_confidence": (1.0, "", 3),
    "median_confidence_unseen": (1.0, "", 2),
}


def main(argv=None) -> int:
    import torch

    from tomolens.classify.data import load_dataset
    from tomolens.evaluate import seed_summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    unseen = args.unseen.split(",")
    t_start, cpu_start = time.monotonic(), time.process_time()
    results = {
        "benchmark": "unknown detection on never-seen structures (bench_unknown.py)",
        "command": "python benchmarks/bench_unknown.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"2-core CPU shared with other jobs, no GPU ({platform.machine()}), {args.threads} torch thread(s)",
        "python": platform.python_version(),
        "known": [c for c in CLASSES if c not in unseen],
        "unseen": unseen,
        "subtomograms_per_map": args.n_per_class,
        "budget": {
            "epochs": args.epochs,
            "width": args.width,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
        "threshold_rule": "99th percentile of the validation split's distance to the nearest class",
        "snr": {},
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = {s: simulate(Path(args.data or tmp) / f"seed_{s}", args.n_per_class, s) for s in seeds}
        for key in args.snrs.split(","):
            runs = [run_one(load_dataset(data[s] / key), unseen, args, s, tmp) for s in seeds]
            for r in runs:
                log.info("SNR %s seed %d: %s", key, r["seed"], {k: r[k] for k in FIGURES})
            results["snr"][key] = {
                **{k: seed_summary([r[k] for r in runs], *v) for k, v in FIGURES.items()},
                "runs": runs,
            }
    results["seconds"] = {
        "wall": round(time.monotonic() - t_start),
        "cpu": round(time.process_time() - cpu_start + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime),
    }
    _write(results, Path(args.out))
    _print(results)
    return 0


def _print(r: dict) -> None:
    print(
        f"\nknown {', '.join(r['known'])}; never seen {', '.join(r['unseen'])}; {len(next(iter(r['snr'].values()))['runs'])} seeds"
    )
    for key, row in r["snr"].items():
        print(f"SNR {key}")
        for name in FIGURES:
            print(f"  {name:>26}: {row[name]['text']}")


if __name__ == "__main__":
    sys.exit(main())
