"""Simulate one domain-randomised tomogram from a :class:`~tomolens.simulate.domain.DomainConfig`.

Pipeline (job :func:`simulate_domain_tomogram`):

1. Scene at the fine voxel ``voxel_size_A / supersampling``: carbon film, membranes
   (vesicles and sheets; some decorated with macromolecules on either side), microtubules
   and actin (straight or curved, some bundled, actin sometimes branched), gold beads,
   then macromolecules (pseudo-proteins and maps) packed to the volume fraction
   (:mod:`tomolens.simulate.structures`, :mod:`tomolens.simulate.scene`).
2. Tilt series at the fine pixel about an axis off y by the tilt-axis error, each image
   shifted by the alignment jitter; CTF (contrast-inverted as in :mod:`.imaging`); ice
   attenuation; coloured noise at ``snr`` per **acquisition** pixel: the acquisition pixel
   is ``binning`` times finer than the final voxel, the simulation ``supersampling`` times,
   so the noise standard deviation is scaled by supersampling / binning (averaging
   (binning / supersampling)² white-noise pixels); optional phase flipping.
3. The images are block-averaged to the final voxel and reconstructed there (WBP,
   SIRT-like filtered WBP or SIRT), low-pass filtered, normalised to mean 0 / std 1 and
   negated for the "dark" polarity.
4. Labels: the fine instance volume is reduced by block mode (ties to the object); the
   semantic classes (:data:`~tomolens.simulate.domain.DOMAIN_CLASSES`, fixed: background,
   membrane, microtubule, actin, macromolecule, gold, carbon) follow from the instances,
   so the two always agree.  Particles are 1..N (table order), structures N+1...
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path

import numpy as np
import pandas as pd

from tomolens.io import ParticleTable
from tomolens.jobs import Progress, relay
from tomolens.simulate.domain import DOMAIN_CLASSES, DomainConfig
from tomolens.simulate.domain_imaging import (
    add_dose_noise,
    bin_images,
    bin_labels,
    bin_volume,
    butterworth_lowpass,
    ice_attenuation,
    misalign,
    phase_flip,
    reconstruct,
)
from tomolens.simulate.imaging import CtfParams, TiltProjector, apply_ctf_2d, tilt_angles
from tomolens.simulate.pseudoproteins import render_pseudoprotein
from tomolens.simulate.scene import Scene, _make_candidate, candidate_pool, pack_particles, renumber_particles_first
from tomolens.simulate.structures import (
    FILAMENT_RADIUS_A,
    _membrane_distance,
    add_carbon_edge,
    add_filament,
    add_gold_bead,
    add_membrane,
    branch_start,
    filament_path,
    membrane_surface_points,
    offset_path,
)
from tomolens.simulate.templates import MASK_LEVEL, Template, load_template, rotate_density, rotation_matrix_zyx
from tomolens.simulate.tomogram import SimulatedTomogram

log = logging.getLogger(__name__)

CLASS_INDEX = {name: i for i, name in enumerate(DOMAIN_CLASSES)}
BUNDLE_SPACING_A = {"microtubule": 350.0, "actin": 110.0}
MIN_CURVATURE_RADIUS_A = {"microtubule": 3000.0, "actin": 800.0}
#: Smallest template mask (fine voxels) worth placing: below it a rotation can leave nothing.
MIN_TEMPLATE_VOXELS = 8


def _stage(job, start: int, span: int, total: int = 1000):
    return (yield from relay(job, lambda p: Progress(start + int(span * p.fraction), total, p.message)))


def _solid(t: Template) -> bool:
    """Whether a template's mask has :data:`MIN_TEMPLATE_VOXELS` voxels and survives a rotation."""
    if t.mask.sum() < MIN_TEMPLATE_VOXELS:
        return False
    return bool((rotate_density(t.density, rotation_matrix_zyx((45.0, 55.0, 35.0))) >= MASK_LEVEL).any())


def load_domain_templates(cfg: DomainConfig, voxel_A: float) -> list[Template]:
    """Pseudo-proteins and maps of ``cfg`` at ``voxel_A``, cropped to their mask, keeping
    those that fit in the slab (2 × radius + 4 voxels ≤ the smallest side) and whose mask has
    at least :data:`MIN_TEMPLATE_VOXELS` voxels and survives a rotation (thin shapes vanish
    at coarse voxels); logs the rest."""
    templates = [render_pseudoprotein(s, voxel_A) for s in cfg.pseudoproteins]
    for name in cfg.map_names:
        path = Path(cfg.maps_dir) / f"{name}.mrc"
        if not path.is_file():
            raise ValueError(f"Map {name!r} not found in {cfg.maps_dir}; give the maps_10A folder or no maps.")
        t = load_template(path, voxel_A)
        idx = np.argwhere(t.mask)
        c = (t.density.shape[0] - 1) // 2
        half = int(np.abs(idx - c).max()) + 2
        lo, hi = max(c - half, 0), c + half + 1
        templates.append(Template(name, np.ascontiguousarray(t.density[lo:hi, lo:hi, lo:hi]), voxel_A))
    side = min(cfg.shape_zyx) * cfg.supersampling  # fine voxels
    kept = [t for t in templates if 2 * t.radius_A / voxel_A + 4 <= side and _solid(t)]
    if len(kept) < len(templates):
        log.warning(
            "templates too large for the slab or too thin for the voxel size left out: %s",
            [t.name for t in templates if all(t is not k for k in kept)],
        )
    if not kept:
        raise ValueError(
            f"No template fits a slab of {side * voxel_A / 10:.0f} nm at {voxel_A:.1f} Å; use a "
            "thicker volume or other templates."
        )
    return kept


