"""Segmentation benchmark: per-class Dice on held-out simulated tomograms, and speed.

(a) the shipped model ``segment_default``; (a') the same with test-time augmentation (``test_time_augmentation``:
the 8 rotations and flips of the y-x plane averaged); (b) a new slice U-Net trained from scratch
with the Segment widget's default training settings (2.5D: each slice read with 4 neighbours on
either side) on 5 z-slices of ground truth of the tomogram itself (standing in for 5 painted
slices; Dice is measured on all the other slices); (b') the same on 5 slices of 64×512×512 held-out
tomograms of the same seeds (slices as wide as a user's tomogram's, 24 vesicles, 16 filaments;
no test-time augmentation); (c) the shipped model fine-tuned on the same 5
slices with the widget's default settings (what Train does by default:
``segment_start_from = segment_default``).  Held-out tomograms: simulator
seeds 5008, 5009, 5012 at SNR 0.05 and 5010, 5011, 5013 at SNR 0.03, never used for training or stopping (the
shipped model trained on seeds 6000–6013 and stopped on 6014–6015) (64×128×128, 10 Å, 2
vesicles, 3 filaments, volume fraction 0.15).

Budgets and seeds: the parts that train use the widget's settings except its 5-minute limit, which
would make the figures depend on the machine's load: they train a fixed number of epochs instead
(``--epochs-scratch`` 45 and ``--epochs-finetune`` 14, what the 5 minutes gave on the project's
2-core CPU in bfloat16).  Each held-out tomogram is one seed: it is the data, and its simulator
seed also seeds the training (initial weights, patches).  Every Dice is reported per tomogram and as
mean ± sample standard deviation over the tomograms of an SNR (``<kind>_summary``, with
per-seed values; :func:`tomolens.evaluate.seed_summary`).  Speed: seconds to segment a 200×512×512 volume with the shipped model.

Another start model (``--model segment_domain``): part (c) fine-tunes it on the same 5 painted slices of
the first simulator's 4 classes, as the widget does (a new output layer: background, membrane copied,
filament ← microtubule, particle ← macromolecule; :mod:`tomolens.segment.start`).  Its results are stored
under keys of their own, ``<key>@<model>`` (``finetuned_5_slices@segment_domain``, ``epochs_run_finetuned@
segment_domain``, ``z_slices@segment_domain`` …), so that they never overwrite ``segment_default``'s rows (the
keys without a suffix).  Part (a) scores the model's own output against the 4 classes, so it is refused
for a model with other classes; without ``--parts`` such a model runs ``finetune`` only.  The epochs of (c)
follow the start model's kind unless ``--epochs-finetune`` is given: 14 for a 3D model (what the widget's 5
minutes gave), 45 for a 2.5D slice model such as ``segment_domain`` (the same network as (b)'s, which ran
41–47 epochs in the 5 minutes).

Usage::

    python benchmarks/bench_segment.py [--parts shipped,scratch,scratch_wide,finetune,timing] [--cache DIR]
        [--threads 1] [--snr 0.05,0.03] [--model segment_default|segment_domain|MODEL.pt] [--epochs-finetune N]

Writes ``benchmarks/results/segment.json`` (parts and tomograms not run are kept from an earlier run,
merged when the file is written, so that two runs side by side, one core each, keep both results).
(b) is scored as the widget's Predict gives it (slices smoothed across z, ``slice_smoothing`` 1) and
again with test-time augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from tomolens.evaluate import seed_summary
from tomolens.io.atomic import atomic_path
from tomolens.jobs import run_job
from tomolens.segment.labels import DEFAULT_CLASSES, evenly_spaced_slices, sparse_from_classes
from tomolens.segment.predict import classes_from_probabilities, predict_probabilities, segment_tomogram
from tomolens.segment.simulated import dice_per_class, simulate_sample
from tomolens.segment.settings import NEW_NETWORK, TRAIN_PARAMS, WIDGET_TRAIN_VALUES, train_kwargs, trained_kind
from tomolens.segment.train import train_segmenter

THREADS = [1]  # set from --threads
RESULTS = Path(__file__).parent / "results" / "segment.json"
HELD_OUT = {0.05: (5008, 5009, 5012), 0.03: (5010, 5011, 5013)}
#: epochs of the parts that train (no time limit), set from --epochs-scratch / --epochs-finetune
EPOCHS = {"scratch": 45, "scratch_wide": 45, "finetune": 14}
#: default epochs of fine-tuning per kind of start model: what the widget's 5 minutes gave on the
#: project's 2-core CPU in bfloat16 (3D segment_default: 13–14; the 2.5D slice network of part (b),
#: segment_domain's architecture: 41–47)
FINETUNE_EPOCHS = {"3d": 14, "2d": 45}
#: the model whose results are stored under keys without a suffix (the file's rows since the start)
UNSUFFIXED_MODEL = "segment_default"
SIM = dict(shape_zyx=(64, 128, 128), voxel_size_A=10.0, volume_fraction=0.15, n_membranes=2, n_filaments=3)
#: (b') slices as wide as a user's tomogram's (512×512: the issue's timing volume; a 128×128 slice
#: holds 1/16 of the painting one such slice gives), the same thickness and seeds.  24 vesicles
#: (membrane 5.1–5.9 % of the voxels of the four test tomograms, as in the 128×128 ones; 32, the
#: count scaled with the area, left no room to place the 7th filament of seed 5009) and 16 filaments
#: (1.6–1.8 %; 24 failed to place the 23rd on validation seeds: they are long and must not touch).
WIDE_SIM = SIM | dict(shape_zyx=(64, 512, 512), n_membranes=24, n_filaments=16)
#: (b) trains exactly what a user gets by pressing Train in the Segment widget with its
#: default settings (the shared TRAIN_PARAMS with the widget's WIDGET_TRAIN_VALUES: 2.5D slice
#: U-Net, depth 3, 40 steps per epoch, …) and "start from" none, with an epoch budget instead of
#: the widget's 5-minute limit.
WIDGET_DEFAULTS = {p.name: p.default for p in TRAIN_PARAMS} | WIDGET_TRAIN_VALUES | {"max_minutes": 0.0}


def painted_settings(start_from: str) -> dict:
    """train_segmenter keyword arguments of the widget's defaults, starting from ``start_from``."""
    kwargs = train_kwargs({**WIDGET_DEFAULTS, "segment_start_from": start_from})
    return {k: v for k, v in kwargs.items() if k != "threads"} | {"device": "cpu"}


