"""Benchmark the shipped models in-domain and on a shifted domain, side by side, dark input.

Sets (never used for training or for choosing when to stop; seeds ≥ 9000, the shipped
models' cards list seeds below 7200):

- **in-domain**: the simulator the shipped models were trained on (64×128×128 at 10 Å,
  WBP, ±60°/3°, defocus 3 µm; built-in phantoms at volume fraction 0.15, one vesicle and two
  filaments; SNR 0.05), seeds 9000–9002, given **dark** (negated, as raw cryo-ET) and, for
  detection, also bright — the two columns must agree (polarity ``auto``).
- **shifted**: :func:`tomolens.simulate.domain.shifted_domain_config` (64×256×256 voxels of
  24 Å, true SIRT, ±35°/2.5°, held-out maps and the held-out pseudo-protein family,
  bilayer membranes, microtubules, actin, gold, carbon, coloured noise…), seeds 9100–9102,
  forced dark.
- **real**: ``../shared/data/real/microtubule_14pf.mrc`` (in-vitro microtubule at
  10.52 Å; segmentation only: Dice of "filament" against the tube of radius 13 nm around the
  published axis, and the fraction of the volume called "particle").

Every model runs at default settings (polarity ``auto``).  Detection is scored by F1 at half
of each particle's radius (one-to-one matching, the CZII challenge's rule); the classical
baseline is a size-matched difference-of-Gaussians picker (``skimage.feature.blob_dog``, its
σ range in Å and threshold tuned for the best mean F1 on the in-domain simulator's training
seeds 500–503, then scaled to each tomogram's voxel size; it sees the input after the same
polarity decision).  Segmentation is scored by Dice per class: membrane; filament against
microtubule ∪ actin (the shipped model has one filament class); particle against
macromolecules.  Figures are mean ± standard deviation over the 3 seeds.

Subdivision (``--parts subdivide``, run after the main part): on the true centres of each set,
the shipped classifier's features clustered by k-means with the true number of templates,
against k-means on PCA (20 components) of the same raw boxes; adjusted Rand index.

Usage::

    python benchmarks/bench_shifted.py [--threads 2] [--cache DIR] [--seeds 3]
    python benchmarks/bench_shifted.py --parts subdivide [--cache DIR]

Prints a Markdown table and writes ``benchmarks/results/shifted.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
from skimage.feature import blob_dog

from tomolens.detect import detect_particles
from tomolens.evaluate import match_centres
from tomolens.io.atomic import atomic_path
from tomolens.io.mrc import read_mrc
from tomolens.jobs import run_job
from tomolens.polarity import to_model_polarity
from tomolens.segment.predict import segment_tomogram
from tomolens.simulate import SimulationConfig, simulate_tomogram

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "shifted.json"
IN_DOMAIN = dict(
    shape_zyx=(64, 128, 128), voxel_size_A=10.0, volume_fraction=0.15, snr=0.05, n_membranes=1, n_filaments=2
)
DOG_TRAIN_SEEDS = (500, 501, 502, 503)
DOG_GRID = {"min_sigma_A": (15.0, 20.0), "max_sigma_A": (40.0, 70.0), "threshold": (0.15, 0.2, 0.25, 0.3, 0.35)}
MT_AXIS_NM = np.array([(21.97, 123.1, 32.98), (21.97, 83.3, 40.5), (21.97, 17.6, 64.96)])
MT_TUBE_RADIUS_NM = 13.0


# ----------------------------------------------------------------------------- data
def legacy(seed: int):
    """An in-domain tomogram of the shipped models' simulator (bright)."""
    return run_job(simulate_tomogram(SimulationConfig(seed=seed, **IN_DOMAIN)))


def shifted(seed: int, preset: str = "shifted"):
    """A domain simulator's tomogram (dark): the shifted-domain test preset, or ``preset="randomised"`` a draw
    from the training ranges."""
    from tomolens.simulate.domain import sample_domain_config, shifted_domain_config
    from tomolens.simulate.domain_scene import simulate_domain_tomogram

    config = shifted_domain_config(seed) if preset == "shifted" else sample_domain_config(seed=seed)
    return run_job(simulate_domain_tomogram(replace(config, polarity="dark")))