def _add_membranes(scene: Scene, cfg: DomainConfig, rng, voxel_A: float) -> None:
    shape = np.array(scene.density.shape)
    thickness = cfg.membrane_thickness_nm * 10
    todo = [("vesicle", r) for r in cfg.vesicle_radii_nm] + [("sheet", r) for r in cfg.sheet_curvature_radii_nm]
    for kind, r_nm in todo:
        for _ in range(20):
            if kind == "vesicle":
                r_v = r_nm * 10 / voxel_A
                c = rng.uniform(-0.3 * r_v, shape - 1 + 0.3 * r_v)
                c[0] = rng.uniform(0, shape[0] - 1)
                params = {"point_zyx": c, "radius_A": r_nm * 10}
            else:
                n = rng.standard_normal(3)
                n /= np.linalg.norm(n)
                a = np.cross(n, rng.standard_normal(3))
                params = {
                    "point_zyx": rng.uniform(0, shape - 1),
                    "normal_zyx": n,
                    "curvature_radius_A": r_nm * 10 or None,
                    "axis_zyx": a / np.linalg.norm(a) if r_nm else None,
                }
            if add_membrane(scene, kind, params, thickness, voxel_A):
                scene.structures[-1]["decorated"] = bool(rng.random() < cfg.decorated_probability)
                break
        else:
            log.info("a %s of %.0f nm found no free place; left out", kind, r_nm)


def _add_filaments(scene: Scene, cfg: DomainConfig, rng, voxel_A: float) -> None:
    shape = scene.density.shape
    for kind, n in (("microtubule", cfg.n_microtubules), ("actin", cfg.n_actin)):
        r_A = FILAMENT_RADIUS_A[kind]
        if shape[0] * voxel_A < 2 * r_A + 4 * voxel_A:
            log.info("slab too thin for %s; left out", kind)
            continue
        for _ in range(n):
            n_pf = int(rng.integers(13, 15))
            curved = rng.random() < cfg.curved_filament_probability
            bundled = rng.random() < cfg.bundle_probability
            members = int(rng.integers(2, 4 if kind == "microtubule" else 5)) if bundled else 1
            for _attempt in range(10):
                path = filament_path(shape, rng, voxel_A, MIN_CURVATURE_RADIUS_A[kind] if curved else None, r_A)
                spacing = BUNDLE_SPACING_A[kind]
                placed = []
                for j in range(members):
                    p = offset_path(path, ((j - (members - 1) / 2) * spacing, 0.0), voxel_A) if members > 1 else path
                    bundle = {"bundle_size": members, "curved": bool(curved)}
                    if add_filament(scene, kind, p, voxel_A, n_pf=n_pf, record=bundle):
                        placed.append((scene.structures[-1]["instance_id"], p))
                if placed:
                    break
            else:
                log.info("a %s found no free path in 10 tries; left out", kind)
            if kind == "actin" and placed and rng.random() < cfg.branch_probability:
                mother_id, mother = placed[0]
                start, direction = branch_start(mother, rng)
                start = start + direction * r_A / voxel_A  # grows from the mother's surface, not its axis
                child = filament_path(
                    shape,
                    rng,
                    voxel_A,
                    MIN_CURVATURE_RADIUS_A[kind] if curved else None,
                    r_A,
                    start=start,
                    direction=direction,
                    one_way=True,
                )
                add_filament(scene, kind, child, voxel_A, ignore_id=mother_id, record={"branch_of": mother_id})


def _normal(dist, point) -> np.ndarray:
    """Unit gradient of a distance function (grids -> Å) at a voxel, by central differences."""
    grad = np.zeros(3)
    for i, e in enumerate(np.eye(3)):
        plus, minus = ([np.array([v], np.float32) for v in point + sign * e] for sign in (1, -1))
        grad[i] = float((dist(plus) - dist(minus))[0])
    return grad / max(float(np.linalg.norm(grad)), 1e-6)


