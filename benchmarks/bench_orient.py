"""Benchmark: orientation recovery on 5j0n (seed 004, Banjac et al. 2021).

Simulates N projections of ``../shared/data/5j0n.mrc`` (3.667 Å, padded to a 75³ cube) at
uniformly random orientations with viewing directions on a hemisphere, and measures the
mean orientation error (after O(4) alignment to the truth) when recovering them from

* exact distances,
* learned distances without noise,
* learned distances at noise variance 16,

with the distance network of ``--model``: by default the shipped ``orient_distance_5j0n``,
trained as in the paper on projections of 5j0n itself at other random orientations (projection
seed 0; the benchmark's are seed 2024, never seen in training); ``orient_distance_shrec10A``
was trained on other maps only and shows what a network that never saw the particle gives.

The learned rows come twice: from distances alone (the paper's method) and after the pipeline's refinement
(``refine``: frame from common lines, then projection matching, see
:mod:`tomolens.orient.refine`; no truth is used before the final alignment), plus the wall
times (training from the model card, embedding, recovery, frame and refinement,
reconstruction) and the FSC resolution of the reconstruction from the noisy projections and
the aligned orientations, with and without refinement.  The goals are checked on the last
row (learned distances, variance 16, refined: what ``tomolens orient recover`` gives).

Usage::

    python benchmarks/bench_orient.py --n 5000 [--model orient_distance_5j0n] [--skip-exact]

Writes ``benchmarks/results/orient.json``.

Many maps (``--maps``, see :func:`many_maps`): for every map a symmetry is detected, a fresh
distance network is trained on the map within the default training (3,000 steps), 5,000
projections at other orientations are simulated (noise variance 16 and noise-free), and
``recover_from_stack`` runs with default settings and the detected symmetry; errors are measured
up to the symmetry, the FSC against the map is given with the recovered and with the true
orientations, and the FSC between the two reconstructions. The full protocol is one command::

    python benchmarks/bench_orient.py --maps default

(5j0n plus six 10 Å SHREC maps; about 15 min per map on 2 cores); ``--n``, ``--train-steps`` and
``--conditions`` reduce it, and the JSON says so (``reduced``). Writes
``benchmarks/results/orient_maps.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PAPER = {
    "exact_deg": 0.084,
    "learned_clean_deg": 11.4,
    "learned_var16_deg": 14.6,
    "training_h_K40c": 4.2,
    "recovery_h_K40c": 4.4,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="number of projections")
    parser.add_argument("--model", default="orient_distance_5j0n", help="distance model (shipped name or .pt)")
    parser.add_argument("--recover-steps", type=int, default=1000)
    parser.add_argument("--initialisation", default="spectral", choices=("spectral", "random"))
    parser.add_argument("--skip-exact", action="store_true", help="skip the exact-distance row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--out",
        default=None,
        help="output JSON (default: results/orient.json, or results/orient_maps.json with --maps)",
    )
    parser.add_argument(
        "--maps",
        nargs="+",
        default=None,
        help="many-maps benchmark: 'default' (5j0n + six 10 Å SHREC maps) or map names/paths",
    )
    parser.add_argument("--train-steps", type=int, default=None, help="--maps: training steps (default: the CLI's)")
    parser.add_argument(
        "--conditions", default="var16,clean", help="--maps: comma-separated noise conditions: var16, clean, snr<value>"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="--maps: repeats; seed s trains a fresh network with seed s and simulates with --seed + s",
    )
    parser.add_argument("--device", default="cpu", help="--maps: torch device of the distance training (cuda)")
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        help="merge the JSONs of --maps runs (one per map, run in parallel) into --out",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return merge_results(args.merge, args.out or str(ROOT / "benchmarks" / "results" / "orient_maps.json"))
    if args.maps:
        return many_maps(args, argv)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "orient.json")
    logging.basicConfig(level=logging.WARNING)
    load_at_start = [round(v, 2) for v in os.getloadavg()]

    import torch

    torch.set_num_threads(args.threads)
    from tomolens.io import read_mrc
    from tomolens.jobs import run_job
    from tomolens.models.card import load_model
    from tomolens.orient.network import distance_errors_deg, embed_images
    from tomolens.orient.project import pad_to_cube, simulate_projections
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_fourier
    from tomolens.orient.recover import EmbeddingDistances, ExactDistances, recover_orientations
    from tomolens.orient.refine import fix_frame, refine_orientations
    from tomolens.orient.rotations import align_orientations, geodesic_distance

    map_path = DATA / "5j0n.mrc"
    if not map_path.is_file():
        raise SystemExit(f"5j0n.mrc not found in {DATA}")
    vol = read_mrc(map_path)
    voxel = float(vol.voxel_size_A[-1])
    volume = np.asarray(vol.data, np.float32)
    reference = pad_to_cube(volume)
    rows: list[dict] = []
    timings: dict[str, float] = {}
    cpu_times: dict[str, float] = {}

    t0 = time.monotonic()
    clean = run_job(simulate_projections(volume, voxel, args.n, seed=args.seed))
    timings["simulate_s"] = time.monotonic() - t0
    rng = np.random.default_rng(args.seed + 1)
    noisy_images = clean.images + rng.normal(0.0, 4.0, clean.images.shape).astype(np.float32)
    snr16 = float(clean.info["signal_variance"] / 16.0)
    truth = clean.quats

    def recover(distances, label):
        t, c = time.monotonic(), time.process_time()
        res = run_job(
            recover_orientations(distances, initialisation=args.initialisation, steps=args.recover_steps, seed=0)
        )
        elapsed = time.monotonic() - t
        cpu_times[label] = time.process_time() - c  # CPU seconds of this process (all threads)
        aligned, _ = align_orientations(res.quats, truth)
        err = np.degrees(geodesic_distance(aligned, truth))
        print(
            f"{label:32s} mean {err.mean():7.3f}°  median {np.median(err):7.3f}°  recovery {elapsed:6.1f} s", flush=True
        )
        return res.quats, aligned, err, elapsed

    def refine(images, quats, label):
        """The pipeline's default next step: frame from common lines, then projection matching."""
        t = time.monotonic()
        fixed, frame = run_job(fix_frame(images, quats, voxel))
        t_frame = time.monotonic() - t
        t = time.monotonic()
        refined, _, passes = run_job(refine_orientations(images, fixed, voxel))
        t_refine = time.monotonic() - t
        aligned, _ = align_orientations(refined, truth)
        err = np.degrees(geodesic_distance(aligned, truth))
        print(
            f"{label:32s} mean {err.mean():7.3f}°  median {np.median(err):7.3f}°  frame {t_frame:5.1f} s, "
            f"refinement {t_refine:6.1f} s",
            flush=True,
        )
        return aligned, err, {"frame_s": t_frame, "refinement_s": t_refine, "frame": frame, "passes": passes}

    if not args.skip_exact:
        _, _, err_exact, t_exact = recover(ExactDistances(truth), "exact distances")
        rows.append(
            {
                "case": "exact distances",
                "mean_error_deg": float(err_exact.mean()),
                "median_error_deg": float(np.median(err_exact)),
                "recovery_s": t_exact,
                "paper_deg": PAPER["exact_deg"],
            }
        )

    net, card = load_model(args.model, "cpu", expected_task="orient")
    train_min = float(card.metrics.get("train_minutes", float("nan")))
    for label, images, paper in (
        ("learned, noise-free", clean.images, PAPER["learned_clean_deg"]),
        ("learned, noise variance 16", noisy_images, PAPER["learned_var16_deg"]),
    ):
        t = time.monotonic()
        emb = run_job(embed_images(net, card, images, voxel))
        t_embed = time.monotonic() - t
        derr = distance_errors_deg(emb, truth)
        raw, aligned, err, t_rec = recover(EmbeddingDistances(emb), label)
        row = {
            "case": label,
            "mean_error_deg": float(err.mean()),
            "median_error_deg": float(np.median(err)),
            "distance_mae_deg": derr["mae_deg"],
            "embedding_s": t_embed,
            "recovery_s": t_rec,
            "training_min": train_min,
            "total_min": train_min + (t_embed + t_rec) / 60,
            "paper_deg": paper,
        }
        if "16" in label:
            recon = run_job(reconstruct_fourier(images, aligned))
            fsc = fourier_shell_correlation(recon, reference, voxel)
            row.update({"fsc05_A": fsc.resolution_05_A, "fsc0143_A": fsc.resolution_0143_A})
        rows.append(row)
        aligned, err, extra = refine(images, raw, label + ", refined")
        row = {
            "case": label + ", refined",
            "mean_error_deg": float(err.mean()),
            "median_error_deg": float(np.median(err)),
            "distance_mae_deg": derr["mae_deg"],
            "embedding_s": t_embed,
            "recovery_s": t_rec + extra["frame_s"] + extra["refinement_s"],
            "training_min": train_min,
            "total_min": train_min + (t_embed + t_rec + extra["frame_s"] + extra["refinement_s"]) / 60,
            "paper_deg": paper,
            "refinement": extra,
        }
        if "16" in label:
            t = time.monotonic()
            recon = run_job(reconstruct_fourier(images, aligned))
            timings["reconstruction_s"] = time.monotonic() - t
            fsc = fourier_shell_correlation(recon, reference, voxel)
            recon_true = run_job(reconstruct_fourier(images, truth))
            fsc_true = fourier_shell_correlation(recon_true, reference, voxel)
            row.update(
                {
                    "fsc05_A": fsc.resolution_05_A,
                    "fsc0143_A": fsc.resolution_0143_A,
                    "fsc05_true_orientations_A": fsc_true.resolution_05_A,
                    "fsc0143_true_orientations_A": fsc_true.resolution_0143_A,
                }
            )
            print(
                f"FSC (recovered) {fsc.resolution_05_A:.1f} Å @0.5, {fsc.resolution_0143_A:.1f} Å @0.143; "
                f"(true orientations) {fsc_true.resolution_05_A:.1f} / {fsc_true.resolution_0143_A:.1f} Å"
            )
        rows.append(row)

    result = {
        "benchmark": "orient",
        "machine": "2-core CPU, no GPU",
        "load_average_at_start": load_at_start,
        "threads": args.threads,
        "map": "5j0n.mrc, 3.667 Å, padded to 75³",
        "n_projections": args.n,
        "seed": args.seed,
        "noise": {"variance": 16.0, "snr": snr16},
        "half_sphere": True,
        "model": {
            "name": card.name,
            "train_maps": card.extra.get("train_maps"),
            "metrics": card.metrics,
            "training_command": card.training_command,
        },
        "recovery": {"initialisation": args.initialisation, "steps": args.recover_steps},
        "timings": timings,
        "recovery_cpu_s": cpu_times,
        "rows": rows,
        "paper": PAPER,
        "goals": {
            "learned_var16_le_5deg": bool(rows[-1]["mean_error_deg"] <= 5.0),
            "total_le_15min": bool(rows[-1]["total_min"] <= 15.0),
        },
        "command": "python benchmarks/bench_orient.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }
    from tomolens.io import atomic_path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(result, indent=2))
    print("\n| case | mean error (°) | paper (°) | recovery (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['mean_error_deg']:.3f} | {r['paper_deg']} | {r['recovery_s']:.0f} |")
    print(f"wrote {args.out}")
    return 0