FROM_SCRATCH = painted_settings(NEW_NETWORK)
#: parts trained on 5 painted slices → (result key, settings given the shipped model's name)
PAINTED = {
    "scratch": ("from_5_slices", lambda model: FROM_SCRATCH),
    "scratch_wide": ("from_5_slices_wide", lambda model: FROM_SCRATCH),
    "finetune": ("finetuned_5_slices", painted_settings),
}
#: result key suffixes of the painted parts
SUFFIX = {"scratch": "5_slices", "scratch_wide": "wide", "finetune": "finetuned"}


def model_suffix(model: str | Path) -> str:
    """Suffix of a model's result keys: "" for :data:`UNSUFFIXED_MODEL`, else ``@<name>`` (a file's stem)."""
    name = Path(str(model)).stem if str(model).endswith((".pt", ".json")) else str(model)
    return "" if name == UNSUFFIXED_MODEL else f"@{name}"


def base_kind(key: str) -> str:
    """A result key without its model suffix (``finetuned_5_slices@segment_domain`` → ``finetuned_5_slices``)."""
    return key.split("@", 1)[0]


def model_classes(model: str) -> list[str]:
    """The classes of a segmentation model (shipped name or file); ValueError if it cannot be read."""
    from tomolens.models.card import read_card, resolve_model

    card = read_card(resolve_model(model))
    if card.task != "segment":
        raise ValueError(f"{model} is a {card.task!r} model, not a segmentation model.")
    return list(card.classes)


def check_parts(model: str, parts: set[str], given: bool) -> set[str]:
    """The parts to run for ``model``: a model with other classes than the 4 scored ones cannot run
    ``shipped``/``shipped_tta`` (ValueError when asked for) and runs ``finetune`` when no parts were given."""
    classes = model_classes(model)
    if classes == list(DEFAULT_CLASSES):
        return parts
    if not given:
        return {"finetune"}
    own = parts & {"shipped", "shipped_tta"}
    if own:
        raise ValueError(
            f"--parts {','.join(sorted(own))} scores the model's own output as {list(DEFAULT_CLASSES)}, but {model} "
            f"segments {classes}: its Dice per class would be meaningless. Run --parts finetune (the painted "
            "4 classes on top of it), or bench_segment_domain.py for its own classes."
        )
    return parts