def _decorate(scene: Scene, templates: list[Template], cfg: DomainConfig, rng, voxel_A: float) -> None:
    """Macromolecules on either side of decorated membranes, touching the head groups."""
    half_t = cfg.membrane_thickness_nm * 10 / 2
    shape = np.array(scene.density.shape)
    for mem in [s for s in scene.structures if s["kind"] == "membrane" and s.get("decorated")]:
        params = {k: np.asarray(mem[k]) for k in ("point_zyx", "normal_zyx", "axis_zyx") if k in mem}
        params.update({k: mem[k] for k in ("radius_A", "curvature_radius_A") if k in mem})
        dist = _membrane_distance(mem["shape"], params, voxel_A)
        for p in membrane_surface_points(scene, mem["instance_id"], int(rng.integers(3, 13)), rng):
            ti = int(rng.integers(len(templates)))
            cand = _make_candidate(ti, templates[ti], rng, 1)
            normal = _normal(dist, p)
            side = 1 if rng.random() < 0.5 else -1
            centre = np.round(p + side * normal * (half_t + 0.8 * templates[ti].radius_A) / voxel_A).astype(int)
            half = (np.array(cand.mask.shape) - 1) // 2
            t0 = centre - half + cand.test_lo
            t1 = t0 + np.array(cand.test.shape)
            if np.any(centre - half < 0) or np.any(centre - half + np.array(cand.mask.shape) > shape):
                continue  # keep the whole box inside the volume
            region = scene.instances[tuple(slice(a, b) for a, b in zip(t0, t1))]
            hit = region[cand.test]
            if np.any((hit != 0) & (hit != mem["instance_id"])):
                continue
            corner = centre - half
            sl = tuple(slice(a, a + n) for a, n in zip(corner, cand.mask.shape))
            inst = len(scene.structures) + len(scene.particles) + 1
            scene.density[sl] += cand.density
            free = cand.mask & (scene.instances[sl] == 0)
            scene.instances[sl][free] = inst
            scene.particles.append(
                {
                    "template_index": ti,
                    "centre_zyx": centre + cand.frac,
                    "euler": cand.euler,
                    "instance_id": inst,
                    "mask_voxels": int(free.sum()),
                    "anchored_to": mem["instance_id"],
                }
            )


def build_domain_scene(
    cfg: DomainConfig,
    templates: list[Template],
    rng: np.random.Generator,
) -> Generator[Progress, None, Scene]:
    """The fine-voxel scene of ``cfg`` (job); instances renumbered particles first."""
    s = cfg.supersampling
    voxel_A = cfg.fine_voxel_A
    scene = Scene.empty(tuple(n * s for n in cfg.shape_zyx))
    yield Progress(0, 10, "carbon and membranes")
    if cfg.carbon:
        add_carbon_edge(scene, rng, voxel_A, cfg.carbon_coverage, cfg.carbon_thickness_nm * 10)
    _add_membranes(scene, cfg, rng, voxel_A)
    yield Progress(2, 10, "microtubules and actin")
    _add_filaments(scene, cfg, rng, voxel_A)
    yield Progress(4, 10, "membrane proteins and gold")
    _decorate(scene, templates, cfg, rng, voxel_A)
    for _ in range(cfg.n_gold):
        add_gold_bead(scene, rng, voxel_A)
    pool = candidate_pool(templates, 6, rng)
    yield from _stage(
        pack_particles(scene, templates, rng, None, cfg.macromolecule_fraction, allow_partial=True, pool=pool), 5, 5, 10
    )
    renumber_particles_first(scene)
    return scene