#: The full protocol's maps: 5j0n and six SHREC maps at 10 Å (1bxn is C4; the others have no point-group
#: symmetry that detect_symmetry finds in these maps).
DEFAULT_MAPS = ("5j0n", "1bxn", "3d2f", "1qvr", "3cf3", "4cr2", "5mrc")


def _map_path(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (DATA / f"{name}.mrc", DATA / "maps_10A" / f"{name}.mrc"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"map {name!r} not found in {DATA} or {DATA / 'maps_10A'}")


def _condition(label: str) -> dict:
    if label == "var16":
        return {"noise_variance": 16.0}
    if label == "clean":
        return {}
    if label.startswith("snr"):
        return {"snr": float(label[3:])}
    raise SystemExit(f"unknown condition {label!r}: var16, clean or snr<value>")


def many_maps(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Recovery with default settings on several maps, each with fresh networks (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from tomolens.io import atomic_path, read_mrc
    from tomolens.jobs import run_job
    from tomolens.orient.network import TrainingMap, train_distance_model
    from tomolens.orient.pipeline import TRAIN_PARAMS, network_pixel_size
    from tomolens.orient.project import box_warnings, pad_to_cube, particle_diameter_A
    from tomolens.orient.symmetry import check_symmetry, detect_symmetry

    names = list(DEFAULT_MAPS) if args.maps == ["default"] else args.maps
    train_defaults = {p.name: p.default for p in TRAIN_PARAMS}
    steps = args.train_steps or train_defaults["train_steps"]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    out_path = Path(args.out or ROOT / "benchmarks" / "results" / "orient_maps.json")
    reduced = {
        "n_projections": args.n < 5000,
        "train_steps": steps < train_defaults["train_steps"],
        "maps": len(names) < len(DEFAULT_MAPS),
        "conditions": set(conditions) != {"var16", "clean"},
    }
    result = {
        "benchmark": "orient_maps",
        "machine": _machine(args.device),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "threads": args.threads,
        "device": args.device,
        "reduced": reduced,
        "n_projections": args.n,
        "seed": args.seed,
        "seeds": args.seeds,
        "train_steps": steps,
        "conditions": conditions,
        "recover_settings": "defaults of RECOVER_PARAMS, symmetry from detect_symmetry",
        "training": "a fresh network per map and seed, TRAIN_PARAMS defaults but train_steps, trained with the "
        "detected symmetry (distances up to the group)",
        "maps": [],
        "rows": [],
        "summary": [],
        "command": "python benchmarks/bench_orient.py " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }

    def save() -> None:
        result["summary"] = summarise(result["rows"])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_path) as tmp:
            tmp.write_text(json.dumps(result, indent=2))

    for name in names:
        path = _map_path(name)
        vol = read_mrc(path)
        voxel = float(vol.voxel_size_A[-1])
        cube = pad_to_cube(np.asarray(vol.data, np.float32))
        t = time.monotonic()
        report = run_job(detect_symmetry(cube))
        symmetry = report.suggested.name
        t_sym = time.monotonic() - t
        truth_sym, _ = check_symmetry(cube, symmetry)
        tmap = TrainingMap(cube, voxel, path.stem, truth_sym)
        pixel = network_pixel_size([tmap], train_defaults["input_size"])
        info = {
            "map": path.stem,
            "voxel_A": voxel,
            "box": cube.shape[0],
            "diameter_A": particle_diameter_A(cube, voxel),
            "symmetry": symmetry,
            "symmetry_scores": report.scores,
            "symmetry_s": t_sym,
            "network_pixel_A": pixel,
            "network_window_A": pixel * train_defaults["input_size"],
            "training_min": {},
            "warnings": box_warnings(cube, voxel, pixel * train_defaults["input_size"]),
        }
        result["maps"].append(info)
        print(
            f"{path.stem}: {cube.shape[0]}³ at {voxel:.2f} Å, {info['diameter_A']:.0f} Å across, "
            f"{report.summary()}; network pixel {pixel:.2f} Å",
            flush=True,
        )
        for seed in args.seeds:
            t, cpu = time.monotonic(), time.process_time()
            model = run_job(
                train_distance_model(
                    [tmap],
                    pixel_size_A=pixel,
                    input_size=train_defaults["input_size"],
                    projections_per_map=train_defaults["projections_per_map"],
                    steps=steps,
                    seed=seed,
                    name=f"bench_{path.stem}_{seed}",
                    device=args.device,
                )
            )
            training_min = (time.monotonic() - t) / 60
            info["training_min"][str(seed)] = training_min
            info.setdefault("training_cpu_min", {})[str(seed)] = (time.process_time() - cpu) / 60
            for label in conditions:
                row = _map_row(path.stem, truth_sym, cube, voxel, label, seed, training_min, model, args, steps)
                result["rows"].append(row)
                save()
    _print_summary(result["summary"])
    save()
    print(f"wrote {out_path}")
    return 0


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (distance training), {os.cpu_count()} CPU cores (the rest)"
    return f"{os.cpu_count()}-core CPU shared with other jobs, no GPU"


def _map_row(
    name: str,
    truth_sym,
    cube: np.ndarray,
    voxel: float,
    label: str,
    seed: int,
    training_min: float,
    model,
    args: argparse.Namespace,
    steps: int,
) -> dict:
    """One map, noise condition and seed: simulate, recover with default settings, measure."""
    from tomolens.jobs import run_job
    from tomolens.orient.pipeline import RECOVER_PARAMS, recover_from_stack
    from tomolens.orient.project import simulate_projections
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_fourier

    symmetry = truth_sym.name
    t = time.monotonic()
    pset = run_job(simulate_projections(cube, voxel, args.n, seed=args.seed + seed, **_condition(label)))
    t_sim = time.monotonic() - t
    values = {p.name: p.default for p in RECOVER_PARAMS} | {"symmetry": symmetry}
    t, cpu = time.monotonic(), time.process_time()
    res = run_job(recover_from_stack(pset.images, voxel, values, pset.quats, cube, model=model))
    t_rec, cpu_rec = time.monotonic() - t, time.process_time() - cpu
    true_recon = run_job(reconstruct_fourier(pset.images, pset.quats, pad_factor=1.0, symmetry=truth_sym))
    fsc_true = fourier_shell_correlation(true_recon, cube, voxel)
    fsc_between = fourier_shell_correlation(res.reconstruction, true_recon, voxel)
    err = res.errors_deg
    before = res.errors_before_refinement_deg
    check = res.refinement.get("check", {})
    row = {
        "map": name,
        "symmetry": symmetry,
        "condition": label,
        "seed": seed,
        "n_projections": args.n,
        "train_steps": steps,
        "noise_variance": pset.noise_variance,
        "snr": pset.info.get("snr"),
        "mean_error_deg": float(err.mean()),
        "median_error_deg": float(np.median(err)),
        "within_10deg": float(np.mean(err < 10)),
        "before_refinement_mean_deg": None if before is None else float(before.mean()),
        "before_refinement_median_deg": None if before is None else float(np.median(before)),
        "distance_mae_deg": res.distance_errors.get("mae_deg"),
        "distance_mae_up_to_symmetry": True,
        "refinement_kept_start": check.get("kept_start"),
        "half_set_score": check.get("half_set_score"),
        "fsc05_A": res.fsc.resolution_05_A,
        "fsc0143_A": res.fsc.resolution_0143_A,
        "fsc05_true_orientations_A": fsc_true.resolution_05_A,
        "fsc0143_true_orientations_A": fsc_true.resolution_0143_A,
        "fsc05_vs_true_orientation_map_A": fsc_between.resolution_05_A,
        "fsc0143_vs_true_orientation_map_A": fsc_between.resolution_0143_A,
        "fsc_curve": {
            "frequency_per_A": res.fsc.frequency_per_A.round(5).tolist(),
            "fsc": res.fsc.fsc.round(4).tolist(),
        },
        "timings_s": {"simulate": t_sim, **res.timings_s},
        "total_min": training_min + t_rec / 60,
        "recovery_cpu_min": cpu_rec / 60,  # CPU time of this process (all its threads): the wall time includes waits
        "warnings": res.warnings,
    }
    row["goals"] = {
        "mean_le_5deg": bool(row["mean_error_deg"] <= 5.0) if label == "var16" else None,
        "total_le_15min": bool(row["total_min"] <= 15.0),
    }
    print(
        f"  seed {seed} {label:6s} SNR {row['snr'] or float('inf'):.3g}: mean {row['mean_error_deg']:.2f}° median "
        f"{row['median_error_deg']:.2f}° ({100 * row['within_10deg']:.0f} % < 10°), before refinement "
        f"{row['before_refinement_mean_deg'] or float('nan'):.1f}°, distances off by "
        f"{row['distance_mae_deg']:.1f}°; FSC {row['fsc05_A']:.1f}/{row['fsc0143_A']:.1f} Å (true orientations "
        f"{row['fsc05_true_orientations_A']:.1f}/{row['fsc0143_true_orientations_A']:.1f} Å); "
        f"{row['total_min']:.1f} min",
        flush=True,
    )
    return row


#: Row values that the summary gives as mean ± standard deviation over seeds.
SUMMARY_KEYS = (
    "mean_error_deg",
    "median_error_deg",
    "within_10deg",
    "before_refinement_mean_deg",
    "distance_mae_deg",
    "fsc05_A",
    "fsc0143_A",
    "fsc05_true_orientations_A",
    "total_min",
    "recovery_cpu_min",
)


def summarise(rows: list[dict]) -> list[dict]:
    """Per map, condition and budget (projections, training steps): every seed's values and their mean ± sd (ddof 1)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["map"], row["condition"], row.get("n_projections"), row.get("train_steps"))
        groups.setdefault(key, []).append(row)
    out = []
    for (name, condition, n_projections, train_steps), group in groups.items():
        entry = {
            "map": name,
            "condition": condition,
            "n_projections": n_projections,
            "train_steps": train_steps,
            "symmetry": group[0]["symmetry"],
            "seeds": [r.get("seed", 0) for r in group],
            "refinement_kept_start": [r["refinement_kept_start"] for r in group],
        }
        for key in SUMMARY_KEYS:
            values = [r[key] for r in group if r.get(key) is not None]
            entry[key] = {
                "per_seed": values,
                "mean": float(np.mean(values)) if values else None,
                "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            }
        out.append(entry)
    return out


def _print_summary(summary: list[dict]) -> None:
    def pm(stat: dict, digits: int = 1) -> str:
        if stat["mean"] is None:
            return "–"
        spread = f" ± {stat['std']:.{digits}f}" if stat["std"] is not None else ""
        return f"{stat['mean']:.{digits}f}{spread}"

    print(
        "\n| map | symmetry | condition | projections | training steps | seeds | mean error (°) | median (°) | < 10° "
        "| before refinement (°) | distance MAE (°) | FSC 0.5 (Å) | true orient. FSC 0.5 (Å) | min per run |\n"
        + "|---" * 14
        + "|"
    )
    for e in summary:
        print(
            f"| {e['map']} | {e['symmetry']} | {e['condition']} | {e.get('n_projections')} | {e.get('train_steps')} | "
            f"{len(e['seeds'])} | {pm(e['mean_error_deg'])} | "
            f"{pm(e['median_error_deg'])} | {pm(e['within_10deg'], 2)} | {pm(e['before_refinement_mean_deg'])} | "
            f"{pm(e['distance_mae_deg'])} | {pm(e['fsc05_A'])} | {pm(e['fsc05_true_orientations_A'])} | "
            f"{pm(e['total_min'])} |"
        )


def merge_results(paths: list[str], out: str) -> int:
    """One JSON from the per-map JSONs of parallel ``--maps`` runs (scripts/bench_orient_maps_gpu.sh)."""
    from tomolens.io import atomic_path

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        logging.warning("no result from %s (see the run's log); merging the others", ", ".join(missing))
    parts = [json.loads(Path(p).read_text()) for p in paths if Path(p).is_file()]
    if not parts:
        raise SystemExit("nothing to merge: no result file exists")
    for part in parts:  # rows and maps of older files lack their budget: it is the file's
        budget = {"n_projections": part["n_projections"], "train_steps": part["train_steps"]}
        for entry in part["rows"] + part["maps"]:
            for key, value in budget.items():
                entry.setdefault(key, value)
    merged = dict(parts[0])
    merged["maps"] = list(
        {(m["map"], m["n_projections"], m["train_steps"]): m for part in parts for m in part["maps"]}.values()
    )
    merged["rows"] = [r for part in parts for r in part["rows"]]
    merged["n_projections"] = sorted({part["n_projections"] for part in parts})
    merged["train_steps"] = sorted({part["train_steps"] for part in parts})
    merged["seeds"] = sorted({s for part in parts for s in part["seeds"]})
    merged["summary"] = summarise(merged["rows"])
    merged["conditions"] = sorted({c for part in parts for c in part["conditions"]})
    merged["reduced"] = {k: any(part["reduced"][k] for part in parts) for k in parts[0]["reduced"]}
    merged["parts"] = [
        {
            k: part.get(k)
            for k in ("command", "n_projections", "train_steps", "seeds", "threads", "load_average_at_start")
        }
        for part in parts
    ]
    merged["reduced"]["maps"] = len(merged["maps"]) < len(DEFAULT_MAPS)
    merged["reduced"]["conditions"] = set(merged["conditions"]) != {"var16", "clean"}
    merged["missing_parts"] = missing
    merged["command"] = [part["command"] for part in parts]
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(merged, indent=2))
    _print_summary(merged["summary"])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
