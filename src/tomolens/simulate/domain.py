"""Domain-randomised training data and a shifted-domain test set: ranges and configurations.

:class:`DomainRanges` holds the training ranges (record ``to_dict()`` in the cards of
models trained on them); :func:`sample_domain_config` draws one fully specified
:class:`DomainConfig` per tomogram from a seed; :func:`shifted_domain_config` draws a test
configuration with settings deliberately **outside** the training ranges
(:data:`SHIFTED_SETTINGS`, checked by :func:`outside_training`):

- reconstruction: true iterative SIRT (15 iterations); training uses only WBP and the
  SIRT-like filtered WBP;
- tilt scheme: ±35° in 2.5° steps; training ranges are ±45° … ±70°;
- voxel size: 24 Å; training voxel sizes are 5-20 Å;
- macromolecules: the 4 held-out maps of ``maps_10A`` (:data:`HELD_OUT_MAPS`) and the
  ``branched`` pseudo-protein family; training uses the other 8 maps and the families
  compact, elongated, hollow and multilobe.

Everything else in a shifted configuration is drawn from the training ranges.  The
simulation itself is :func:`tomolens.simulate.domain_scene.simulate_domain_tomogram`.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from tomolens.simulate.domain_imaging import RECONSTRUCTIONS
from tomolens.simulate.pseudoproteins import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    SIZE_RANGE_NM,
    TRAINING_FAMILIES,
    PseudoProteinSpec,
    sample_pseudoprotein,
)
from tomolens.simulate.tomogram import POLARITIES

#: Fixed semantic classes of domain-randomised tomograms (value = index).
DOMAIN_CLASSES = ("background", "membrane", "microtubule", "actin", "macromolecule", "gold", "carbon")
ALL_MAPS = ("1bxn", "1qvr", "1s3x", "1u6g", "2cg9", "3cf3", "3d2f", "3gl1", "3h84", "3qm1", "4cr2", "5mrc")
HELD_OUT_MAPS = ("1qvr", "3cf3", "3qm1", "5mrc")
TRAINING_MAPS = tuple(m for m in ALL_MAPS if m not in HELD_OUT_MAPS)
#: Finest voxel simulated before binning, Å (finer would cost more than it shows).
MIN_FINE_VOXEL_A = 4.0
MAX_SUPERSAMPLING = 2
#: Smallest pseudo-protein, in final voxels across (smaller ones cannot be labelled).
MIN_PSEUDO_VOXELS = 5

SHIFTED_SETTINGS = {
    "reconstruction": "sirt",
    "reconstruction_iterations": 15,
    "tilt_range_deg": 35.0,
    "tilt_step_deg": 2.5,
    "voxel_size_A": 24.0,
    "map_names": HELD_OUT_MAPS,
    "pseudo_families": HELD_OUT_FAMILIES,
}


def default_maps_dir() -> Path | None:
    """``$TOMOLENS_MAPS_DIR``, else ``../shared/data/maps_10A`` beside the source checkout, if present."""
    env = os.environ.get("TOMOLENS_MAPS_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data" / "maps_10A")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def _range_ok(name: str, r, lo: float, hi: float) -> None:
    if len(r) != 2 or not (lo <= r[0] <= r[1] <= hi):
        raise ValueError(f"{name} must be a (low, high) pair with {lo} <= low <= high <= {hi}; got {r}.")


#: Physical limits of every (low, high) range of :class:`DomainRanges`.
_LIMITS = {
    "voxel_size_A": (1.0, 100.0),
    "binning": (1, 8),
    "tilt_range_deg": (1.0, 90.0),
    "tilt_step_deg": (0.1, 30.0),
    "defocus_um": (0.0, 20.0),
    "snr": (1e-4, 1e4),
    "noise_exponent": (0.0, 3.0),
    "sirt_like_iterations": (1, 1000),
    "lowpass_fraction": (0.05, 1.0),
    "tilt_axis_error_deg": (0.0, 10.0),
    "shift_jitter_px": (0.0, 10.0),
    "ice_gradient": (0.0, 3.0),
    "gold_beads": (0, 100),
    "membrane_thickness_nm": (2.0, 10.0),
    "vesicles": (0, 50),
    "vesicle_radius_nm": (5.0, 5000.0),
    "sheets": (0, 10),
    "sheet_curvature_radius_nm": (20.0, 1e5),
    "microtubules": (0, 50),
    "actin": (0, 100),
    "macromolecule_fraction": (0.0, 0.4),
    "pseudo_templates": (0, 50),
    "pseudo_size_nm": SIZE_RANGE_NM,
    "map_templates": (0, len(ALL_MAPS)),
}


@dataclass(frozen=True)
class DomainRanges:
    """Training ranges of the domain-randomised simulator (pairs are inclusive (low, high)).

    Lengths: ``_A`` Å, ``_nm`` nm; angles degrees; probabilities in [0, 1]; counts are per
    tomogram.  ``snr`` is var(signal)/var(noise) per acquisition pixel of the projections.
    """

    voxel_size_A: tuple[float, float] = (5.0, 20.0)
    binning: tuple[int, int] = (1, 4)
    tilt_range_deg: tuple[float, float] = (45.0, 70.0)
    tilt_step_deg: tuple[float, float] = (1.0, 5.0)
    defocus_um: tuple[float, float] = (1.0, 8.0)
    ctf_corrected_probability: float = 0.5
    snr: tuple[float, float] = (0.02, 0.5)
    noise_exponent: tuple[float, float] = (0.0, 1.0)
    reconstructions: tuple[str, ...] = ("wbp", "sirt_like")
    sirt_like_iterations: tuple[int, int] = (5, 30)
    lowpass_fraction: tuple[float, float] = (0.4, 1.0)
    tilt_axis_error_deg: tuple[float, float] = (0.0, 2.0)
    shift_jitter_px: tuple[float, float] = (0.0, 1.0)
    ice_gradient: tuple[float, float] = (0.0, 0.5)
    gold_beads: tuple[int, int] = (0, 6)
    carbon_probability: float = 0.3
    dark_probability: float = 0.5
    membrane_thickness_nm: tuple[float, float] = (4.0, 6.0)
    vesicles: tuple[int, int] = (0, 3)
    vesicle_radius_nm: tuple[float, float] = (20.0, 300.0)
    sheets: tuple[int, int] = (0, 1)
    sheet_curvature_radius_nm: tuple[float, float] = (100.0, 1000.0)
    curved_sheet_probability: float = 0.5
    decorated_probability: float = 0.5
    microtubules: tuple[int, int] = (0, 2)
    actin: tuple[int, int] = (0, 4)
    curved_filament_probability: float = 0.5
    bundle_probability: float = 0.3
    branch_probability: float = 0.3
    macromolecule_fraction: tuple[float, float] = (0.03, 0.15)
    pseudo_templates: tuple[int, int] = (3, 6)
    pseudo_size_nm: tuple[float, float] = SIZE_RANGE_NM
    pseudo_families: tuple[str, ...] = TRAINING_FAMILIES
    map_templates: tuple[int, int] = (0, 4)
    map_names: tuple[str, ...] = TRAINING_MAPS

    def check(self) -> None:
        """Raise ValueError naming the first bad range and what is allowed."""
        for name, (lo, hi) in _LIMITS.items():
            _range_ok(name, getattr(self, name), lo, hi)
        for f in fields(self):
            if f.name.endswith("probability") and not 0 <= getattr(self, f.name) <= 1:
                raise ValueError(f"{f.name} must be in [0, 1], got {getattr(self, f.name)}.")
        if not self.reconstructions or not set(self.reconstructions) <= set(RECONSTRUCTIONS):
            raise ValueError(
                f"reconstructions must be a non-empty subset of {RECONSTRUCTIONS}, got {self.reconstructions}."
            )
        if not set(self.pseudo_families) <= set(FAMILIES):
            raise ValueError(f"pseudo_families must be among {FAMILIES}, got {self.pseudo_families}.")
        if not set(self.map_names) <= set(ALL_MAPS):
            raise ValueError(f"map_names must be among {ALL_MAPS}, got {self.map_names}.")
        if not self.pseudo_families and not (self.map_names and self.map_templates[1] > 0):
            raise ValueError("No macromolecule source: give pseudo_families or map_names.")

    def to_dict(self) -> dict:
        """JSON-ready ranges (lists for pairs), for manifests and model cards."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


