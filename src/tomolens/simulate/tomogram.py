"""Simulate a crowded tomogram with exact ground truth (the one entry point).

Pipeline: templates -> vesicles -> filaments -> particle packing (clean density,
semantic and instance labels) -> image formation, either

- ``mode="tiltseries"``: project to a tilt series (tilt axis y), apply the CTF to every
  image, add white Gaussian noise to reach ``snr`` **measured on the projections**
  (var(clean tilt series) / var(noise)), reconstruct by weighted back-projection; or
- ``mode="fourier"``: missing wedge + CTF as a 3D Fourier filter, with wedge-filtered
  noise; ``snr`` is then **measured on the volume**.

The tomogram is normalised to mean 0 and standard deviation 1, with protein BRIGHT
(positive density gives higher values; the contrast inversion usual for cryo-ET) for
``polarity="bright"`` (the default), or negated for ``polarity="dark"``: dense matter dark,
as in raw cryo-ET reconstructions.

Particles always lie wholly inside the volume; a template wider than the volume's
thinnest side fits only in some orientations, which biases its orientations: the simulator
warns (:func:`warn_templates_tight`), and ``config.json`` records every template's radius.

Instance ids: particles are 1..N in the order of ``particles`` (``instance_id`` column);
membranes and filaments follow (N+1...); they are not in the particle table but listed
in ``structures``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tomolens.io import ParticleTable, atomic_path, write_coordinates, write_mrc
from tomolens.jobs import Progress, relay
from tomolens.simulate.imaging import (
    CtfParams,
    TiltProjector,
    add_noise,
    apply_ctf_2d,
    fourier_image,
    tilt_angles,
)
from tomolens.simulate.scene import (
    Scene,
    add_filaments,
    add_vesicles,
    check_packing_request,
    pack_particles,
    renumber_particles_first,
)
from tomolens.simulate.templates import Template, load_templates

log = logging.getLogger(__name__)

MODES = ("tiltseries", "fourier")
#: "bright": dense matter positive (contrast-inverted); "dark": dense matter negative (raw cryo-ET).
POLARITIES = ("bright", "dark")


@dataclass
class SimulationConfig:
    """Settings of one simulated tomogram (lengths in Å, angles in degrees).

    ``templates`` None means all built-in phantoms; otherwise phantom names or MRC paths.
    ``n_particles`` None means "pack to ``volume_fraction``" (fraction of the volume in
    particle masks).  ``snr`` may be ``math.inf`` (no noise).  ``polarity`` "bright" (dense
    matter positive, the default) or "dark" (the normalised tomogram negated, as raw cryo-ET).
    """

    shape_zyx: tuple[int, int, int] = (64, 128, 128)
    voxel_size_A: float = 10.0
    templates: Sequence[str] | None = None
    n_particles: int | None = None
    volume_fraction: float = 0.2
    snr: float = 0.05
    tilt_range_deg: float = 60.0
    tilt_step_deg: float = 3.0
    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_A2: float = 0.0
    n_membranes: int = 0
    n_filaments: int = 0
    mode: str = "tiltseries"
    seed: int = 0
    apply_ctf: bool = True
    polarity: str = "bright"

    def check(self) -> None:
        """Raise ValueError naming the first bad setting and what to do."""
        shape = tuple(self.shape_zyx)
        if len(shape) != 3 or any(int(s) != s or s <= 0 for s in shape):
            raise ValueError(f"shape_zyx must be three positive integers, got {self.shape_zyx}.")
        if min(shape) < 8:
            raise ValueError(f"shape_zyx {shape} is too small; every side needs at least 8 voxels.")
        if not self.voxel_size_A > 0:
            raise ValueError(f"voxel_size_A must be positive, got {self.voxel_size_A}.")
        if self.n_particles is not None and self.n_particles < 0:
            raise ValueError(f"n_particles must be 0 or more, got {self.n_particles}.")
        if self.n_particles is None and not 0 <= self.volume_fraction < 1:
            raise ValueError(f"volume_fraction must be in [0, 1), got {self.volume_fraction}.")
        if not (self.snr > 0):
            raise ValueError(f"snr must be positive (or math.inf for no noise), got {self.snr}.")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.polarity not in POLARITIES:
            raise ValueError(
                f"polarity must be one of {POLARITIES} (dense matter bright or dark), got {self.polarity!r}."
            )
        if self.n_membranes < 0 or self.n_filaments < 0:
            raise ValueError("n_membranes and n_filaments must be 0 or more.")
        tilt_angles(self.tilt_range_deg, self.tilt_step_deg)
        self.ctf.check()

    @property
    def ctf(self) -> CtfParams:
        return CtfParams(self.defocus_um, self.voltage_kv, self.cs_mm, self.amplitude_contrast, self.b_factor_A2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape_zyx"] = [int(s) for s in self.shape_zyx]
        d["templates"] = None if self.templates is None else [str(t) for t in self.templates]
        d["snr"] = "inf" if math.isinf(self.snr) else self.snr
        return d


@dataclass
class SimulatedTomogram:
    """A simulated tomogram and its ground truth (see module docstring).

    Attributes
    ----------
    tomogram : ndarray float32 (z, y, x)
        Normalised (mean 0, std 1), protein bright (negated when ``config.polarity`` is "dark").
    semantic : ndarray uint8 (z, y, x)
        0 background, i = ``class_names[i]``.
    instances : ndarray uint32 (z, y, x)
        0 background; particle k has id ``particles.features.instance_id[k]``.
    particles : ParticleTable
        Centres in voxels (z, y, x); features class, class_name, rot, tilt, psi (RELION
        ZYZ, degrees), instance_id, radius_A.
    class_names : list of str
        ``"background"``, one per template, then ``"membrane"``/``"filament"`` if present.
    density : ndarray float32 (z, y, x)
        Clean density before image formation.
    tilt_series : ndarray float32 (n_tilts, y, x) or None
        Noisy CTF-filtered projections (tilt-series mode).
    tilt_series_clean : ndarray float32 or None
        The same without noise.
    """

    tomogram: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    particles: ParticleTable
    class_names: list[str]
    voxel_size_A: float
    config: SimulationConfig
    measured_snr: float
    snr_domain: str
    density: np.ndarray
    tilt_angles_deg: np.ndarray
    tilt_series: np.ndarray | None = None
    tilt_series_clean: np.ndarray | None = None
    structures: pd.DataFrame = field(default_factory=pd.DataFrame)
    volume_fraction: float = 0.0
    #: Template name → radius in Å (largest distance of its mask from its centre).
    template_radius_A: dict[str, float] = field(default_factory=dict)

    def save(
        self, out_dir: str | os.PathLike, extra_metadata: dict | None = None, write_tilt_series: bool = True
    ) -> dict[str, Path]:
        """Write tomogram.mrc, semantic.mrc, instances.mrc (labels), particles.star,
        particles.csv and config.json (with ``extra_metadata`` merged in) into ``out_dir`` (and,
        in tilt-series mode with ``write_tilt_series``, the noisy tilt series as tilt_series.st
        with IMOD's tilt_series.tlt); returns {name: path}."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        vs = self.voxel_size_A
        paths = {
            "tomogram": write_mrc(out / "tomogram.mrc", self.tomogram, vs, labels=("tomolens simulate",)),
            "semantic": write_mrc(
                out / "semantic.mrc",
                self.semantic,
                vs,
                is_labels=True,
                labels=tuple(f"{i}={n}" for i, n in enumerate(self.class_names))[:9],
            ),
            "instances": write_mrc(out / "instances.mrc", self.instances, vs, is_labels=True),
            "particles_star": write_coordinates(
                out / "particles.star", self.particles, comment="tomolens simulate ground truth"
            ),
            "particles_csv": write_coordinates(out / "particles.csv", self.particles),
        }
        meta = {
            "config": self.config.to_dict(),
            "polarity": getattr(self.config, "polarity", "bright"),
            "class_names": self.class_names,
            "measured_snr": None if math.isinf(self.measured_snr) else self.measured_snr,
            "snr_domain": self.snr_domain,
            "volume_fraction": self.volume_fraction,
            "template_radius_A": self.template_radius_A,
            "n_particles": len(self.particles),
            "structures": self.structures.to_dict(orient="records"),
            "tilt_angles_deg": [float(a) for a in self.tilt_angles_deg],
            **(extra_metadata or {}),
        }
        with atomic_path(out / "config.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        paths["config"] = out / "config.json"
        if self.tilt_series is not None and write_tilt_series:  # for IMOD/AreTomo: the stack and its angles
            from tomolens.io.imod_io import write_tlt

            paths["tilt_series"] = write_mrc(
                out / "tilt_series.st", self.tilt_series, vs, labels=("tomolens simulate tilt series",)
            )
            paths["tilt_angles"] = write_tlt(out / "tilt_series.tlt", self.tilt_angles_deg)
        return paths


def _stage(job, start: int, span: int, total: int = 1000):
    """Re-yield a sub-job's progress mapped onto [start, start + span] of ``total``."""
    return (yield from relay(job, lambda p: Progress(start + int(span * p.fraction), total, p.message)))


def build_scene(
    cfg: SimulationConfig,
    templates: list[Template],
    rng: np.random.Generator,
) -> Generator[Progress, None, tuple[Scene, list[str]]]:
    """Vesicles, filaments and packed particles for ``cfg`` (job); returns (scene, class_names)."""
    class_names = ["background"] + [t.name for t in templates]
    membrane_class = filament_class = 0
    if cfg.n_membranes:
        membrane_class = len(class_names)
        class_names.append("membrane")
    if cfg.n_filaments:
        filament_class = len(class_names)
        class_names.append("filament")
    if len(class_names) > 255:
        raise ValueError(f"{len(class_names) - 1} classes do not fit in uint8 semantic labels (max 255).")
    check_packing_request(
        cfg.shape_zyx, templates, cfg.n_particles, None if cfg.n_particles is not None else cfg.volume_fraction
    )
    scene = Scene.empty(cfg.shape_zyx)
    yield Progress(0, 10, "placing membranes and filaments")
    if cfg.n_membranes:
        add_vesicles(scene, cfg.n_membranes, cfg.voxel_size_A, membrane_class, rng)
    if cfg.n_filaments:
        add_filaments(scene, cfg.n_filaments, cfg.voxel_size_A, filament_class, rng)
    yield from pack_particles(
        scene, templates, rng, cfg.n_particles, None if cfg.n_particles is not None else cfg.volume_fraction
    )
    renumber_particles_first(scene)
    return scene, class_names


def warn_templates_tight(templates: list[Template], shape_zyx, voxel_size_A: float) -> dict[str, float]:
    """Warn about templates wider than the volume's thinnest side; return every template's radius (Å).

    Such a template is placed only in the orientations in which it fits (particles lie wholly
    inside the volume), so its orientations are not uniform and packing may fall short.  The
    warning (``UserWarning``) says by how much it is too wide and which size would hold it.
    """
    shape = [int(s) for s in shape_zyx]
    axis = int(np.argmin(shape))
    thinnest_A = shape[axis] * voxel_size_A
    radii = {t.name: round(t.radius_A, 1) for t in templates}
    for name, radius in radii.items():
        across = 2.0 * radius + voxel_size_A  # the mask's voxels have a width too
        if across > thinnest_A:
            needed = int(math.ceil(across / voxel_size_A)) + 2
            warnings.warn(
                f"Template {name!r} is up to {across:.0f} Å across (radius {radius:g} Å), "
                f"{across - thinnest_A:.0f} Å more than the volume's {thinnest_A:g} Å along {'zyx'[axis]} "
                f"({shape[axis]} voxels): it fits only in some orientations, so its orientations are biased "
                f"and packing may fall short. Use at least {needed} voxels along {'zyx'[axis]}.",
                UserWarning,
                stacklevel=2,
            )
    return radii


def _particle_table(scene: Scene, templates: list[Template], voxel_size_A: float) -> ParticleTable:
    rows = []
    for p in scene.particles:
        t = templates[p["template_index"]]
        rot, tilt, psi = (float(a) for a in p["euler"])
        rows.append(
            {
                "class": p["template_index"] + 1,
                "class_name": t.name,
                "rot": rot,
                "tilt": tilt,
                "psi": psi,
                "instance_id": p["instance_id"],
                "radius_A": t.radius_A,
            }
        )
    cols = ["class", "class_name", "rot", "tilt", "psi", "instance_id", "radius_A"]
    features = pd.DataFrame(rows, columns=cols)
    coords = np.array([p["centre_zyx"] for p in scene.particles], float).reshape(-1, 3)
    return ParticleTable(coords, features, voxel_size_A)


def simulate_tomogram(cfg: SimulationConfig) -> Generator[Progress, None, SimulatedTomogram]:
    """Simulate one tomogram with ground truth (job; drain with ``run_job``).

    Parameters
    ----------
    cfg : SimulationConfig

    Returns
    -------
    SimulatedTomogram

    Raises
    ------
    ValueError
        Bad settings, unreadable templates, or a packing request that cannot be met
        (:class:`~tomolens.simulate.scene.PackingError`).
    """
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    yield Progress(0, 1000, "rendering templates")
    templates = load_templates(cfg.templates, cfg.voxel_size_A)
    radii = warn_templates_tight(templates, cfg.shape_zyx, cfg.voxel_size_A)
    scene, class_names = yield from _stage(build_scene(cfg, templates, rng), 20, 280)
    angles = tilt_angles(cfg.tilt_range_deg, cfg.tilt_step_deg)
    ctf = cfg.ctf if cfg.apply_ctf else None
    tilt_series = clean = None
    if cfg.mode == "fourier":
        yield Progress(300, 1000, "missing wedge and CTF (Fourier)")
        tomo, measured = fourier_image(scene.density, cfg.voxel_size_A, cfg.tilt_range_deg, ctf, cfg.snr, rng)
        domain = "volume"
    else:
        nz, ny, nx = scene.density.shape
        yield Progress(300, 1000, "building projector")
        projector = TiltProjector(nz, nx, angles)
        clean = yield from _stage(projector.project(scene.density), 320, 260)
        if ctf is not None:
            yield Progress(580, 1000, "applying the CTF")
            clean = apply_ctf_2d(clean, cfg.voxel_size_A, ctf)
        yield Progress(620, 1000, "adding noise")
        tilt_series, measured = add_noise(clean, cfg.snr, rng)
        tomo = yield from _stage(projector.weighted_backproject(tilt_series), 640, 340)
        domain = "projections"
    mean, std = float(tomo.mean(dtype=np.float64)), float(tomo.std(dtype=np.float64))
    tomo -= np.float32(mean)
    tomo /= np.float32(std if std > 0 else 1.0)
    if cfg.polarity == "dark":
        np.negative(tomo, out=tomo)
    table = _particle_table(scene, templates, cfg.voxel_size_A)
    fraction = float(sum(p["mask_voxels"] for p in scene.particles)) / float(np.prod(cfg.shape_zyx))
    log.info(
        "simulated %s: %d particles, volume fraction %.3f, SNR %.4g on the %s",
        tuple(cfg.shape_zyx),
        len(table),
        fraction,
        measured,
        domain,
    )
    yield Progress(1000, 1000, f"done: {len(table)} particles")
    return SimulatedTomogram(
        tomogram=tomo.astype(np.float32, copy=False),
        semantic=scene.semantic,
        instances=scene.instances,
        particles=table,
        class_names=class_names,
        voxel_size_A=float(cfg.voxel_size_A),
        config=cfg,
        measured_snr=float(measured),
        snr_domain=domain,
        density=scene.density,
        tilt_angles_deg=angles,
        tilt_series=tilt_series,
        tilt_series_clean=clean,
        structures=pd.DataFrame(scene.structures),
        volume_fraction=fraction,
        template_radius_A=radii,
    )
