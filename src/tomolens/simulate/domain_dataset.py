"""Domain-randomised datasets on disk: one tomogram folder per seed and a manifest.

``write_domain_dataset(out, n, first_seed, domain="randomised")`` writes
``out/tomo_<seed>/`` (tomogram.mrc, semantic.mrc, instances.mrc, particles.star,
particles.csv, config.json) for seeds ``first_seed .. first_seed + n - 1`` and
``out/manifest.json`` recording the domain, the training ranges, the shifted settings
(for a shifted set), and per tomogram its seed, folder and configuration.  The manifest
is rewritten atomically after every tomogram, so a cancelled run leaves a valid
manifest of the finished ones.  Use disjoint seed ranges for training and test sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path

from tomolens.io import atomic_path
from tomolens.jobs import Progress, relay
from tomolens.simulate.domain import (
    SHIFTED_SETTINGS,
    TRAINING_RANGES,
    DomainConfig,
    outside_training,
    sample_domain_config,
    shifted_domain_config,
)
from tomolens.simulate.domain_scene import simulate_domain_tomogram

DOMAINS = ("randomised", "shifted")


def domain_config(domain: str, seed: int, shape_zyx=(64, 256, 256), maps_dir="auto") -> DomainConfig:
    """The configuration of one ``domain`` ("randomised" or "shifted") tomogram for ``seed``."""
    if domain == "randomised":
        return sample_domain_config(TRAINING_RANGES, seed, shape_zyx, maps_dir)
    if domain == "shifted":
        return shifted_domain_config(seed, shape_zyx, maps_dir)
    raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}.")


def domain_metadata(domain: str, cfg: DomainConfig) -> dict:
    """What a saved domain tomogram records beside its config: the domain, the training
    ranges, and for a shifted one the shifted settings and which lie outside training."""
    meta = {"domain": domain, "training_ranges": TRAINING_RANGES.to_dict()}
    if domain == "shifted":
        meta["shifted_settings"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in SHIFTED_SETTINGS.items()}
        meta["outside_training"] = outside_training(cfg)
    return meta


def write_domain_dataset(
    out_dir: str | os.PathLike,
    n: int,
    first_seed: int = 0,
    domain: str = "randomised",
    shape_zyx=(64, 256, 256),
    maps_dir="auto",
) -> Generator[Progress, None, Path]:
    """Simulate and write ``n`` domain tomograms with a manifest (job; module docstring).

    Returns
    -------
    Path
        ``out_dir/manifest.json``.

    Raises
    ------
    ValueError
        ``n`` < 1, an unknown domain, bad shape, or an output folder that already holds
        a manifest (choose a new folder rather than mixing datasets).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}.")
    out = Path(out_dir)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        raise ValueError(f"{manifest_path} exists; write a new dataset into an empty folder.")
    configs = [domain_config(domain, first_seed + i, shape_zyx, maps_dir) for i in range(n)]  # fail early
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "domain": domain,
        "n": n,
        "first_seed": first_seed,
        "shape_zyx": [int(s) for s in shape_zyx],
        **domain_metadata(domain, configs[0]),
        "tomograms": [],
    }
    manifest.pop("outside_training", None)
    for i, cfg in enumerate(configs):
        sim = yield from relay(
            simulate_domain_tomogram(cfg),
            lambda p, i=i: Progress(i * 1000 + int(1000 * p.fraction), n * 1000, f"tomogram {i + 1}/{n}: {p.message}"),
        )
        folder = out / f"tomo_{cfg.seed:06d}"
        sim.save(folder, domain_metadata(domain, cfg), write_tilt_series=False)  # training data: no stacks
        manifest["tomograms"].append(
            {"seed": cfg.seed, "folder": folder.name, "n_particles": len(sim.particles), "config": cfg.to_dict()}
        )
        with atomic_path(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
    return manifest_path
