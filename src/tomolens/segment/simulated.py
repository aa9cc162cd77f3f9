"""Simulated cell-like tomograms with dense segmentation truth (membrane, filament, particle).

Wraps :func:`tomolens.simulate.simulate_tomogram`: every template class becomes
"particle"; vesicle membranes and filaments keep their names
(:data:`tomolens.segment.labels.DEFAULT_CLASSES`).  Simulation is deterministic in its
seed, so results may be cached on disk (``cache_dir``) and reused by training and
benchmarks without changing them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomolens.io.atomic import atomic_path
from tomolens.jobs import run_job
from tomolens.segment.labels import DEFAULT_CLASSES, semantic_to_classes

log = logging.getLogger(__name__)


@dataclass
class SegmentationSample:
    """One simulated tomogram and its dense class indices.

    Attributes
    ----------
    tomogram : ndarray float32 (z, y, x)
        Normalised, protein bright.
    classes : ndarray int16 (z, y, x)
        Class index per voxel (0 = background, see ``class_names``).
    voxel_size_A : float
    seed : int
    snr : float
    """

    tomogram: np.ndarray
    classes: np.ndarray
    voxel_size_A: float
    seed: int
    snr: float
    class_names: tuple[str, ...] = DEFAULT_CLASSES


def simulate_sample(
    seed: int,
    shape_zyx: Sequence[int] = (64, 128, 128),
    snr: float = 0.05,
    voxel_size_A: float = 10.0,
    volume_fraction: float = 0.15,
    n_membranes: int = 2,
    n_filaments: int = 3,
    cache_dir: str | Path | None = None,
) -> SegmentationSample:
    """Simulate (or read from ``cache_dir``) one cell-like tomogram with segmentation truth.

    Parameters
    ----------
    seed : int
        Simulator seed (the same seed gives the same tomogram).
    shape_zyx : tuple of int
        Volume shape in voxels.
    snr : float
        Signal-to-noise ratio on the projections (``math.inf`` = no noise).
    voxel_size_A : float
        Voxel size in Å.
    volume_fraction : float
        Crowding: fraction of the volume in particles.
    n_membranes, n_filaments : int
        Vesicles and filaments per tomogram.
    cache_dir : path, optional
        Directory of cached ``.npz`` files keyed by all of the settings.

    Returns
    -------
    SegmentationSample
    """
    from tomolens.simulate.tomogram import SimulationConfig, simulate_tomogram

    settings = {
        "seed": int(seed),
        "shape_zyx": [int(s) for s in shape_zyx],
        "snr": "inf" if math.isinf(snr) else float(snr),
        "voxel_size_A": float(voxel_size_A),
        "volume_fraction": float(volume_fraction),
        "n_membranes": int(n_membranes),
        "n_filaments": int(n_filaments),
    }
    cache = None
    if cache_dir is not None:
        key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"segsim_{seed}_{key}.npz"
        if cache.is_file():
            with np.load(cache) as npz:
                return SegmentationSample(npz["tomogram"], npz["classes"], float(voxel_size_A), int(seed), float(snr))
    cfg = SimulationConfig(
        shape_zyx=tuple(int(s) for s in shape_zyx),
        voxel_size_A=voxel_size_A,
        volume_fraction=volume_fraction,
        snr=snr,
        n_membranes=n_membranes,
        n_filaments=n_filaments,
        seed=int(seed),
    )
    log.info("simulating tomogram seed %d, shape %s, SNR %s", seed, tuple(shape_zyx), snr)
    sim = run_job(simulate_tomogram(cfg))
    classes = semantic_to_classes(sim.semantic, sim.class_names)
    sample = SegmentationSample(
        np.asarray(sim.tomogram, np.float32), classes, float(voxel_size_A), int(seed), float(snr)
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, tomogram=sample.tomogram, classes=sample.classes)
    return sample


def dice_per_class(predicted: np.ndarray, truth: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """Dice coefficient 2|P∩T| / (|P| + |T|) per class of two class-index volumes.

    Classes absent from both volumes get NaN.
    """
    out = {}
    for k, name in enumerate(class_names):
        p, t = predicted == k, truth == k
        denom = int(p.sum()) + int(t.sum())
        out[name] = float(2 * np.logical_and(p, t).sum() / denom) if denom else float("nan")
    return out