def _mean(scores: list[dict]) -> dict:
    return {n: round(float(np.nanmean([s[n] for s in scores])), 4) for n in DEFAULT_CLASSES}


def _unpainted_dice(trained, sample, keep: np.ndarray, tta: bool) -> dict:
    """Dice per class on the slices ``keep`` of a model trained on painted slices, predicted as the
    Segment widget's Predict does with its defaults (``tta``: with test-time augmentation)."""
    probs = run_job(
        predict_probabilities(
            trained.model, trained.card, sample.tomogram, sample.voxel_size_A, orthogonal=False, tta=tta
        )
    )
    return dice_per_class(classes_from_probabilities(probs)[keep], sample.classes[keep], DEFAULT_CLASSES)


def accuracy(model: str, cache: str | None, parts: set[str], snrs: set[float], n_slices: int = 5) -> dict:
    """Dice per class of the parts asked for: {"snr_<snr>": {seed: {result key: value}}} (new rows only;
    every key but ``seed`` and ``painted_slices`` ends in :func:`model_suffix`)."""
    out = {}
    tag = model_suffix(model)
    for snr, seeds in HELD_OUT.items():
        if snr not in snrs:
            continue
        rows = out.setdefault(f"snr_{snr:g}", {})
        for seed in seeds:
            row = rows.setdefault(seed, {"seed": seed})
            uses_small = parts & ({"shipped", "shipped_tta"} | set(PAINTED)) - {"scratch_wide"}
            small = simulate_sample(seed, snr=snr, cache_dir=cache, **SIM) if uses_small else None
            for key in sorted(parts & {"shipped", "shipped_tta"}):
                t0 = time.time()
                res = run_job(
                    segment_tomogram(
                        small.tomogram,
                        small.voxel_size_A,
                        model=model,
                        device="cpu",
                        threads=THREADS[0],
                        test_time_augmentation=key == "shipped_tta",
                    )
                )
                row[key + tag] = dice_per_class(res.classes, small.classes, DEFAULT_CLASSES)
                row[f"seconds_{key}{tag}"] = round(time.time() - t0, 1)
                print(f"SNR {snr} seed {seed}: {key}{tag} {row[key + tag]}", flush=True)
            for part in sorted(parts & set(PAINTED)):
                key, settings = PAINTED[part][0], PAINTED[part][1](model)
                s = simulate_sample(seed, snr=snr, cache_dir=cache, **WIDE_SIM) if part == "scratch_wide" else small
                slices = evenly_spaced_slices(n_slices, s.classes.shape[0])
                painted = sparse_from_classes(s.classes, slices)
                t0 = time.time()
                settings = settings | {"epochs": EPOCHS[part], "seed": seed}  # the tomogram's seed: data and init
                trained = run_job(
                    train_segmenter(
                        [(s.tomogram, painted)], DEFAULT_CLASSES, s.voxel_size_A, threads=THREADS[0], **settings
                    )
                )
                keep = np.ones(s.classes.shape[0], bool)
                keep[slices] = False  # score only the slices that were not "painted"
                row[key + tag] = _unpainted_dice(trained, s, keep, tta=False)
                seconds = round(time.time() - t0, 1)
                if part == "scratch":  # fine-tuned 3D models: test-time augmentation is measured on the shipped one
                    row[f"{key}_tta{tag}"] = _unpainted_dice(trained, s, keep, tta=True)
                suffix = SUFFIX[part] + tag
                layer = (trained.card.extra.get("start_from") or {}).get("output_layer")
                row.update(
                    {
                        "painted_slices": slices,
                        f"epochs_run_{suffix}": len(trained.history),
                        f"training_budget_{suffix}": trained.card.extra.get("training_budget"),
                        f"seconds_train_and_predict_{suffix}": seconds,
                        f"training_precision_{suffix}": trained.card.extra.get("training_precision"),
                    }
                    | ({f"output_layer_{suffix}": layer} if layer else {})
                )
                print(
                    f"SNR {snr} seed {seed}: {key}{tag} {row[key + tag]}"
                    + (f", with test-time augmentation {row[f'{key}_tta{tag}']}" if part == "scratch" else ""),
                    flush=True,
                )
    return out