def _labels(scene: Scene, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Final instance (uint32) and semantic (uint8) volumes from the fine instances."""
    instances = bin_labels(scene.instances, factor).astype(np.uint32)
    lut = np.zeros(len(scene.particles) + len(scene.structures) + 1, np.uint8)
    lut[[p["instance_id"] for p in scene.particles]] = CLASS_INDEX["macromolecule"]
    for st in scene.structures:
        lut[st["instance_id"]] = CLASS_INDEX[st["kind"]]
    return instances, lut[instances]


def _particles(scene: Scene, templates: list[Template], factor: int, voxel_A: float) -> ParticleTable:
    rows, coords = [], []
    for p in scene.particles:
        t = templates[p["template_index"]]
        family = t.name.split("_")[0] if "nm_s" in t.name else "map"
        rot, tilt, psi = (float(a) for a in p["euler"])
        rows.append(
            {
                "class": CLASS_INDEX["macromolecule"],
                "class_name": "macromolecule",
                "template": t.name,
                "family": family,
                "rot": rot,
                "tilt": tilt,
                "psi": psi,
                "instance_id": p["instance_id"],
                "radius_A": t.radius_A,
                "anchored_to": int(p.get("anchored_to", 0)),
            }
        )
        coords.append((np.asarray(p["centre_zyx"], float) + 0.5) / factor - 0.5)
    cols = ["class", "class_name", "template", "family", "rot", "tilt", "psi", "instance_id", "radius_A", "anchored_to"]
    return ParticleTable(np.array(coords, float).reshape(-1, 3), pd.DataFrame(rows, columns=cols), voxel_A)


def simulate_domain_tomogram(cfg: DomainConfig) -> Generator[Progress, None, SimulatedTomogram]:
    """Simulate one domain-randomised tomogram with ground truth (job; module docstring).

    Parameters
    ----------
    cfg : DomainConfig
        From :func:`~tomolens.simulate.domain.sample_domain_config` or
        :func:`~tomolens.simulate.domain.shifted_domain_config`.

    Returns
    -------
    SimulatedTomogram
        ``tomogram`` float32 (z, y, x) of ``cfg.shape_zyx``, mean 0 / std 1, then negated
        for "dark"; ``semantic`` uint8 with ``class_names`` = DOMAIN_CLASSES; ``instances``
        uint32; ``particles`` (centres in final voxels; class_name "macromolecule",
        template, family, Euler angles, radius_A, anchored_to = membrane id or 0);
        ``structures`` (membranes, filaments, gold, carbon); ``config`` = ``cfg``;
        ``density`` the clean density binned; ``tilt_series`` the noisy binned images;
        ``measured_snr`` on the simulated fine projections.

    Raises
    ------
    ValueError
        Bad settings or missing maps.
    """
    cfg.check()
    rng = np.random.default_rng([cfg.seed, 1])
    s, fine_A = cfg.supersampling, cfg.fine_voxel_A
    yield Progress(0, 1000, "rendering templates")
    templates = load_domain_templates(cfg, fine_A)
    scene = yield from _stage(build_domain_scene(cfg, templates, rng), 50, 250)
    angles = tilt_angles(cfg.tilt_range_deg, cfg.tilt_step_deg)
    nz, ny, nx = scene.density.shape
    yield Progress(300, 1000, "projecting the tilt series")
    images = yield from _stage(
        misalign(scene.density, TiltProjector(nz, nx, angles), cfg.tilt_axis_error_deg, cfg.shift_jitter_px * s, rng),
        300,
        250,
    )
    ctf = CtfParams(cfg.defocus_um, cfg.voltage_kv, cfg.cs_mm, cfg.amplitude_contrast)
    images = apply_ctf_2d(images, fine_A, ctf)
    yield Progress(560, 1000, "ice, noise and CTF correction")
    att = (
        ice_attenuation((ny, nx), angles, cfg.ice_gradient, np.deg2rad(cfg.ice_direction_deg))
        if cfg.ice_gradient > 0
        else None
    )
    images, measured = add_dose_noise(images, cfg.snr, cfg.noise_exponent, rng, att, s / cfg.binning)
    if cfg.ctf_corrected:
        images = phase_flip(images, fine_A, ctf)
    images = bin_images(images, s)
    projector = TiltProjector(cfg.shape_zyx[0], cfg.shape_zyx[2], angles)
    tomo = yield from _stage(
        reconstruct(images, projector, cfg.reconstruction, cfg.reconstruction_iterations), 600, 330
    )
    tomo = butterworth_lowpass(tomo, cfg.lowpass_fraction)
    tomo -= np.float32(tomo.mean(dtype=np.float64))
    tomo /= np.float32(max(float(tomo.std(dtype=np.float64)), 1e-12))
    if cfg.polarity == "dark":
        np.negative(tomo, out=tomo)
    yield Progress(940, 1000, "labels")
    instances, semantic = _labels(scene, s)
    table = _particles(scene, templates, s, cfg.voxel_size_A)
    fraction = float(np.count_nonzero(semantic == CLASS_INDEX["macromolecule"])) / semantic.size
    log.info(
        "domain tomogram %s at %.1f Å: %d particles, %d structures, SNR %.3g (fine projections)",
        cfg.shape_zyx,
        cfg.voxel_size_A,
        len(table),
        len(scene.structures),
        measured,
    )
    yield Progress(1000, 1000, f"done: {len(table)} particles, {len(scene.structures)} structures")
    return SimulatedTomogram(
        tomogram=tomo.astype(np.float32, copy=False),
        semantic=semantic,
        instances=instances,
        particles=table,
        class_names=list(DOMAIN_CLASSES),
        voxel_size_A=float(cfg.voxel_size_A),
        config=cfg,
        measured_snr=float(measured),
        snr_domain="projections",
        density=bin_volume(scene.density, s),
        tilt_angles_deg=angles,
        tilt_series=images,
        structures=pd.DataFrame(scene.structures),
        volume_fraction=fraction,
        template_radius_A={t.name: round(t.radius_A, 1) for t in templates},
    )
