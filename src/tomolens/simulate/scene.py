"""Scene building: vesicle membranes, filaments and crowded particles without overlap.

The scene is three volumes of the tomogram's shape (z, y, x):

- ``density`` float32: the clean (noise-free) density, about 1 inside molecules;
- ``semantic`` uint8: 0 background, then one class per template, then membrane, filament;
- ``instances`` uint32: 0 background, one id per object.

Packing uses the instance volume itself as the occupancy grid: a candidate particle
(rotated template mask, dilated by ``gap_voxels``) is accepted when every voxel under it
is free, a test that touches only the particle's own bounding box, so the cost per trial
does not grow with the number of particles already placed (no all-pairs distances).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress
from tomolens.simulate.templates import MASK_LEVEL, Template, rotate_density, rotation_matrix_zyx

log = logging.getLogger(__name__)

#: Random sequential packing of rigid bodies jams well below this fraction.
MAX_VOLUME_FRACTION = 0.5


class PackingError(ValueError):
    """The requested crowding could not be reached; the message says how far it got."""


@dataclass
class Scene:
    """Ground-truth volumes and the objects placed in them (see module docstring)."""

    density: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray
    particles: list[dict] = field(default_factory=list)
    structures: list[dict] = field(default_factory=list)

    @classmethod
    def empty(cls, shape_zyx) -> Scene:
        shape = tuple(int(s) for s in shape_zyx)
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.uint8), np.zeros(shape, np.uint32))


def renumber_particles_first(scene: Scene) -> None:
    """Renumber instances in place: particles 1..N (in ``scene.particles`` order), then the
    structures N+1.. (in ``scene.structures`` order), whatever order they were placed in.
    References to other objects in the records (``anchored_to``, ``branch_of``) follow."""
    n_struct, n_part = len(scene.structures), len(scene.particles)
    objects = scene.structures + scene.particles
    lut = np.zeros(max([o["instance_id"] for o in objects], default=0) + 1, np.uint32)
    new_ids = list(range(n_part + 1, n_part + n_struct + 1)) + list(range(1, n_part + 1))
    if all(obj["instance_id"] == new for obj, new in zip(objects, new_ids)):
        return
    for obj, new in zip(objects, new_ids):
        lut[obj["instance_id"]] = new
    scene.instances = lut[scene.instances]
    for obj, new in zip(objects, new_ids):
        obj["instance_id"] = int(new)
        for ref in ("anchored_to", "branch_of"):
            if obj.get(ref):
                obj[ref] = int(lut[obj[ref]])


# ----------------------------------------------------------------------------- membranes
def add_vesicles(
    scene: Scene,
    n: int,
    voxel_size_A: float,
    class_index: int,
    rng: np.random.Generator,
    radius_range_A=(150.0, 400.0),
    bilayer_spacing_A: float = 40.0,
    leaflet_sigma_A: float = 10.0,
    max_attempts: int = 200,
) -> None:
    """Add ``n`` spherical vesicles, each a lipid bilayer shell (two Gaussian leaflets).

    The membrane mask (label) is the bilayer, ``|r - R| <= spacing/2 + 1.5 sigma``.
    Vesicles lie fully inside the volume and do not touch each other.

    Raises
    ------
    ValueError
        The slab is too thin for the smallest vesicle.
    PackingError
        A vesicle could not be placed without overlap.
    """
    shape = np.array(scene.density.shape)
    half_wall = bilayer_spacing_A / 2 + 1.5 * leaflet_sigma_A
    max_r = min(radius_range_A[1], (shape.min() * voxel_size_A) / 2 - half_wall - voxel_size_A)
    min_r = min(radius_range_A[0], max_r)
    if max_r < 2 * half_wall:
        raise ValueError(
            f"The volume ({tuple(shape)} voxels of {voxel_size_A} Å) is too thin for vesicles: the "
            f"smallest needs a diameter of about {4 * half_wall + 2 * voxel_size_A:.0f} Å. "
            "Use a thicker slab or n_membranes=0."
        )
    for _ in range(n):
        for _attempt in range(max_attempts):
            r_A = rng.uniform(min_r, max_r)
            reach = (r_A + half_wall) / voxel_size_A + 1
            lo, hi = np.full(3, reach), shape - 1 - reach
            if np.any(hi < lo):
                continue
            centre = rng.uniform(lo, hi)
            b0 = np.maximum(np.floor(centre - reach).astype(int), 0)
            b1 = np.minimum(np.ceil(centre + reach).astype(int) + 1, shape)
            sl = tuple(slice(a, b) for a, b in zip(b0, b1))
            grid = [np.arange(s.start, s.stop, dtype=np.float32) for s in sl]
            grid = [g.reshape([-1 if i == j else 1 for j in range(3)]) for i, g in enumerate(grid)]
            dist_A = np.sqrt(sum((g - np.float32(c)) ** 2 for g, c in zip(grid, centre))) * np.float32(voxel_size_A)
            wall = np.abs(dist_A - r_A) <= half_wall
            if np.any(scene.instances[sl][np.abs(dist_A - r_A) <= half_wall + 1.5 * voxel_size_A]):
                continue
            dens = sum(
                np.exp(-0.5 * ((dist_A - (r_A + s * bilayer_spacing_A / 2)) / leaflet_sigma_A) ** 2) for s in (-1, 1)
            )
            inst = len(scene.structures) + 1
            scene.density[sl] += dens.astype(np.float32)
            scene.semantic[sl][wall] = class_index
            scene.instances[sl][wall] = inst
            scene.structures.append(
                {
                    "kind": "membrane",
                    "instance_id": inst,
                    "centre_zyx": tuple(float(c) for c in centre),
                    "radius_A": float(r_A),
                }
            )
            break
        else:
            raise PackingError(
                f"Could not place vesicle {len(scene.structures) + 1} of {n} without "
                "overlap; ask for fewer membranes or a larger volume."
            )


# ----------------------------------------------------------------------------- filaments
FILAMENT_KINDS = {  # outer radius, inner radius (Å)
    "microtubule": (125.0, 85.0),
    "actin": (35.0, 0.0),
}


def add_filaments(
    scene: Scene, n: int, voxel_size_A: float, class_index: int, rng: np.random.Generator, max_attempts: int = 100
) -> None:
    """Add ``n`` straight filaments crossing the volume, alternating microtubule-like hollow
    tubes (25 nm wide) and actin-like rods (7 nm), lying within ±20° of the x-y plane.

    Raises
    ------
    ValueError
        The slab is too thin for a microtubule.
    PackingError
        A filament could not be placed without overlap.
    """
    shape = np.array(scene.density.shape)
    for i in range(n):
        kind = ("microtubule", "actin")[i % 2]
        r_out, r_in = FILAMENT_KINDS[kind]
        r_out_v, r_in_v = r_out / voxel_size_A, r_in / voxel_size_A
        if shape[0] < 2 * r_out_v + 4:
            kind, (r_out, r_in) = "actin", FILAMENT_KINDS["actin"]
            r_out_v, r_in_v = r_out / voxel_size_A, r_in / voxel_size_A
            if shape[0] < 2 * r_out_v + 4:
                raise ValueError(f"The volume is only {shape[0]} voxels thick: too thin for filaments.")
        for _attempt in range(max_attempts):
            phi = rng.uniform(0, np.pi)
            elev = rng.uniform(-np.pi / 9, np.pi / 9)
            d = np.array([np.sin(elev), np.cos(elev) * np.sin(phi), np.cos(elev) * np.cos(phi)])
            lo = np.array([r_out_v + 2, 0, 0])
            hi = shape - 1 - np.array([r_out_v + 2, 0, 0])
            p0 = rng.uniform(lo, hi)
            pieces = _tube_pieces(shape, p0, d, r_out_v, r_in_v)
            if not pieces or not any(w.any() for _, w, _, _ in pieces):
                continue
            if any(np.any(scene.instances[sl][near]) for sl, _, near, _ in pieces):
                continue
            inst = len(scene.structures) + 1
            for sl, wall, _, dens in pieces:
                scene.density[sl] += dens
                scene.semantic[sl][wall] = class_index
                scene.instances[sl][wall] = inst
            scene.structures.append(
                {
                    "kind": kind,
                    "instance_id": inst,
                    "centre_zyx": tuple(float(c) for c in p0),
                    "direction_zyx": tuple(float(c) for c in d),
                    "radius_A": float(r_out),
                }
            )
            break
        else:
            raise PackingError(
                f"Could not place filament {i + 1} of {n} without overlap; ask for fewer filaments or membranes."
            )


def _tube_pieces(
    shape: np.ndarray, p0: np.ndarray, d: np.ndarray, r_out_v: float, r_in_v: float, step: float = 32.0
) -> list[tuple]:
    """Rasterise a straight tube through ``p0`` along unit ``d`` (voxels) piece by piece.

    Each piece covers a stretch of ``step`` voxels of the axis and only its bounding box, and
    owns the voxels whose projection on the axis falls in its stretch, so pieces never
    write a voxel twice.  The tube is cut where it would leave the slab through the top
    or bottom.  Returns a list of (slices, wall mask, test mask, density float32).
    """
    reach = r_out_v + 2.0
    t_lo, t_hi = -np.inf, np.inf
    for axis in range(3):  # clip the axis line to the volume grown by the tube radius
        if abs(d[axis]) < 1e-9:
            continue
        a, b = (-reach - p0[axis]) / d[axis], (shape[axis] - 1 + reach - p0[axis]) / d[axis]
        t_lo, t_hi = max(t_lo, min(a, b)), min(t_hi, max(a, b))
    pieces = []
    for t0 in np.arange(t_lo, t_hi, step):
        t1 = min(t0 + step, t_hi)
        ends = np.stack([p0 + t0 * d, p0 + t1 * d])
        b0 = np.maximum(np.floor(ends.min(0) - reach).astype(int), 0)
        b1 = np.minimum(np.ceil(ends.max(0) + reach).astype(int) + 1, shape)
        if np.any(b1 <= b0):
            continue
        sl = tuple(slice(int(a), int(b)) for a, b in zip(b0, b1))
        rel = [
            (np.arange(a, b, dtype=np.float32) - np.float32(p)).reshape([-1 if i == j else 1 for j in range(3)])
            for i, (a, b, p) in enumerate(zip(b0, b1, p0))
        ]
        t = rel[0] * np.float32(d[0]) + rel[1] * np.float32(d[1]) + rel[2] * np.float32(d[2])
        dist = np.sqrt(np.maximum(sum(r * r for r in rel) - t * t, 0.0))
        zc = np.float32(p0[0]) + t * np.float32(d[0])
        own = (t >= t0) & (t < t1) & (zc >= r_out_v + 1) & (zc <= shape[0] - 2 - r_out_v)
        wall = (dist <= r_out_v) & (dist >= r_in_v) & own
        near = (dist <= r_out_v + 1.5) & (dist >= r_in_v - 1.5) & own
        dens = np.clip(r_out_v + 0.5 - dist, 0, 1)
        if r_in_v > 0:
            dens = np.minimum(dens, np.clip(dist - r_in_v + 0.5, 0, 1))
        pieces.append((sl, wall, near, (dens * own).astype(np.float32)))
    return pieces


# ----------------------------------------------------------------------------- particles
@dataclass
class _Candidate:
    template_index: int
    euler: np.ndarray  # rot, tilt, psi (deg)
    density: np.ndarray  # rotated, in a box of the template's shape
    mask: np.ndarray  # label mask (bool)
    test: np.ndarray  # mask dilated by the gap, cropped to its bounding box
    test_lo: np.ndarray  # offset of `test` in the box
    frac: np.ndarray  # sub-voxel offset of the centre (voxels)
    core_radius: float  # voxels; free space this deep around the centre is needed (heuristic)
    probes: np.ndarray  # (k, 3) int: a subset of test-mask voxels (box coordinates) for quick rejection


def _make_candidate(index: int, template: Template, rng: np.random.Generator, gap: int) -> _Candidate:
    rot = Rotation.random(random_state=rng)
    # RELION: reference -> particle is from_euler("ZYZ", angles).inv(); so angles of rot.inv()
    euler = rot.inv().as_euler("ZYZ", degrees=True)
    return _render_candidate(index, template, euler, rng.uniform(-0.5, 0.5, 3), gap)


def _render_candidate(index: int, template: Template, euler, frac, gap: int) -> _Candidate:
    euler, frac = np.asarray(euler, float), np.asarray(frac, float)
    dens = rotate_density(template.density, rotation_matrix_zyx(euler), centre_offset=frac)
    mask = dens >= MASK_LEVEL
    test = ndimage.binary_dilation(mask, iterations=gap) if gap > 0 else mask
    idx = np.argwhere(test)
    lo, hi = idx.min(0), idx.max(0) + 1
    test = test[tuple(slice(a, b) for a, b in zip(lo, hi))]
    spread = np.sqrt(((idx - (np.array(mask.shape) - 1) / 2.0) ** 2).sum(1).mean())
    probes = idx[np.linspace(0, len(idx) - 1, min(len(idx), 48)).astype(int)]
    return _Candidate(index, euler, dens.astype(np.float32), mask, test, lo, frac, 0.5 * float(spread), probes)


class _FreeSpace:
    """Coarse distance-to-occupied map used to propose candidate centres in open space.

    The occupancy (instances > 0) is max-pooled by a factor that keeps the coarse grid
    under about a million cells, and its Euclidean distance transform says how deep in
    free space each cell lies.  Proposals come from cells at least a particle's core
    radius from anything placed, so trials are not wasted in crowded regions; the exact
    test against the full-resolution occupancy still decides.
    """

    def __init__(self, instances: np.ndarray) -> None:
        self.shape = np.array(instances.shape)
        self.factor = max(2, int(np.ceil((instances.size / 1e6) ** (1 / 3))))
        f = self.factor
        pad = (-self.shape) % f
        occ = np.pad(instances > 0, [(0, p) for p in pad])
        c = occ.reshape(occ.shape[0] // f, f, occ.shape[1] // f, f, occ.shape[2] // f, f).any(axis=(1, 3, 5))
        depth = ndimage.distance_transform_edt(~c).ravel() * f  # voxels to the nearest occupied cell
        order = np.argsort(-depth, kind="stable")
        self.sorted_depth = depth[order]
        self.sorted_cells = np.stack(np.unravel_index(order, c.shape), axis=1)

    def sample(
        self, rng: np.random.Generator, core_radius: float, lo: np.ndarray, hi: np.ndarray, n: int
    ) -> np.ndarray:
        """``n`` integer centres in [lo, hi) favouring cells at least ``core_radius`` deep."""
        f = self.factor
        n_deep = int(np.searchsorted(-self.sorted_depth, -max(core_radius, f), side="right"))
        cells = self.sorted_cells[:n_deep]
        if len(cells):
            pick = cells[rng.integers(len(cells), size=n)]
            pts = pick * f + rng.integers(0, f, size=(n, 3))
            inside = np.all((pts >= lo) & (pts < hi), axis=1)
            pts = pts[inside]
        else:
            pts = np.empty((0, 3), int)
        if len(pts) < n:  # top up with uniform proposals
            pts = np.concatenate([pts, rng.integers(lo, hi, size=(n - len(pts), 3))])
        return pts


def _paste(vol: np.ndarray, corner: np.ndarray, block: np.ndarray, where=None, value=None) -> None:
    """Write ``block`` (or ``value`` where ``where``) into ``vol`` at ``corner``, clipped."""
    shape = np.array(vol.shape)
    a = np.maximum(corner, 0)
    b = np.minimum(corner + np.array(block.shape), shape)
    dst = tuple(slice(x, y) for x, y in zip(a, b))
    src = tuple(slice(x - c, y - c) for x, y, c in zip(a, b, corner))
    if value is None:
        vol[dst] += block[src]
    else:
        vol[dst][where[src]] = value


def pack_particles(
    scene: Scene,
    templates: list[Template],
    rng: np.random.Generator,
    n_particles: int | None,
    volume_fraction: float | None,
    first_class: int = 1,
    gap_voxels: int = 1,
    max_trials: int = 400,
    max_failures: int = 150,
    allow_partial: bool = False,
    pool: list[_Candidate] | None = None,
) -> Generator[Progress, None, None]:
    """Place particles at uniformly random orientations without overlap (job).

    Parameters
    ----------
    scene : Scene
        Filled in place; ``scene.particles`` gets one dict per particle (template index,
        centre z y x in voxels, Euler angles, mask voxel count).
    templates : list of Template
    rng : numpy.random.Generator
    n_particles : int or None
        Exact count to place; when None, place until ``volume_fraction`` is reached.
    volume_fraction : float or None
        Target fraction of the volume covered by particle masks (membranes and
        filaments not counted).
    first_class : int
        Semantic value of template 0.
    gap_voxels : int
        Minimum gap between particle masks (voxels).
    max_trials : int
        Random positions tried for one particle before drawing a new one.
    max_failures : int
        Consecutive particles that found no room before giving up.
    allow_partial : bool
        On giving up, stop quietly (log at debug level) instead of raising.
    pool : list, optional
        Pre-rendered rotated particles (from :func:`candidate_pool`) to draw from instead
        of rendering a new orientation for every particle (fast crowding neighbours).

    Raises
    ------
    PackingError
        The target was not reached; the message gives the count or fraction reached.
    """
    shape = np.array(scene.density.shape)
    total_voxels = float(np.prod(shape))
    target_voxels = None if n_particles is not None else volume_fraction * total_voxels
    goal = n_particles if n_particles is not None else target_voxels
    placed_voxels = 0.0
    failures = 0
    next_report = 0.0
    free_map = None
    since_map = 0
    occupied_start = float(np.count_nonzero(scene.instances))
    remap_every = max(
        10, int(goal if n_particles is not None else goal / max(1.0, np.mean([t.mask.sum() for t in templates]))) // 25
    )
    while True:
        done = len(scene.particles) if n_particles is not None else placed_voxels
        if done >= goal:
            break
        if done >= next_report:
            yield Progress(int(1000 * done / goal), 1000, f"packing particles: {len(scene.particles)} placed")
            next_report = done + goal / 20
        if pool:
            cand = pool[int(rng.integers(len(pool)))]
            ti = cand.template_index
        else:
            ti = int(rng.integers(len(templates)))
            cand = _make_candidate(ti, templates[ti], rng, gap_voxels)
        n_box = np.array(cand.mask.shape)
        half = (n_box - 1) // 2
        # centre voxel c: box corner = c - half; the test region must stay inside the volume
        c_lo = half - cand.test_lo
        c_hi = shape - (cand.test_lo + np.array(cand.test.shape)) + half
        if np.any(c_hi <= c_lo):
            raise PackingError(
                f"Template {templates[ti].name!r} does not fit in a volume of "
                f"{tuple(shape)} voxels; use a larger volume or a smaller template."
            )
        if (occupied_start + placed_voxels) / total_voxels < 0.08 and failures < 3:
            cs = rng.integers(c_lo, c_hi, size=(max_trials, 3))  # sparse: uniform proposals succeed
        else:
            if free_map is None or since_map >= remap_every or (failures and failures % 4 == 0 and since_map):
                free_map = _FreeSpace(scene.instances)
                since_map = 0
            cs = free_map.sample(rng, cand.core_radius, c_lo, c_hi, max_trials)
        # vectorised pre-filter: a few probe voxels of the candidate at every proposed centre
        probes = cand.probes - half
        pts = cs[:, None, :] + probes[None, :, :]
        hit = scene.instances[pts[..., 0], pts[..., 1], pts[..., 2]].any(axis=1)
        ok_centre = None
        for c in cs[~hit]:
            t0 = c - half + cand.test_lo
            region = scene.instances[
                t0[0] : t0[0] + cand.test.shape[0],
                t0[1] : t0[1] + cand.test.shape[1],
                t0[2] : t0[2] + cand.test.shape[2],
            ]
            if not np.any(region[cand.test]):
                ok_centre = c
                break
        if ok_centre is None:
            failures += 1
            if failures >= max_failures and allow_partial:
                log.debug("packing stopped at %d particles", len(scene.particles))
                break
            if failures >= max_failures:
                reached = (
                    f"{len(scene.particles)} of {n_particles} particles"
                    if n_particles is not None
                    else f"a volume fraction of {placed_voxels / total_voxels:.3f} of {volume_fraction}"
                )
                raise PackingError(
                    f"Packing stalled after {len(scene.particles)} particles: reached {reached}. "
                    "Random packing of rigid molecules jams; ask for fewer particles or a lower "
                    "volume fraction, fewer membranes/filaments, or a larger volume."
                )
            continue
        failures = 0
        since_map += 1
        corner = ok_centre - half
        inst = len(scene.structures) + len(scene.particles) + 1
        _paste(scene.density, corner, cand.density)
        _paste(scene.semantic, corner, cand.mask, where=cand.mask, value=first_class + ti)
        _paste(scene.instances, corner, cand.mask, where=cand.mask, value=inst)
        n_vox = int(cand.mask.sum())
        placed_voxels += n_vox
        scene.particles.append(
            {
                "template_index": ti,
                "centre_zyx": ok_centre + cand.frac,
                "euler": cand.euler,
                "instance_id": inst,
                "mask_voxels": n_vox,
            }
        )
    yield Progress(1000, 1000, f"packing particles: {len(scene.particles)} placed")


def candidate_pool(
    templates: list[Template], n_per_template: int, rng: np.random.Generator, gap_voxels: int = 1
) -> list[_Candidate]:
    """Pre-render ``n_per_template`` random orientations of every template for ``pool``."""
    return [_make_candidate(i, t, rng, gap_voxels) for i, t in enumerate(templates) for _ in range(n_per_template)]


def place_particle(
    scene: Scene, templates: list[Template], template_index: int, euler_deg, centre_zyx, first_class: int = 1
) -> dict:
    """Place one particle at a given centre (voxels) and orientation, without an overlap
    test (for the first particle of a scene); returns its record."""
    centre = np.asarray(centre_zyx, float)
    c_int = np.round(centre).astype(int)
    cand = _render_candidate(template_index, templates[template_index], euler_deg, centre - c_int, 0)
    corner = c_int - (np.array(cand.mask.shape) - 1) // 2
    inst = len(scene.structures) + len(scene.particles) + 1
    _paste(scene.density, corner, cand.density)
    _paste(scene.semantic, corner, cand.mask, where=cand.mask, value=first_class + template_index)
    _paste(scene.instances, corner, cand.mask, where=cand.mask, value=inst)
    record = {
        "template_index": template_index,
        "centre_zyx": centre,
        "euler": cand.euler,
        "instance_id": inst,
        "mask_voxels": int(cand.mask.sum()),
    }
    scene.particles.append(record)
    return record


def check_packing_request(
    shape_zyx, templates: list[Template], n_particles: int | None, volume_fraction: float | None
) -> None:
    """Refuse requests that cannot be packed, before any work is done.

    Raises
    ------
    ValueError
        A fraction above :data:`MAX_VOLUME_FRACTION`, or more particle volume than that
        fraction of the volume, or a template larger than the volume.
    """
    shape = np.asarray(shape_zyx)
    total = float(np.prod(shape))
    if n_particles is None:
        if volume_fraction is None or not 0 <= volume_fraction <= MAX_VOLUME_FRACTION:
            raise ValueError(
                f"volume_fraction must be between 0 and {MAX_VOLUME_FRACTION} (random packing of rigid "
                f"molecules jams near 0.3-0.4); got {volume_fraction}."
            )
        return
    if n_particles < 0:
        raise ValueError(f"n_particles must be 0 or more, got {n_particles}.")
    mean_vox = float(np.mean([t.mask.sum() for t in templates]))
    needed = n_particles * mean_vox / total
    if needed > MAX_VOLUME_FRACTION:
        raise ValueError(
            f"{n_particles} particles of about {mean_vox:.0f} voxels each would fill {needed:.0%} of the "
            f"{tuple(int(s) for s in shape)} volume; at most {MAX_VOLUME_FRACTION:.0%} can be packed. "
            "Ask for fewer particles or a larger volume."
        )
    for t in templates:
        if np.any(np.array(t.density.shape) - 2 > shape) and np.any(
            np.ptp(np.argwhere(t.mask), axis=0) + 1 > shape.min()
        ):
            raise ValueError(
                f"Template {t.name!r} ({t.radius_A * 2:.0f} Å across) does not fit in "
                f"the {tuple(int(s) for s in shape)} volume."
            )