RESULT_KINDS = (
    "shipped",
    "shipped_tta",
    "from_5_slices",
    "from_5_slices_tta",
    "from_5_slices_wide",
    "finetuned_5_slices",
)


def result_kinds(rows: list[dict]) -> list[str]:
    """The Dice keys in ``rows``: :data:`RESULT_KINDS`, each model's with its suffix, in that order."""
    keys = {k for r in rows for k in r if base_kind(k) in RESULT_KINDS}
    return sorted(keys, key=lambda k: (RESULT_KINDS.index(base_kind(k)), k))


def merge_rows(dice: dict, new_rows: dict) -> dict:
    """``dice`` (the results file's) with ``new_rows`` merged in, per tomogram, and the means recomputed.

    Merged when the file is written, so that runs of other parts or SNRs side by side (one
    core each) do not overwrite each other's results.
    """
    for snr_key, rows in new_rows.items():
        entry = dice.setdefault(snr_key, {})
        merged = {r["seed"]: r for r in entry.get("tomograms", [])}
        for seed, row in rows.items():
            merged.setdefault(seed, {}).update(row)
        entry["tomograms"] = [merged[k] for k in sorted(merged)]
        for kind in result_kinds(entry["tomograms"]):
            scores = [r[kind] for r in entry["tomograms"] if kind in r]
            if scores:
                entry[kind] = _mean(scores)
                entry[f"{kind}_summary"] = {
                    n: seed_summary([sc[n] for sc in scores], scale=1.0, unit="", decimals=2)
                    | {"seeds": [r["seed"] for r in entry["tomograms"] if kind in r]}
                    for n in DEFAULT_CLASSES
                }
    return dice


def timing(model: str, shape=(200, 512, 512)) -> dict:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    from tomolens.models.card import read_card, resolve_model

    out = {}
    kind = read_card(resolve_model(model)).extra.get("model_kind", "3d")
    for orthogonal in (False, True) if kind == "2d" else (False,):
        load = os.getloadavg()[0]
        t0, c0 = time.time(), time.process_time()
        run_job(segment_tomogram(data, 10.0, model=model, orthogonal=orthogonal, device="cpu", threads=THREADS[0]))
        key = ("3d_tiles" if kind == "3d" else ("zyx_averaged" if orthogonal else "z_slices")) + model_suffix(model)
        out[key] = {
            "wall_s": round(time.time() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1),
            "load_average_before": round(load, 1),
            "model": Path(str(model)).name,
        }
        print(f"{shape} {key}: {out[key]}", flush=True)
    return {"shape_zyx": list(shape), "measured_at_full_size": True, **out}


