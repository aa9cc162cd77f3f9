"""Cellular structures for domain-randomised scenes: bilayer membranes, microtubules, actin,
gold beads and carbon film, drawn into a :class:`~tomolens.simulate.scene.Scene`.

All lengths are Å unless the name says otherwise; positions are voxels (z, y, x) of the
scene.  Every object gets a new instance id (``len(structures) + len(particles) + 1``, the
numbering :func:`~tomolens.simulate.scene.pack_particles` continues) and a record in
``scene.structures`` with its ``kind``; an object is refused (``False`` returned) when its
footprint would touch anything already placed, so objects never overlap.

Physical models
---------------
- **Membrane**: two Gaussian head-group leaflets (:func:`bilayer_profile`) at ±0.375 T of
  the mid-surface, width σ = T/12, for a total thickness T of 4-6 nm (peaks 3-4.5 nm
  apart), the hydrocarbon core a little below solvent (-0.3).  Shapes: spherical
  vesicles (any radius; large ones are cut by the volume edges), flat sheets and curved sheets (a cylinder of
  radius ≥ 100 nm), all crossing the volume edges.  Label: ``|d| <= T/2``.
- **Microtubule**: a hollow tube, outer radius 12.5 nm, inner 7.5 nm, with ``n_pf`` (13 or
  14) protofilament ridges, a 4 nm monomer / 8 nm dimer axial repeat on a 3-start helical
  lattice.  Label: the wall.
- **Actin**: two strands of 2.4 nm radius wound at 1.1 nm from the axis with a crossover
  every 37 nm and a 5.5 nm subunit repeat (total diameter 7 nm).  Label: distance to the
  axis ≤ 3.5 nm.
- Filament paths are straight or curved (a random walk of the tangent with a minimum
  radius of curvature), within ±30° of the x-y plane, crossing the volume; bundles are
  parallel copies offset in the normal plane; actin branches leave a mother at 70°.
- **Gold bead**: a sphere of 5 nm radius (10 nm colloidal gold) with density 8 near the
  top or bottom surface of the slab.
- **Carbon film**: a 10-20 nm thick slab at the top or bottom of the volume outside a
  large circular hole whose edge crosses the field; density 1.2 with a grainy texture.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from tomolens.simulate.scene import Scene

MT_OUTER_A, MT_INNER_A = 125.0, 75.0
ACTIN_RADIUS_A, ACTIN_STRAND_OFFSET_A, ACTIN_STRAND_RADIUS_A = 35.0, 11.0, 24.0
ACTIN_CROSSOVER_A, ACTIN_SUBUNIT_A = 370.0, 55.0
TUBULIN_MONOMER_A = 40.0
GOLD_RADIUS_A, GOLD_DENSITY = 50.0, 8.0
CARBON_DENSITY = 1.2
#: Bilayer core density relative to solvent (lipid tails ~0.85-0.9 g/ml against water 1.0,
#: on the scale where protein, 1.35 g/ml, is 1).
CORE_DENSITY = -0.3
FILAMENT_RADIUS_A = {"microtubule": MT_OUTER_A, "actin": ACTIN_RADIUS_A}


def _next_id(scene: Scene) -> int:
    return len(scene.structures) + len(scene.particles) + 1


def _grid(shape, lo, hi):
    """Open grids (z, y, x) of voxel coordinates for the box [lo, hi)."""
    return [
        np.arange(a, b, dtype=np.float32).reshape([-1 if i == j else 1 for j in range(3)])
        for i, (a, b) in enumerate(zip(lo, hi))
    ]


# ----------------------------------------------------------------------------- membranes
def bilayer_profile(d_A: np.ndarray, thickness_A: float) -> np.ndarray:
    """Density across a bilayer at signed distance ``d_A`` (Å) from its mid-surface.

    Two Gaussian head-group peaks at ±0.375 ``thickness_A`` (σ = thickness/12), each of
    height 1, and the hydrocarbon core between them slightly *below* solvent (a Gaussian
    dip of -0.3, σ = thickness/8: lipid tails are less dense than water, on a scale where
    protein is 1).  Returns float32 like ``d_A``.
    """
    half, sigma = 0.375 * thickness_A, thickness_A / 12.0
    d = np.asarray(d_A, np.float32)
    heads = np.exp(-0.5 * ((d - half) / sigma) ** 2) + np.exp(-0.5 * ((d + half) / sigma) ** 2)
    core = CORE_DENSITY * np.exp(-0.5 * (d / (thickness_A / 8.0)) ** 2)
    return (heads + core).astype(np.float32)


def _membrane_distance(shape_kind: str, params: dict, voxel_A: float) -> Callable:
    """grids (z, y, x voxels) -> signed distance in Å from the membrane's mid-surface."""
    c = np.asarray(params["point_zyx"], np.float32)
    if shape_kind == "vesicle":
        r = np.float32(params["radius_A"] / voxel_A)
        return lambda g: (np.sqrt(sum((gi - ci) ** 2 for gi, ci in zip(g, c))) - r) * np.float32(voxel_A)
    n = np.asarray(params["normal_zyx"], np.float32)
    if not params.get("curvature_radius_A"):
        return lambda g: sum((gi - ci) * ni for gi, ci, ni in zip(g, c, n)) * np.float32(voxel_A)
    # curved sheet: a cylinder of radius R whose axis (a, perpendicular to n) passes c - R n
    a, rc = np.asarray(params["axis_zyx"], np.float32), np.float32(params["curvature_radius_A"] / voxel_A)
    o = c - rc * n

    def dist(g):
        q = [gi - oi for gi, oi in zip(g, o)]
        t = sum(qi * ai for qi, ai in zip(q, a))
        return (np.sqrt(np.maximum(sum(qi * qi for qi in q) - t * t, 0)) - rc) * np.float32(voxel_A)

    return dist