TRAINING_RANGES = DomainRanges()


@dataclass(frozen=True)
class DomainConfig:
    """One fully specified domain-randomised tomogram (see :class:`DomainRanges` for units).

    ``binning`` is the ratio of the final voxel to the acquisition pixel; the scene is
    simulated ``supersampling`` times finer (≤ binning; the rest of the binning is
    emulated by scaling the noise, see :mod:`tomolens.simulate.domain_scene`).
    """

    seed: int
    shape_zyx: tuple[int, int, int] = (64, 256, 256)
    voxel_size_A: float = 10.0
    binning: int = 2
    supersampling: int = 2
    polarity: str = "dark"
    tilt_range_deg: float = 60.0
    tilt_step_deg: float = 3.0
    defocus_um: float = 4.0
    ctf_corrected: bool = False
    snr: float = 0.1
    noise_exponent: float = 0.0
    reconstruction: str = "wbp"
    reconstruction_iterations: int = 0
    lowpass_fraction: float = 1.0
    tilt_axis_error_deg: float = 0.0
    shift_jitter_px: float = 0.0
    ice_gradient: float = 0.0
    ice_direction_deg: float = 0.0
    n_gold: int = 0
    carbon: bool = False
    carbon_coverage: float = 0.25
    carbon_thickness_nm: float = 15.0
    membrane_thickness_nm: float = 5.0
    vesicle_radii_nm: tuple[float, ...] = ()
    sheet_curvature_radii_nm: tuple[float, ...] = ()  # 0 = flat
    decorated_probability: float = 0.5
    n_microtubules: int = 0
    n_actin: int = 0
    curved_filament_probability: float = 0.5
    bundle_probability: float = 0.3
    branch_probability: float = 0.3
    macromolecule_fraction: float = 0.1
    pseudoproteins: tuple[PseudoProteinSpec, ...] = field(default_factory=tuple)
    map_names: tuple[str, ...] = ()
    maps_dir: str | None = None
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07

    @property
    def fine_voxel_A(self) -> float:
        return self.voxel_size_A / self.supersampling

    def check(self) -> None:
        """Raise ValueError naming the first bad setting and what to do."""
        shape = tuple(self.shape_zyx)
        if len(shape) != 3 or any(int(s) != s or s < 16 for s in shape):
            raise ValueError(f"shape_zyx must be three integers of at least 16 voxels, got {self.shape_zyx}.")
        if not 1.0 <= self.voxel_size_A <= 100.0:
            raise ValueError(f"voxel_size_A must be 1-100 Å, got {self.voxel_size_A}.")
        if not (1 <= self.supersampling <= self.binning <= 8):
            raise ValueError(f"Need 1 <= supersampling <= binning <= 8, got {self.supersampling}, {self.binning}.")
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {self.polarity!r}.")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {self.reconstruction!r}.")
        if self.reconstruction != "wbp" and self.reconstruction_iterations < 1:
            raise ValueError(f"{self.reconstruction} needs reconstruction_iterations >= 1.")
        if not self.snr > 0:
            raise ValueError(f"snr must be positive, got {self.snr}.")
        if not 0 < self.lowpass_fraction <= 1:
            raise ValueError(f"lowpass_fraction must be in (0, 1], got {self.lowpass_fraction}.")
        if self.map_names and not self.maps_dir:
            raise ValueError("map_names are given but maps_dir is not; give the folder of the maps.")
        if not self.pseudoproteins and not self.map_names:
            raise ValueError("No macromolecule templates: give pseudoproteins or map_names.")
        for spec in self.pseudoproteins:
            spec.check()
        from tomolens.simulate.imaging import CtfParams, tilt_angles

        tilt_angles(self.tilt_range_deg, self.tilt_step_deg)
        CtfParams(self.defocus_um, self.voltage_kv, self.cs_mm, self.amplitude_contrast).check()

    def to_dict(self) -> dict:
        """JSON-ready configuration (the saved metadata's ``config``)."""
        d = asdict(self)
        d["shape_zyx"] = [int(s) for s in self.shape_zyx]
        d["pseudoproteins"] = [s.to_dict() for s in self.pseudoproteins]
        for k in ("vesicle_radii_nm", "sheet_curvature_radii_nm", "map_names"):
            d[k] = list(d[k])
        d["kind"] = "domain"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DomainConfig:
        """Inverse of :meth:`to_dict`."""
        d = {k: v for k, v in d.items() if k != "kind"}
        d["shape_zyx"] = tuple(d["shape_zyx"])
        d["pseudoproteins"] = tuple(PseudoProteinSpec(**s) for s in d.get("pseudoproteins", ()))
        for k in ("vesicle_radii_nm", "sheet_curvature_radii_nm", "map_names"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)