def record_run(
    result: dict,
    args: argparse.Namespace,
    parts: set[str],
    snrs: set[float],
    new_rows: dict,
    timed: dict | None,
    load_at_start: list[float],
) -> dict:
    """``result`` (the results file's contents) with this run merged in, in place.

    A model other than :data:`UNSUFFIXED_MODEL` writes only keys ending in its suffix
    (:func:`model_suffix`): its Dice rows and means, its settings, its command, its timing and its
    run's machine load (``run@<model>``), so that it never overwrites that model's results.
    """
    tag = model_suffix(args.model)
    run = {
        "load_average_at_start": load_at_start,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": args.threads,
    }
    result.update({"benchmark": "segment", "machine": "2-core CPU, no GPU"})
    if tag:
        result[f"run{tag}"] = run | {"model": args.model}
    else:
        result.update(run | ({"model": args.model} if new_rows else {}))
    result.setdefault("commands", {})[
        ",".join(sorted(parts)) + (f" snr {args.snr}" if snrs != set(HELD_OUT) else "") + tag
    ] = (
        f"python benchmarks/bench_segment.py --parts {args.parts} --threads {args.threads}"
        + (f" --epochs-scratch {args.epochs_scratch}" if parts & {"scratch", "scratch_wide"} else "")
        + (f" --epochs-finetune {args.epochs_finetune}" if "finetune" in parts else "")
        + (f" --snr {args.snr}" if snrs != set(HELD_OUT) else "")
        + (f" --cache {args.cache}" if args.cache else "")
        + (f" --model {args.model}" if args.model != UNSUFFIXED_MODEL else "")
    )
    if new_rows:
        result["dice"] = merge_rows(result.get("dice", {}), new_rows)
        if parts & {"scratch", "scratch_wide"}:
            result[f"from_5_slices_settings{tag}"] = FROM_SCRATCH | {
                "threads": args.threads,
                "epochs": EPOCHS["scratch"],
                "seed": "the tomogram's",
            }
        if "finetune" in parts:
            tuned = painted_settings(args.model) | {"epochs": EPOCHS["finetune"], "seed": "the tomogram's"}
            result[f"finetuned_5_slices_settings{tag}"] = tuned | {
                "threads": args.threads,
                "model_kind": trained_kind(tuned["model_kind"], tuned["start_from"]),
            }
        result["held_out"] = {f"snr_{k:g}": list(v) for k, v in HELD_OUT.items()} | {
            name: {k: list(v) if isinstance(v, tuple) else v for k, v in sim.items()}
            for name, sim in (("simulation", SIM), ("simulation_wide", WIDE_SIM))
        }
    if timed is not None:  # one entry per kind of model (3D tiles, 2D slices) and model
        result["timing"] = {**result.get("timing", {}), **timed}
    return result


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model",
        default=UNSUFFIXED_MODEL,
        help="the model of parts shipped, finetune and timing; another model's results are stored under "
        "<key>@<model>; a model with other classes than background, membrane, filament, particle runs "
        "finetune only (its output layer replaced, as the widget does)",
    )
    p.add_argument("--cache", default=None, help="directory caching simulated tomograms")
    p.add_argument(
        "--parts",
        default=None,
        help="comma-separated: shipped (a), shipped_tta (a with test-time augmentation), scratch (b: 5 "
        "slices), scratch_wide (b': 5 slices of 64x512x512 tomograms), finetune (c: shipped + 5 "
        "slices), timing (default: shipped,scratch,finetune,timing; finetune for a model with other classes)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a shared 2-core box)")
    p.add_argument("--snr", default="0.05,0.03", help="comma-separated SNRs of the held-out tomograms to run")
    p.add_argument(
        "--epochs-scratch",
        type=int,
        default=EPOCHS["scratch"],
        help="epochs of the networks trained from scratch on 5 painted slices (parts scratch, scratch_wide)",
    )
    p.add_argument(
        "--epochs-finetune",
        type=int,
        default=None,
        help="epochs of fine-tuning the model on 5 painted slices (part finetune; default: what the widget's 5 "
        f"minutes gave, {FINETUNE_EPOCHS['3d']} for a 3D model, {FINETUNE_EPOCHS['2d']} for a 2.5D slice model)",
    )
    args = p.parse_args()
    given = args.parts is not None
    args.parts = args.parts or "shipped,scratch,finetune,timing"
    try:
        parts = check_parts(args.model, {x.strip() for x in args.parts.split(",") if x.strip()}, given)
    except ValueError as err:
        p.error(str(err))
    args.parts = ",".join(sorted(parts)) if not given else args.parts
    if args.epochs_finetune is None:
        args.epochs_finetune = FINETUNE_EPOCHS[trained_kind("3d", args.model)]
    EPOCHS.update(scratch=args.epochs_scratch, scratch_wide=args.epochs_scratch, finetune=args.epochs_finetune)
    snrs = {float(x) for x in args.snr.split(",") if x.strip()}
    if not snrs <= set(HELD_OUT):
        p.error(f"--snr: the held-out tomograms are at SNR {', '.join(f'{k:g}' for k in HELD_OUT)}; got {args.snr}")
    torch.set_num_threads(args.threads)
    THREADS[0] = args.threads
    load_at_start = [round(v, 2) for v in os.getloadavg()]
    new_rows = (
        accuracy(args.model, args.cache, parts, snrs) if parts & ({"shipped", "shipped_tta"} | set(PAINTED)) else {}
    )
    timed = timing(args.model) if "timing" in parts else None
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}  # read now: merge with runs beside this one
    record_run(result, args, parts, snrs, new_rows, timed, load_at_start)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print(f"\n{'SNR':>6} {'model':>34} " + " ".join(f"{n:>10}" for n in DEFAULT_CLASSES[1:]))
    for snr, d in result.get("dice", {}).items():
        for kind in result_kinds([d]):
            print(f"{snr:>6} {kind:>34} " + " ".join(f"{d[kind][n]:>10.3f}" for n in DEFAULT_CLASSES[1:]))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
