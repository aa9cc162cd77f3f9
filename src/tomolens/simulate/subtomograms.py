"""Labelled subtomogram datasets for classification (seed 000's protocol).

For every class and sample, a small crowded scene is built: the class's template at a
uniformly random orientation, centred in the box with a random shift of up to
``jitter_A`` per axis, and (``crowding=True``) neighbours of random classes packed around
it without overlap.  The clean scene is filtered once with the missing wedge and CTF
(the Fourier mode of :mod:`tomolens.simulate.imaging`), then noise is added for every
requested SNR (SNR = var(signal) / var(noise) on the subtomogram), and the central
``box³`` is cropped and normalised (mean 0, std 1).

A template that the box would crop is refused before any work
(:func:`check_templates_fit_box`: its radius plus the jitter must fit the half-box), and
``dataset.json`` records every template's radius (``template_radius_A``).

Every sample is assigned to train / val / test *once*, stratified by class, so the same
underlying particle is in the same split at every SNR and no test sample is ever seen
in training.

Layout written by :func:`simulate_subtomograms`::

    out_dir/dataset.json
    out_dir/<snr>/train.npz, val.npz, test.npz      # <snr> = "0.03", "0.05", "inf", ...

each ``.npz`` holding ``x`` float32 (N, box, box, box), ``y`` int64 (N,), ``class_names``
(str), ``angles`` float64 (N, 3) (RELION rot, tilt, psi of the central particle) and
``shifts_A`` float64 (N, 3) (z, y, x offset of its centre from the box centre).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from tomolens.io.atomic import atomic_path
from tomolens.jobs import Progress
from tomolens.simulate.imaging import CtfParams, fourier_filter, missing_wedge_mask, wedge_noise
from tomolens.simulate.scene import Scene, candidate_pool, pack_particles, place_particle
from tomolens.simulate.templates import load_templates

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class SubtomogramConfig:
    """Settings of a subtomogram dataset (lengths in Å, angles in degrees)."""

    templates: Sequence[str] | None = None
    n_per_class: int = 100
    box: int = 32
    voxel_size_A: float = 10.0
    snrs: Sequence[float] = (0.03, 0.05, math.inf)
    jitter_A: float = 20.0
    crowding: bool = True
    crowding_fraction: float = 0.2
    split: Sequence[float] = (0.7, 0.15, 0.15)
    tilt_range_deg: float = 60.0
    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_A2: float = 0.0
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.n_per_class < 3:
            raise ValueError(f"n_per_class must be at least 3 (one per split), got {self.n_per_class}.")
        if self.box < 8:
            raise ValueError(f"box must be at least 8 voxels, got {self.box}.")
        if not self.voxel_size_A > 0:
            raise ValueError(f"voxel_size_A must be positive, got {self.voxel_size_A}.")
        if not self.snrs or any(not s > 0 for s in self.snrs):
            raise ValueError(f"snrs must be positive numbers (math.inf for no noise), got {self.snrs}.")
        if self.jitter_A < 0:
            raise ValueError(f"jitter_A must be 0 or more, got {self.jitter_A}.")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or not math.isclose(sum(self.split), 1.0):
            raise ValueError(f"split must be three fractions summing to 1, got {self.split}.")
        if not 0 <= self.crowding_fraction <= 0.4:
            raise ValueError(f"crowding_fraction must be in [0, 0.4], got {self.crowding_fraction}.")
        if not 0 < self.tilt_range_deg <= 90:
            raise ValueError(f"tilt_range_deg must be in (0, 90], got {self.tilt_range_deg}.")
        self.ctf.check()

    @property
    def ctf(self) -> CtfParams:
        return CtfParams(self.defocus_um, self.voltage_kv, self.cs_mm, self.amplitude_contrast, self.b_factor_A2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["templates"] = None if self.templates is None else [str(t) for t in self.templates]
        d["snrs"] = [snr_name(s) for s in self.snrs]
        d["split"] = list(self.split)
        return d


def snr_name(snr: float) -> str:
    """Folder name of an SNR: ``0.03``, ``0.05``, ``inf``."""
    return "inf" if math.isinf(snr) else f"{snr:g}"


def check_templates_fit_box(templates, box: int, voxel_size_A: float, jitter_A: float) -> dict[str, float]:
    """Refuse templates that a ``box``-voxel cube would crop; return every template's radius.

    A particle is centred in the box with a shift of up to ``jitter_A`` per axis, so it fits
    only when its radius (:attr:`~tomolens.simulate.templates.Template.radius_A`) plus
    ``jitter_A`` is at most half the box edge.

    Parameters
    ----------
    templates : list of Template
    box : int
        Box edge, voxels.
    voxel_size_A, jitter_A : float
        Å.

    Returns
    -------
    dict of str -> float
        Template name → radius in Å (rounded to 0.1 Å).

    Raises
    ------
    ValueError
        Naming every template that does not fit, by how much it would be cropped, and the
        smallest box (a multiple of 8 voxels, as the classifiers need) that holds them all.
    """
    half_A = box * voxel_size_A / 2.0
    radii = {t.name: round(t.radius_A, 1) for t in templates}
    too_big = {name: r for name, r in radii.items() if r + jitter_A > half_A + 1e-6}
    if too_big:
        needed = 2.0 * (max(too_big.values()) + jitter_A) / voxel_size_A
        suggested = int(math.ceil(needed / 8.0) * 8)
        listed = ", ".join(
            f"{name} (radius {r:g} Å: cropped by {r + jitter_A - half_A:.0f} Å)"
            for name, r in sorted(too_big.items(), key=lambda kv: -kv[1])
        )
        raise ValueError(
            f"The {box}-voxel box at {voxel_size_A:g} Å (half-box {half_A:g} Å, particles shifted by up to "
            f"{jitter_A:g} Å) would crop {listed}. Use a box of at least {suggested} voxels "
            f"({suggested * voxel_size_A:g} Å), a larger voxel size, or leave these templates out."
        )
    return radii


def _split_indices(n: int, fractions, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    n_val = max(1, int(round(fractions[1] * n))) if fractions[1] > 0 else 0
    n_test = max(1, int(round(fractions[2] * n))) if fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    return [order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]]


def simulate_subtomograms(
    cfg: SubtomogramConfig,
    out_dir: str | os.PathLike,
) -> Generator[Progress, None, dict[str, Path]]:
    """Simulate a labelled subtomogram dataset and write it (job).

    Parameters
    ----------
    cfg : SubtomogramConfig
    out_dir : path
        Output folder (created).

    Returns
    -------
    dict of str -> Path
        ``"dataset"`` (dataset.json) and ``"<snr>/<split>"`` for every ``.npz``.
    """
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    templates = load_templates(cfg.templates, cfg.voxel_size_A)
    radii = check_templates_fit_box(templates, cfg.box, cfg.voxel_size_A, cfg.jitter_A)
    names = [t.name for t in templates]
    n_cls, n_per, box = len(templates), int(cfg.n_per_class), int(cfg.box)
    max_half = max(t.density.shape[0] for t in templates) // 2
    margin = max(4, min(max_half, box // 4))
    scene_n = box + 2 * margin
    shape = (scene_n,) * 3
    filt = fourier_filter(shape, cfg.voxel_size_A, cfg.tilt_range_deg, cfg.ctf)
    wedge = missing_wedge_mask(shape, cfg.tilt_range_deg)
    total = n_cls * n_per
    # neighbours come from a pool of pre-rendered orientations (their identity is not a label)
    pool = candidate_pool(templates, 16, rng) if cfg.crowding and cfg.crowding_fraction > 0 else None
    x = {snr_name(s): np.empty((total, box, box, box), np.float32) for s in cfg.snrs}
    measured = {snr_name(s): [] for s in cfg.snrs}
    y = np.repeat(np.arange(n_cls, dtype=np.int64), n_per)
    angles = np.empty((total, 3))
    shifts = np.empty((total, 3))
    crop = (slice(margin, margin + box),) * 3
    centre = (scene_n - 1) / 2.0
    jitter_v = cfg.jitter_A / cfg.voxel_size_A
    for i in range(total):
        cls = int(y[i])
        scene = Scene.empty(shape)
        euler = Rotation.random(random_state=rng).inv().as_euler("ZYZ", degrees=True)
        shift = rng.uniform(-jitter_v, jitter_v, 3)
        rec = place_particle(scene, templates, cls, euler, centre + shift)
        if cfg.crowding and cfg.crowding_fraction > 0:
            target = min(0.45, cfg.crowding_fraction + rec["mask_voxels"] / float(np.prod(shape)))
            for _ in pack_particles(
                scene, templates, rng, None, target, max_trials=60, max_failures=8, allow_partial=True, pool=pool
            ):
                pass
        signal = np.fft.irfftn(np.fft.rfftn(scene.density) * filt, s=shape, axes=(0, 1, 2)).astype(np.float32)
        for s in cfg.snrs:
            noisy, snr_m = wedge_noise(signal, wedge, s, rng)
            sub = noisy[crop]
            std = float(sub.std())
            x[snr_name(s)][i] = (sub - sub.mean()) / (std if std > 0 else 1.0)
            measured[snr_name(s)].append(snr_m)
        angles[i] = rec["euler"]
        shifts[i] = shift * cfg.voxel_size_A
        if (i + 1) % max(1, total // 50) == 0 or i + 1 == total:
            yield Progress(i + 1, total + 1, f"subtomogram {i + 1}/{total} ({names[cls]})")
    # stratified split, shared by all SNRs
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SPLITS}
    for cls in range(n_cls):
        idx = np.flatnonzero(y == cls)
        for name, sel in zip(SPLITS, _split_indices(len(idx), cfg.split, rng)):
            parts[name].append(idx[sel])
    split_idx = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for s in cfg.snrs:
        key = snr_name(s)
        folder = out / key
        folder.mkdir(parents=True, exist_ok=True)
        for name, idx in split_idx.items():
            path = folder / f"{name}.npz"
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(
                        fh,
                        x=x[key][idx],
                        y=y[idx],
                        class_names=np.array(names),
                        angles=angles[idx],
                        shifts_A=shifts[idx],
                    )
            paths[f"{key}/{name}"] = path
    meta = {
        "config": cfg.to_dict(),
        "class_names": names,
        "template_radius_A": radii,
        "counts": {k: int(len(v)) for k, v in split_idx.items()},
        "snr_folders": [snr_name(s) for s in cfg.snrs],
        "measured_snr": {k: (None if not v or math.isinf(v[0]) else float(np.mean(v))) for k, v in measured.items()},
        "snr_definition": "var(signal)/var(noise) on the (box + margin) subvolume before cropping",
        "files": {k: str(p.relative_to(out)) for k, p in paths.items()},
    }
    with atomic_path(out / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    paths["dataset"] = out / "dataset.json"
    yield Progress(total + 1, total + 1, "dataset written")
    return paths


def load_subtomogram_split(path_npz: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read one split written by :func:`simulate_subtomograms`.

    Returns
    -------
    x : ndarray float32 (N, box, box, box)
    y : ndarray int64 (N,)
    class_names : list of str
    """
    path = Path(path_npz)
    if not path.is_file():
        raise FileNotFoundError(f"No such subtomogram split: {str(path)!r}")
    with np.load(path, allow_pickle=False) as data:
        missing = {"x", "y", "class_names"} - set(data.files)
        if missing:
            raise ValueError(f"{path.name} is not a tomolens subtomogram split (missing {sorted(missing)}).")
        return (
            data["x"].astype(np.float32, copy=False),
            data["y"].astype(np.int64),
            [str(n) for n in data["class_names"]],
        )
