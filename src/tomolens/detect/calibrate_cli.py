"""CLI: ``tomolens detect-calibrate`` — fit a detector's score calibration on tomograms with known particles.

::

    tomolens detect-calibrate --model runs/detect_domain.pt --data DATASET [DATASET …] --out detect_cal.pt

Each ``DATASET`` is a ``tomolens simulate-dataset`` folder (or any folder of the same layout:
``manifest.json`` and per tomogram ``tomogram.mrc`` + ``particles.csv`` with ``class_name`` and
``radius_A``).  Every tomogram is detected as a user would run it (its own voxel size and
contrast, polarity ``auto``, radius auto, ``min_score`` 0); its candidates are matched one to one
to the macromolecules within half of each one's radius; the calibration and its default
``min_score`` (:func:`tomolens.detect.calibrate.fit_calibration`) go onto a copy of the model,
with the leave-one-tomogram-out figures on its card.  The source model is never modified.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

import numpy as np

from tomolens.cli_progress import run_cli_job

log = logging.getLogger(__name__)


def dataset_runs(model, folders, limit: int = 0, device: str = "cpu", max_shape=(64, 256, 256)):
    """Yield (name, candidates DataFrame, hits, n_true) for every tomogram of the dataset folders.

    ``model`` is a loaded (network, card) pair whose card has no calibration (raw scores).
    ``max_shape``: the largest part of a tomogram detected, in voxels of the model's size (its
    centre, particles whose centre lies in it; the training data's
    :data:`tomolens.models.domain_data.MAX_SHAPE`), or None for whole tomograms.
    """
    from tomolens.detect.detector import detect_particles
    from tomolens.evaluate import match_centres
    from tomolens.io.coords import read_coordinates
    from tomolens.io.mrc import read_mrc
    from tomolens.models.domain_data import central_slices, read_manifest

    for folder in folders:
        entries = read_manifest(folder)["tomograms"]
        for entry in entries[:limit] if limit else entries:
            sub = Path(folder) / str(entry["folder"])
            vol = read_mrc(sub / "tomogram.mrc")
            if not vol.voxel_size_A:
                raise ValueError(f"{sub / 'tomogram.mrc'} has no voxel size in its header; calibration needs it.")
            voxel = float(vol.voxel_size_A[-1])
            truth = read_coordinates(sub / "particles.csv", pixel_size_A=voxel)
            names = truth.features.get("class_name")
            keep = np.ones(len(truth), bool) if names is None else (names.astype(str) == "macromolecule").to_numpy()
            if "radius_A" not in truth.features:
                raise ValueError(f"{sub / 'particles.csv'} has no radius_A column; calibration needs each radius.")
            data = np.asarray(vol.data, np.float32)
            start = np.zeros(3, int)
            if max_shape is not None:  # the central part of at most max_shape voxels of the model's size
                model_vs = float(model[1].voxel_size_A or voxel)
                part = central_slices(data.shape, [int(np.ceil(m * model_vs / voxel)) for m in max_shape])
                start = np.array([p.start for p in part])
                stop = np.array([p.stop for p in part])
                data = np.array(data[part], np.float32)
                inside = np.all((truth.coords_zyx >= start - 0.5) & (truth.coords_zyx < stop - 0.5), axis=1)
                keep = keep & inside
            true_A = (truth.coords_zyx[keep] - start) * voxel
            tol = np.asarray(truth.features["radius_A"], float)[keep] / 2
            result = run_cli_job(detect_particles(data, voxel, model=model, device=device, min_score=0.0))
            found = result.particles
            hits = np.zeros(len(found), bool)
            if len(found) and len(true_A):
                match = match_centres(found.coords_zyx * voxel, true_A, tol)
                hits[[i for i, _ in match.pairs]] = True
            log.info("%s: %s candidates, %s hits, %s particles", sub.name, len(found), int(hits.sum()), len(true_A))
            yield sub.name, found.features.reset_index(drop=True), hits, int(len(true_A))


def _calibrate(args: argparse.Namespace) -> int:
    from tomolens.detect.calibrate import fit_calibration
    from tomolens.models.card import load_model, save_model
    from tomolens.models.device import prepare_device

    from tomolens.models.card import resolve_model

    out = Path(args.out).with_suffix(".pt")
    if out.resolve() == resolve_model(args.model).with_suffix(".pt").resolve():
        raise ValueError(f"--out {args.out} is the model itself; give a new file name (the source model stays).")
    max_shape = tuple(args.max_shape) if any(args.max_shape) else None
    if max_shape is not None and min(max_shape) < 8:
        raise ValueError(f"--max-shape must be at least 8 voxels per axis (or 0 0 0); got {list(args.max_shape)}.")
    device = prepare_device(args.device, args.threads)
    net, card = load_model(args.model, device=device, expected_task="detect")
    raw_card = copy.deepcopy(card)
    raw_card.extra = {k: v for k, v in (card.extra or {}).items() if k != "score_calibration"}
    runs = list(dataset_runs((net, raw_card), args.data, args.limit, device, max_shape))
    fit = fit_calibration([(t, h, m) for _, t, h, m in runs])
    loo = fit.pop("leave_one_out")
    for (name, _, hits, n_true), row in zip(runs, loo):
        row.update({"tomogram": name, "n_true": n_true, "n_hits_at_0": int(hits.sum())})
    cal = float(np.mean([r["calibrated_f1"] for r in loo]))
    raw = float(np.mean([r["raw_f1"] for r in loo]))
    # auto: the calibration only when it beats the raw score with its own threshold, left out tomogram by tomogram
    calibrated = args.mode == "calibrate" or (args.mode == "auto" and cal > raw)
    min_score = fit["min_score"] if calibrated else fit["raw_min_score"]
    new = copy.deepcopy(raw_card)
    new.name = Path(args.out).stem
    new.extra = {
        **new.extra,
        "score_calibration_fit": {
            "data": [str(Path(d)) for d in args.data],
            "max_shape": list(max_shape) if max_shape else None,
            "mode": args.mode,
            "score": "calibrated" if calibrated else "raw",
            "n_runs": fit["n_runs"],
            "n_candidates": fit["n_candidates"],
            "min_score": min_score,
            "fit_f1": fit["fit_f1"] if calibrated else fit["raw_fit_f1"],
            "leave_one_out_mean_f1": {"calibrated": round(cal, 4), "raw": round(raw, 4)},
            "leave_one_out": loo,
        },
        "postprocess": {**(new.extra.get("postprocess") or {}), "min_score": min_score},
    }
    if calibrated:
        new.extra["score_calibration"] = {k: fit[k] for k in ("features", "mean", "scale", "coef", "intercept")}
    weights, card_path = save_model(net.cpu(), new, args.out)
    print(
        f"{fit['n_runs']} tomograms ({fit['n_candidates']} candidates); leave-one-tomogram-out mean F1 {cal:.3f} "
        f"calibrated vs {raw:.3f} raw score with its own threshold: {'calibrated' if calibrated else 'raw'} scores, "
        f"default min_score {min_score:.2f}; wrote {weights} and {card_path}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect-calibrate",
        help="fit a detector's score calibration (one default min_score for any SNR) on tomograms with known particles",
    )
    p.add_argument("--model", required=True, help="detection model: shipped name or .pt file (left unchanged)")
    p.add_argument(
        "--data", nargs="+", required=True, help="dataset folders (tomolens simulate-dataset) with known particles"
    )
    p.add_argument("--out", required=True, help="the calibrated copy of the model (.pt; its card beside it)")
    p.add_argument(
        "--mode",
        choices=("auto", "calibrate", "threshold"),
        default="auto",
        help="calibrate: calibrated scores and their best min_score; threshold: raw scores, only the best min_score; "
        "auto (default): calibrated when that beats the raw score left out tomogram by tomogram",
    )
    p.add_argument("--limit", type=int, default=0, help="use only the first N tomograms of each folder (0 = all)")
    p.add_argument(
        "--max-shape",
        type=int,
        nargs=3,
        default=[64, 256, 256],
        metavar=("Z", "Y", "X"),
        help="detect only the central part of each tomogram of at most this size in the model's voxels "
        "(as the training data; particles whose centre lies in it count); 0 0 0 = whole tomograms",
    )
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"), help="torch device")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = all cores but one)")
    p.set_defaults(func=_calibrate)