def _uniform(rng, r, digits: int = 3) -> float:
    return float(np.round(rng.uniform(r[0], r[1]), digits))


def _integer(rng, r) -> int:
    return int(rng.integers(r[0], r[1] + 1))


def pseudo_size_range(size_range_nm, shape_zyx, voxel_size_A: float) -> tuple[float, float]:
    """Pseudo-protein sizes (nm) for a tomogram: ``size_range_nm`` with the low end raised to
    at least :data:`MIN_PSEUDO_VOXELS` final voxels and the high end capped at 0.8 × the slab
    thickness (never below the low end)."""
    lo = min(max(size_range_nm[0], MIN_PSEUDO_VOXELS * voxel_size_A / 10), size_range_nm[1])
    hi = min(size_range_nm[1], 0.8 * shape_zyx[0] * voxel_size_A / 10)
    return float(lo), float(max(lo, hi))


def sample_domain_config(
    ranges: DomainRanges = TRAINING_RANGES,
    seed: int = 0,
    shape_zyx=(64, 256, 256),
    maps_dir: str | os.PathLike | None = "auto",
) -> DomainConfig:
    """Draw one tomogram's configuration from ``ranges`` (the same seed gives the same config).

    Parameters
    ----------
    ranges : DomainRanges
    seed : int
        Seed of the draw and of the scene.
    shape_zyx : tuple of 3 int
        Final tomogram shape (voxels, z y x).
    maps_dir : path, None or "auto"
        Folder with ``<name>.mrc`` maps; "auto" = :func:`default_maps_dir` (pseudo-proteins
        only when there is none); None = pseudo-proteins only.  The other settings drawn
        for a seed are the same with or without maps.

    Raises
    ------
    ValueError
        Bad ranges or shape, a ``maps_dir`` that is not a folder, or no pseudo-protein
        families and no maps folder.
    """
    ranges.check()
    if maps_dir == "auto":
        maps_dir = default_maps_dir()
    elif maps_dir is not None and not Path(maps_dir).is_dir():
        raise ValueError(
            f"maps_dir {maps_dir} is not a folder; give the maps_10A folder, or none for pseudo-proteins only."
        )
    maps_dir = None if maps_dir is None else str(maps_dir)
    rng = np.random.default_rng(seed)
    vox = _uniform(rng, ranges.voxel_size_A, 2)
    binning = _integer(rng, ranges.binning)
    supersampling = max(1, min(binning, MAX_SUPERSAMPLING, int(vox // MIN_FINE_VOXEL_A)))
    shape = tuple(int(s) for s in shape_zyx)
    sizes = pseudo_size_range(ranges.pseudo_size_nm, shape, vox)
    pseudo = tuple(
        sample_pseudoprotein(ranges.pseudo_families, rng, sizes)
        for _ in range(_integer(rng, ranges.pseudo_templates) if ranges.pseudo_families else 0)
    )
    # drawn with or without a maps folder, so that the other settings of a seed do not depend on it
    n_maps = min(_integer(rng, ranges.map_templates), len(ranges.map_names))
    order = rng.permutation(len(ranges.map_names))
    maps = tuple(str(ranges.map_names[i]) for i in order[:n_maps]) if maps_dir else ()
    if not pseudo and not maps:
        raise ValueError(
            "No macromolecule templates could be drawn: the ranges give no pseudo-protein "
            "families and no maps folder was found; give maps_dir or pseudo_families."
        )
    recon = str(ranges.reconstructions[int(rng.integers(len(ranges.reconstructions)))])
    cfg = DomainConfig(
        seed=int(seed),
        shape_zyx=shape,
        voxel_size_A=vox,
        binning=binning,
        supersampling=supersampling,
        polarity="dark" if rng.random() < ranges.dark_probability else "bright",
        tilt_range_deg=_uniform(rng, ranges.tilt_range_deg, 1),
        tilt_step_deg=_uniform(rng, ranges.tilt_step_deg, 1),
        defocus_um=_uniform(rng, ranges.defocus_um, 2),
        ctf_corrected=bool(rng.random() < ranges.ctf_corrected_probability),
        snr=float(np.round(math.exp(rng.uniform(*np.log(ranges.snr))), 4)),
        noise_exponent=_uniform(rng, ranges.noise_exponent, 2),
        reconstruction=recon,
        reconstruction_iterations=_integer(rng, ranges.sirt_like_iterations) if recon != "wbp" else 0,
        lowpass_fraction=_uniform(rng, ranges.lowpass_fraction, 2),
        tilt_axis_error_deg=_uniform(rng, ranges.tilt_axis_error_deg, 2) * float(rng.choice([-1, 1])),
        shift_jitter_px=_uniform(rng, ranges.shift_jitter_px, 2),
        ice_gradient=_uniform(rng, ranges.ice_gradient, 2),
        ice_direction_deg=_uniform(rng, (0, 360), 1),
        n_gold=_integer(rng, ranges.gold_beads),
        carbon=bool(rng.random() < ranges.carbon_probability),
        carbon_coverage=_uniform(rng, (0.1, 0.35), 2),
        carbon_thickness_nm=_uniform(rng, (10.0, 20.0), 1),
        membrane_thickness_nm=_uniform(rng, ranges.membrane_thickness_nm, 2),
        vesicle_radii_nm=tuple(
            _uniform(rng, ranges.vesicle_radius_nm, 1) for _ in range(_integer(rng, ranges.vesicles))
        ),
        sheet_curvature_radii_nm=tuple(
            _uniform(rng, ranges.sheet_curvature_radius_nm, 0)
            if rng.random() < ranges.curved_sheet_probability
            else 0.0
            for _ in range(_integer(rng, ranges.sheets))
        ),
        decorated_probability=ranges.decorated_probability,
        n_microtubules=_integer(rng, ranges.microtubules),
        n_actin=_integer(rng, ranges.actin),
        curved_filament_probability=ranges.curved_filament_probability,
        bundle_probability=ranges.bundle_probability,
        branch_probability=ranges.branch_probability,
        macromolecule_fraction=_uniform(rng, ranges.macromolecule_fraction, 3),
        pseudoproteins=pseudo,
        map_names=maps,
        maps_dir=maps_dir if maps else None,
    )
    cfg.check()
    return cfg


def shifted_domain_config(
    seed: int = 0, shape_zyx=(64, 256, 256), maps_dir: str | os.PathLike | None = "auto"
) -> DomainConfig:
    """A shifted-domain test configuration: drawn from the training ranges, then the
    settings of :data:`SHIFTED_SETTINGS` replaced by values outside them (module docstring).

    The macromolecules are the held-out maps (when ``maps_dir`` has them) and 3-6
    ``branched`` pseudo-proteins.  Never use these tomograms for training or early stopping.
    """
    held_out = DomainRanges(
        pseudo_families=SHIFTED_SETTINGS["pseudo_families"], map_names=SHIFTED_SETTINGS["map_names"]
    )
    cfg = sample_domain_config(held_out, seed, shape_zyx, maps_dir)
    vox = SHIFTED_SETTINGS["voxel_size_A"]
    lo, hi = pseudo_size_range(held_out.pseudo_size_nm, cfg.shape_zyx, vox)
    pseudo = tuple(replace(s, size_nm=float(np.clip(s.size_nm, lo, hi))) for s in cfg.pseudoproteins)
    cfg = replace(
        cfg,
        voxel_size_A=vox,
        supersampling=max(1, min(cfg.binning, MAX_SUPERSAMPLING, int(vox // MIN_FINE_VOXEL_A))),
        reconstruction=SHIFTED_SETTINGS["reconstruction"],
        reconstruction_iterations=SHIFTED_SETTINGS["reconstruction_iterations"],
        tilt_range_deg=SHIFTED_SETTINGS["tilt_range_deg"],
        tilt_step_deg=SHIFTED_SETTINGS["tilt_step_deg"],
        pseudoproteins=pseudo,
    )
    cfg.check()
    return cfg


def outside_training(cfg: DomainConfig, ranges: DomainRanges = TRAINING_RANGES) -> dict[str, bool]:
    """For each shifted setting, whether ``cfg`` lies outside the training ``ranges``.

    ``map_names`` and ``pseudo_families`` are only listed when ``cfg`` uses maps or
    pseudo-proteins; they count as outside when none of them is used in training.
    """
    out = {
        "reconstruction": cfg.reconstruction not in ranges.reconstructions,
        "tilt_range_deg": not ranges.tilt_range_deg[0] <= cfg.tilt_range_deg <= ranges.tilt_range_deg[1],
        "voxel_size_A": not ranges.voxel_size_A[0] <= cfg.voxel_size_A <= ranges.voxel_size_A[1],
    }
    if cfg.map_names:
        out["map_names"] = not set(cfg.map_names) & set(ranges.map_names)
    if cfg.pseudoproteins:
        out["pseudo_families"] = not {s.family for s in cfg.pseudoproteins} & set(ranges.pseudo_families)
    return out