def cached(kind: str, seed: int, cache: Path | None):
    """(tomogram, semantic, class_names, particle centres zyx, radii Å, voxel size) of one set member
    (``kind``: "in-domain", "shifted" or "randomised")."""
    key = cache / f"{kind}_{seed}.npz" if cache else None
    if key is not None and key.is_file():
        with np.load(key, allow_pickle=False) as f:
            return (
                f["tomogram"],
                f["semantic"],
                [str(n) for n in f["class_names"]],
                f["coords"],
                f["radii"],
                float(f["voxel"]),
            )
    sim = legacy(seed) if kind == "in-domain" else shifted(seed, kind)
    table = sim.particles
    keep = np.ones(len(table), bool)
    if "class_name" in table.features:
        keep = table.features["class_name"].astype(str).to_numpy() != "gold"
    out = (
        sim.tomogram,
        sim.semantic,
        list(sim.class_names),
        table.coords_zyx[keep],
        np.asarray(table.features["radius_A"], float)[keep],
        float(sim.voxel_size_A),
    )
    if key is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_path(key) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                tomogram=out[0],
                semantic=out[1],
                class_names=np.array(out[2]),
                coords=out[3],
                radii=out[4],
                voxel=out[5],
            )
    return out


# ------------------------------------------------------------------------ detection
def f1_of(found_zyx: np.ndarray, coords: np.ndarray, radii: np.ndarray, voxel: float) -> dict:
    m = match_centres(np.asarray(found_zyx) * voxel, coords * voxel, radii / 2)
    return {
        "f1": m.f1,
        "precision": m.precision,
        "recall": m.recall,
        "n_true": int(len(coords)),
        "n_found": int(m.true_positives + m.false_positives),
    }


def dog_centres(
    tomogram: np.ndarray, voxel: float, min_sigma_A: float, max_sigma_A: float, threshold: float
) -> np.ndarray:
    bright, _ = to_model_polarity(tomogram, "auto", "bright", voxel)
    z = (bright - bright.mean()) / bright.std()
    blobs = blob_dog(
        z,
        min_sigma=min_sigma_A / voxel,
        max_sigma=max_sigma_A / voxel,
        threshold=threshold,
        overlap=0.5,
        exclude_border=False,
    )
    return blobs[:, :3] if len(blobs) else np.zeros((0, 3))


def tune_dog(cache: Path | None) -> dict:
    sims = [cached("in-domain", s, cache) for s in DOG_TRAIN_SEEDS]
    best, best_f1 = {}, -1.0
    for values in product(*DOG_GRID.values()):
        params = dict(zip(DOG_GRID, values))
        f1 = float(np.mean([f1_of(dog_centres(t, v, **params), c, r, v)["f1"] for t, _, _, c, r, v in sims]))
        if f1 > best_f1:
            best, best_f1 = params, f1
    return {**best, "train_f1": best_f1}


# --------------------------------------------------------------------- segmentation
def dice(pred: np.ndarray, truth: np.ndarray) -> float | None:
    total = int(pred.sum()) + int(truth.sum())
    return None if int(truth.sum()) == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def truth_groups(semantic: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray | None]:
    """Truth mask per structure group (membrane, microtubule, actin, filament = microtubule ∪ actin,
    macromolecule = every template of the phantom simulator); None where the simulator has no such class."""
    idx = {n: i for i, n in enumerate(class_names)}
    if "macromolecule" in idx:  # domain simulator
        return {
            "membrane": semantic == idx["membrane"],
            "microtubule": semantic == idx["microtubule"],
            "actin": semantic == idx["actin"],
            "filament": np.isin(semantic, [idx["microtubule"], idx["actin"]]),
            "macromolecule": semantic == idx["macromolecule"],
        }
    structure = {idx.get("membrane", -1), idx.get("filament", -1), 0}
    templates = [i for i in range(1, len(class_names)) if i not in structure]
    return {
        "membrane": semantic == idx.get("membrane", -1),
        "microtubule": None,
        "actin": None,
        "filament": semantic == idx.get("filament", -1),
        "macromolecule": np.isin(semantic, templates),
    }