def add_membrane(
    scene: Scene,
    shape_kind: str,
    params: dict,
    thickness_A: float,
    voxel_A: float,
    gap_A: float = 20.0,
    chunk: int = 16,
) -> bool:
    """Draw one membrane (``shape_kind`` "vesicle" or "sheet"; see module docstring).

    Parameters
    ----------
    params : dict
        ``point_zyx`` (voxels; vesicle centre or a point of the sheet), and ``radius_A``
        (vesicle) or ``normal_zyx`` (unit) with optional ``curvature_radius_A`` and
        ``axis_zyx`` (unit, perpendicular to the normal) for a curved sheet.

    Returns
    -------
    bool
        False (nothing drawn) when its footprint would touch an existing object or miss
        the volume.
    """
    shape = np.array(scene.density.shape)
    dist = _membrane_distance(shape_kind, params, voxel_A)
    reach_A = thickness_A / 2 + 3 * thickness_A / 12
    lo, hi = np.zeros(3, int), shape.copy()
    if shape_kind == "vesicle":
        c, r = np.asarray(params["point_zyx"]), (params["radius_A"] + reach_A) / voxel_A + 1
        lo, hi = np.maximum(np.floor(c - r).astype(int), 0), np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            return False
    z_chunks = [(z, min(z + chunk, hi[0])) for z in range(lo[0], hi[0], chunk)]
    touched = False
    for z0, z1 in z_chunks:  # check first: the footprint must be free
        g = _grid(shape, (z0, lo[1], lo[2]), (z1, hi[1], hi[2]))
        d = dist(g)
        near = np.abs(d) <= thickness_A / 2 + gap_A
        touched |= bool((np.abs(d) <= thickness_A / 2).any())
        if np.any(scene.instances[z0:z1, lo[1] : hi[1], lo[2] : hi[2]][near]):
            return False
    if not touched:
        return False
    inst = _next_id(scene)
    for z0, z1 in z_chunks:
        g = _grid(shape, (z0, lo[1], lo[2]), (z1, hi[1], hi[2]))
        d = dist(g)
        band = np.abs(d) <= reach_A
        sl = (slice(z0, z1), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        scene.density[sl][band] += bilayer_profile(d[band], thickness_A)
        scene.instances[sl][np.abs(d) <= thickness_A / 2] = inst
    scene.structures.append(
        {
            "kind": "membrane",
            "shape": shape_kind,
            "instance_id": inst,
            "thickness_A": float(thickness_A),
            **{k: (tuple(float(x) for x in v) if np.ndim(v) else float(v)) for k, v in params.items() if v is not None},
        }
    )
    return True


def membrane_surface_points(scene: Scene, instance_id: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random voxels (z, y, x, int) of a membrane's label, for decorating proteins."""
    idx = np.flatnonzero(scene.instances.ravel() == instance_id)
    if len(idx) == 0:
        return np.empty((0, 3), int)
    pick = idx[rng.integers(len(idx), size=n)]
    return np.stack(np.unravel_index(pick, scene.instances.shape), axis=1)


# ----------------------------------------------------------------------------- filaments
def filament_path(
    shape,
    rng: np.random.Generator,
    voxel_A: float,
    min_curvature_radius_A: float | None,
    radius_A: float,
    start=None,
    direction=None,
    one_way: bool = False,
    max_elevation_deg: float = 30.0,
) -> np.ndarray:
    """A filament centre line (k, 3) in voxels crossing the volume, step ~1 voxel.

    Straight when ``min_curvature_radius_A`` is None, otherwise the tangent turns by a
    random walk whose curvature stays below ``1 / min_curvature_radius_A``.  Starts at
    ``start`` (default: random inside, clear of the top and bottom by the radius) and
    grows both ways (or only forwards with ``one_way``) until it leaves the volume.
    """
    shape = np.asarray(shape, float)
    r_v = radius_A / voxel_A
    if start is None:
        start = rng.uniform(
            [min(r_v + 1, shape[0] / 2), 0, 0], [max(shape[0] - 1 - r_v - 1, shape[0] / 2), shape[1] - 1, shape[2] - 1]
        )
    if direction is None:
        phi, elev = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(-max_elevation_deg, max_elevation_deg))
        direction = np.array([np.sin(elev), np.cos(elev) * np.sin(phi), np.cos(elev) * np.cos(phi)])
    max_turn = 0.0 if min_curvature_radius_A is None else voxel_A / min_curvature_radius_A  # rad per voxel
    limit = np.sin(np.deg2rad(max_elevation_deg + 10))
    margin = r_v + 2
    branches = []
    for sign in (1.0,) if one_way else (1.0, -1.0):
        p, d, pts = np.array(start, float), sign * np.asarray(direction, float), []
        bend = np.zeros(3)
        for _ in range(int(4 * shape.sum())):
            pts.append(p.copy())
            if max_turn:
                bend = 0.9 * bend + 0.1 * rng.standard_normal(3)
                turn = bend - (bend @ d) * d
                norm = np.linalg.norm(turn)
                if norm > 0:
                    d = d + max_turn * turn / norm
                if abs(d[0]) > limit:  # keep near the x-y plane
                    d[0] *= 0.9
                d /= np.linalg.norm(d)
            p = p + d
            if np.any(p < -margin) or np.any(p > shape - 1 + margin):
                break
        branches.append(np.array(pts))
    if one_way:
        return branches[0]
    return np.concatenate([branches[1][::-1], branches[0][1:]])


def _frames(path: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tangents and a parallel-transported normal frame (u, v) along a path (k, 3)."""
    t = np.gradient(path, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    u = np.empty_like(t)
    seed = np.array([1.0, 0, 0]) if abs(t[0, 0]) < 0.9 else np.array([0, 1.0, 0])
    u[0] = seed - (seed @ t[0]) * t[0]
    u[0] /= np.linalg.norm(u[0])
    for i in range(1, len(t)):
        w = u[i - 1] - (u[i - 1] @ t[i]) * t[i]
        u[i] = w / np.linalg.norm(w)
    return t, u, np.cross(t, u)


def offset_path(path: np.ndarray, offset_uv_A: tuple[float, float], voxel_A: float) -> np.ndarray:
    """A parallel path displaced by (a, b) Å along the path's normal frame (for bundles)."""
    _, u, v = _frames(path)
    return path + (offset_uv_A[0] * u + offset_uv_A[1] * v) / voxel_A


def _filament_density(kind: str, dist_A, phi, s_A, n_pf: int):
    """Density of a filament at distance ``dist_A`` from the axis, angle ``phi`` and arc
    length ``s_A``; returns (density float32, label mask)."""
    if kind == "microtubule":
        wall = np.clip((MT_OUTER_A - dist_A) / 4 + 0.5, 0, 1) * np.clip((dist_A - MT_INNER_A) / 4 + 0.5, 0, 1)
        lattice = s_A - phi * (3 * TUBULIN_MONOMER_A / (2 * np.pi))  # 3-start helix
        texture = (0.55 + 0.45 * np.cos(n_pf * phi)) * (
            0.8
            + 0.12 * np.cos(2 * np.pi * lattice / TUBULIN_MONOMER_A)
            + 0.08 * np.cos(np.pi * lattice / TUBULIN_MONOMER_A)
        )
        return (wall * texture).astype(np.float32), (dist_A <= MT_OUTER_A) & (dist_A >= MT_INNER_A)
    dens = np.zeros(np.shape(dist_A), np.float32)
    for k in (0, 1):
        psi = np.pi * s_A / ACTIN_CROSSOVER_A + k * np.pi
        dx = dist_A * np.cos(phi) - ACTIN_STRAND_OFFSET_A * np.cos(psi)
        dy = dist_A * np.sin(phi) - ACTIN_STRAND_OFFSET_A * np.sin(psi)
        strand = np.clip((ACTIN_STRAND_RADIUS_A - np.sqrt(dx * dx + dy * dy)) / 4 + 0.5, 0, 1)
        beads = 0.8 + 0.2 * np.cos(2 * np.pi * (s_A / ACTIN_SUBUNIT_A + 0.5 * k))
        dens = np.maximum(dens, strand * beads)
    return dens, dist_A <= ACTIN_RADIUS_A


def add_filament(
    scene: Scene,
    kind: str,
    path: np.ndarray,
    voxel_A: float,
    n_pf: int = 13,
    gap_A: float = 10.0,
    ignore_id: int = 0,
    segment: int = 24,
    record: dict | None = None,
) -> bool:
    """Draw one microtubule or actin filament along ``path`` (k, 3 voxels; see module docstring).

    The path is cut into stretches of ``segment`` points; each stretch is rasterised in
    its own bounding box with the distance to its chord, owning the voxels whose
    projection falls in the stretch.  Returns False (nothing drawn) when the filament
    would touch another object (except ``ignore_id``, a branch's mother) or miss the volume.
    """
    if kind not in FILAMENT_RADIUS_A:
        raise ValueError(f"Unknown filament kind {kind!r}; choose one of {tuple(FILAMENT_RADIUS_A)}.")
    if len(path) < 3:  # e.g. a branch that starts at the volume's edge
        return False
    shape = np.array(scene.density.shape)
    r_A = FILAMENT_RADIUS_A[kind]
    reach = (r_A + gap_A) / voxel_A + 1
    tang, u, v = _frames(path)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))]) * voxel_A
    pieces = []
    for i0 in range(0, len(path) - 1, segment):
        i1 = min(i0 + segment, len(path) - 1)
        a, b = path[i0], path[i1]
        chord = b - a
        length = float(np.linalg.norm(chord))
        if length == 0:
            continue
        d = chord / length
        lo = np.maximum(np.floor(np.minimum(a, b) - reach).astype(int), 0)
        hi = np.minimum(np.ceil(np.maximum(a, b) + reach).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        g = _grid(shape, lo, hi)
        q = [gi - np.float32(ai) for gi, ai in zip(g, a)]
        t = sum(qi * np.float32(di) for qi, di in zip(q, d))
        last = i1 == len(path) - 1
        own = (t >= 0) & ((t <= length) if last else (t < length))
        if i0 == 0:
            own |= t < 0
        rv = [qi - t * np.float32(di) for qi, di in zip(q, d)]
        dist_A = np.sqrt(sum(x * x for x in rv)) * np.float32(voxel_A)
        near = own & (dist_A <= r_A + gap_A)
        sl = tuple(slice(x, y) for x, y in zip(lo, hi))
        region = scene.instances[sl]
        if np.any((region[near] != 0) & (region[near] != ignore_id)):
            return False
        phi = np.arctan2(
            sum(x * np.float32(c) for x, c in zip(rv, v[i0])), sum(x * np.float32(c) for x, c in zip(rv, u[i0]))
        )
        dens, label = _filament_density(kind, dist_A, phi, np.float32(arc[i0]) + t * np.float32(voxel_A), n_pf)
        pieces.append((sl, dens * own, label & own))
    if not any(lab.any() for _, _, lab in pieces):
        return False
    inst = _next_id(scene)
    for sl, dens, label in pieces:
        scene.density[sl] += dens
        scene.instances[sl][label & (scene.instances[sl] == 0)] = inst
    entry = {
        "kind": kind,
        "instance_id": inst,
        "start_zyx": tuple(float(x) for x in path[0]),
        "end_zyx": tuple(float(x) for x in path[-1]),
        "length_A": float(arc[-1]),
        "radius_A": r_A,
    }
    if kind == "microtubule":
        entry["protofilaments"] = int(n_pf)
    scene.structures.append({**entry, **(record or {})})
    return True


def branch_start(path: np.ndarray, rng: np.random.Generator, angle_deg: float = 70.0):
    """A point on a mother path and a direction ``angle_deg`` away from its tangent (Arp2/3 branch)."""
    tang, u, v = _frames(path)
    i = int(rng.integers(len(path) // 4, max(len(path) // 4 + 1, 3 * len(path) // 4)))
    w = rng.uniform(0, 2 * np.pi)
    side = np.cos(w) * u[i] + np.sin(w) * v[i]
    a = np.deg2rad(angle_deg)
    return path[i], np.cos(a) * tang[i] + np.sin(a) * side


# ----------------------------------------------------------------------------- gold and carbon
def add_gold_bead(scene: Scene, rng: np.random.Generator, voxel_A: float, max_attempts: int = 50) -> bool:
    """A 10 nm gold bead near the top or bottom of the slab; False when no free place was found."""
    shape = np.array(scene.density.shape)
    r = GOLD_RADIUS_A / voxel_A
    if shape[0] < 2 * r + 4:
        return False
    for _ in range(max_attempts):
        top = rng.random() < 0.5
        zc = rng.uniform(r + 1, min(shape[0] - r - 2, r + 1 + 0.15 * shape[0]))
        c = np.array([shape[0] - 1 - zc if top else zc, rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[2] - 1)])
        lo = np.maximum(np.floor(c - r - 2).astype(int), 0)
        hi = np.minimum(np.ceil(c + r + 2).astype(int) + 1, shape)
        g = _grid(shape, lo, hi)
        dist = np.sqrt(sum((gi - np.float32(ci)) ** 2 for gi, ci in zip(g, c)))
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        if np.any(scene.instances[sl][dist <= r + 1.5]):
            continue
        inst = _next_id(scene)
        scene.density[sl] += GOLD_DENSITY * np.clip(r + 0.5 - dist, 0, 1)
        scene.instances[sl][dist <= r] = inst
        scene.structures.append(
            {"kind": "gold", "instance_id": inst, "centre_zyx": tuple(float(x) for x in c), "radius_A": GOLD_RADIUS_A}
        )
        return True
    return False


def add_carbon_edge(
    scene: Scene, rng: np.random.Generator, voxel_A: float, coverage: float, thickness_A: float
) -> bool:
    """A carbon film of ``thickness_A`` at the top or bottom covering about ``coverage`` of the
    field outside a 1.2 µm hole whose edge crosses the field; drawn first, so it never overlaps."""
    shape = np.array(scene.density.shape)
    t_v = thickness_A / voxel_A
    if shape[0] < t_v + 4 or np.any(scene.instances):
        return False
    hole_r = 6000.0 / voxel_A
    ang = rng.uniform(0, 2 * np.pi)
    n2 = np.array([np.sin(ang), np.cos(ang)])
    field = (shape[1:] - 1) / 2.0
    span = float(np.abs(n2) @ (shape[1:] - 1)) / 2
    edge = field + n2 * span * (1 - 2 * coverage)
    centre = edge - n2 * hole_r
    y, x = np.ogrid[: shape[1], : shape[2]]
    outside = np.sqrt((y - centre[0]) ** 2 + (x - centre[1]) ** 2) - hole_r  # voxels, > 0 on carbon
    top = rng.random() < 0.5
    z0 = int(shape[0] - 2 - t_v) if top else 1
    zs = slice(max(z0 - 1, 0), min(int(np.ceil(z0 + t_v)) + 2, shape[0]))
    z = np.arange(zs.start, zs.stop, dtype=np.float32)[:, None, None]
    slab = np.clip(np.minimum(z - z0 + 0.5, z0 + t_v - z + 0.5), 0, 1) * np.clip(outside + 0.5, 0, 1)[None]
    grain = ndimage.gaussian_filter(rng.standard_normal(slab.shape).astype(np.float32), 1.0)
    grain /= max(float(grain.std()), 1e-6)
    inst = _next_id(scene)
    scene.density[zs] += (CARBON_DENSITY * slab * (1 + 0.25 * grain)).astype(np.float32)
    scene.instances[zs][slab >= 0.5] = inst
    scene.structures.append(
        {
            "kind": "carbon",
            "instance_id": inst,
            "top": bool(top),
            "thickness_A": float(thickness_A),
            "coverage": float(coverage),
        }
    )
    return True