def truth_masks(semantic: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """Truth per shipped segmentation class (membrane, filament, particle)."""
    groups = truth_groups(semantic, class_names)
    return {"membrane": groups["membrane"], "filament": groups["filament"], "particle": groups["macromolecule"]}


def segment_scores(tomogram: np.ndarray, voxel: float, semantic, class_names, threads: int) -> dict:
    res = run_job(segment_tomogram(tomogram, voxel, device="cpu", threads=threads))
    truth = truth_masks(semantic, class_names)
    out = {name: dice(res.classes == res.class_names.index(name), truth[name]) for name in truth}
    out["polarity"] = res.info["polarity"]["tomogram"]
    return out


def tube_mask(shape, voxel_nm: float) -> np.ndarray:
    """Voxels within the tube radius of the microtubule's published axis (a polyline in nm)."""
    grid = np.stack(np.meshgrid(*(np.arange(n) * voxel_nm for n in shape), indexing="ij"), -1)
    dist = np.full(shape, np.inf)
    for a, b in zip(MT_AXIS_NM[:-1], MT_AXIS_NM[1:]):
        ab = b - a
        t = np.clip(((grid - a) @ ab) / (ab @ ab), 0, 1)
        dist = np.minimum(dist, np.linalg.norm(grid - (a + t[..., None] * ab), axis=-1))
    # the axis is given from y 17.6 to 123.1 nm; extend its ends along the line
    for end, other in ((MT_AXIS_NM[0], MT_AXIS_NM[1]), (MT_AXIS_NM[-1], MT_AXIS_NM[-2])):
        d = (end - other) / np.linalg.norm(end - other)
        t = np.maximum((grid - end) @ d, 0)
        dist = np.minimum(dist, np.linalg.norm(grid - (end + t[..., None] * d), axis=-1))
    return dist <= MT_TUBE_RADIUS_NM


def segment_real(threads: int, model: str | None = None):
    """(segmentation result, tube mask) of the real microtubule, or None when the file is absent."""
    path = SHARED / "real" / "microtubule_14pf.mrc"
    if not path.is_file():
        return None
    vol = read_mrc(path)
    vs = float(vol.voxel_size_A[-1]) if vol.voxel_size_A else 10.52
    kwargs = {"model": model} if model else {}
    res = run_job(segment_tomogram(np.asarray(vol.data), vs, device="cpu", threads=threads, **kwargs))
    return res, tube_mask(vol.data.shape, vs / 10)


def real_microtubule(threads: int) -> dict:
    found = segment_real(threads)
    if found is None:
        return {"skipped": f"{SHARED / 'real' / 'microtubule_14pf.mrc'} not found"}
    res, tube = found
    names = res.class_names
    return {
        "filament_dice_vs_tube": dice(res.classes == names.index("filament"), tube),
        "particle_fraction": float(np.mean(res.classes == names.index("particle"))),
        "membrane_fraction": float(np.mean(res.classes == names.index("membrane"))),
        "polarity": res.info["polarity"]["tomogram"],
        "polarity_skewness": res.info["polarity"]["skewness"],
    }


# ---------------------------------------------------------------------- subdivision
def subdivision_scores(tomogram, coords, radii, voxel: float, seed: int = 0) -> dict:
    """ARI of subdivision (shipped classifier's features, k-means with the true k) on the true centres,
    against k-means on PCA of the raw boxes (the same boxes, resampled to the model's voxel size).

    Particles are labelled by their template; each template has its own radius, so the radius identifies it.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from tomolens.classify.extract import extract_subtomograms
    from tomolens.classify.predict import model_box
    from tomolens.cluster.subdivide import subdivide_points
    from tomolens.models.card import read_card, resolve_model

    _, truth = np.unique(np.round(radii, 3), return_inverse=True)
    k = int(truth.max()) + 1
    res = run_job(
        subdivide_points(tomogram, coords, "classify_phantoms_resnet", voxel, n_clusters=k, edge="skip", seed=seed)
    )
    kept = res.features["cluster"].to_numpy() >= 0
    ari_net = adjusted_rand_score(truth[kept], res.features["cluster"].to_numpy()[kept])
    box, ratio = model_box(read_card(resolve_model("classify_phantoms_resnet")), voxel)
    ex = run_job(extract_subtomograms(tomogram, coords, box, edge="skip", voxel_ratio=ratio))
    flat = ex.subtomograms.reshape(len(ex.subtomograms), -1)
    feats = PCA(n_components=min(20, len(flat) - 1), random_state=seed).fit_transform(flat)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(feats)
    return {
        "ari_classifier_features": float(ari_net),
        "ari_pca_kmeans": float(adjusted_rand_score(truth[ex.indices], labels)),
        "k": k,
        "n": int(kept.sum()),
        "polarity": res.info["polarity"]["tomogram"],
    }


# ----------------------------------------------------------------------------- main
def summary(values: list[float | None]) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": values}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals), "values": values}


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep simulated tomograms in")
    parser.add_argument(
        "--parts",
        default="detect,segment,real",
        help="'detect,segment,real' (the default, run together) or 'subdivide' (alone, merged into "
        "the JSON); each keeps the other's results",
    )
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if parts == {"subdivide"}:
        return run_subdivision(args, previous, t0)
    dog = tune_dog(args.cache)
    dog_params = {k: dog[k] for k in DOG_GRID}
    rows: dict[str, dict[str, list]] = {}
    for kind, first in (("in-domain", 9000), ("shifted", 9100)):
        for seed in range(first, first + args.seeds):
            tomo, semantic, names, coords, radii, vs = cached(kind, seed, args.cache)
            inputs = {"dark": -tomo if kind == "in-domain" else tomo}
            if kind == "in-domain":
                inputs["bright"] = tomo
            for contrast, data in inputs.items():
                label = f"{kind} ({contrast})"
                row = rows.setdefault(label, {})
                det = run_job(detect_particles(data, vs, device="cpu"))
                for k, v in f1_of(det.particles.coords_zyx, coords, radii, vs).items():
                    row.setdefault(f"detect_{k}", []).append(v)
                row.setdefault("detect_polarity", []).append(det.params["polarity_decision"]["tomogram"])
                base = f1_of(dog_centres(data, vs, **dog_params), coords, radii, vs)
                row.setdefault("dog_f1", []).append(base["f1"])
                if contrast == "dark":
                    seg = segment_scores(data, vs, semantic, names, args.threads)
                    for k in ("membrane", "filament", "particle"):
                        row.setdefault(f"dice_{k}", []).append(seg[k])
                print(
                    f"{label} seed {seed}: detect F1 {row['detect_f1'][-1]:.3f} (DoG {base['f1']:.3f})"
                    + (
                        f", Dice {[round(v, 3) if v is not None else None for v in (seg['membrane'], seg['filament'], seg['particle'])]}"
                        if contrast == "dark"
                        else ""
                    ),
                    flush=True,
                )
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, no GPU",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "dog_baseline": dog,
        "sets": {
            label: {k: (summary(v) if k != "detect_polarity" else v) for k, v in row.items()}
            for label, row in rows.items()
        },
        "real_microtubule": real_microtubule(args.threads),
        "wall_seconds": time.perf_counter() - t0,
        "command": "python benchmarks/bench_shifted.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    for key in ("subdivision", "subdivision_note"):  # measured by the subdivide part alone
        if key in previous:
            results[key] = previous[key]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(results, indent=2))
    print(markdown_table(results))
    return 0


def run_subdivision(args, previous: dict, t0: float) -> int:
    """Only the subdivision part, merged into the existing JSON."""
    rows: dict[str, dict[str, list]] = {}
    for kind, first in (("in-domain", 9000), ("shifted", 9100)):
        for seed in range(first, first + args.seeds):
            tomo, _, _, coords, radii, vs = cached(kind, seed, args.cache)
            data = -tomo if kind == "in-domain" else tomo
            scores = subdivision_scores(data, coords, radii, vs)
            row = rows.setdefault(f"{kind} (dark)", {})
            for key in ("ari_classifier_features", "ari_pca_kmeans"):
                row.setdefault(key, []).append(scores[key])
            print(f"{kind} seed {seed}: {scores}", flush=True)
    previous["subdivision"] = {label: {k: summary(v) for k, v in row.items()} for label, row in rows.items()}
    previous["subdivision_note"] = (
        "true centres; k-means with the true number of templates; shipped classifier "
        "classify_phantoms_resnet's features vs PCA (20) of the raw boxes"
    )
    previous.setdefault("wall_seconds_parts", {})["subdivide"] = time.perf_counter() - t0
    with atomic_path(RESULTS) as tmp:
        Path(tmp).write_text(json.dumps(previous, indent=2))
    print(markdown_table(previous))
    return 0


def fmt(cell: dict | None) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}"


def markdown_table(results: dict) -> str:
    lines = [
        "| set | detection F1 | DoG baseline F1 | precision / recall | membrane Dice | filament Dice | particle Dice |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in results["sets"].items():
        pr = f"{fmt(row.get('detect_precision'))} / {fmt(row.get('detect_recall'))}"
        lines.append(
            f"| {label} | {fmt(row.get('detect_f1'))} | {fmt(row.get('dog_f1'))} | {pr} | "
            f"{fmt(row.get('dice_membrane'))} | {fmt(row.get('dice_filament'))} | "
            f"{fmt(row.get('dice_particle'))} |"
        )
    for label, row in results.get("subdivision", {}).items():
        lines.append(
            f"| {label}: subdivision ARI | classifier features {fmt(row.get('ari_classifier_features'))} "
            f"| PCA + k-means {fmt(row.get('ari_pca_kmeans'))} | | | | |"
        )
    mt = results["real_microtubule"]
    if "filament_dice_vs_tube" in mt:
        lines.append(
            f"| real microtubule (10.52 Å) | — | — | — | membrane {mt['membrane_fraction']:.1%} of the volume "
            f"| {mt['filament_dice_vs_tube']:.2f} (vs the tube) | particle {mt['particle_fraction']:.1%} "
            "of the volume |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
