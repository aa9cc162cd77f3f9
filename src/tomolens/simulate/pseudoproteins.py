"""Procedurally generated pseudo-proteins: random macromolecule shapes in named families.

A model trained on a fixed list of shapes learns the list; trained on endless random
shapes it has to learn "macromolecule".  Every pseudo-protein is a union of simple solids
(the signed distance functions of :mod:`tomolens.simulate.templates`) drawn from a seed,
then scaled so that its **largest extent** (the longest distance between two points of
its mask) equals ``size_nm``, and rendered as a :class:`~tomolens.simulate.templates.Template`
with a mild internal density texture (±15 %, smooth) so that the inside is not flat.

Families (:data:`FAMILIES`):

- ``compact``: an ellipsoid core with 2-5 surface bumps (globular enzymes);
- ``elongated``: a bent chain of 3-6 beads joined by rods, aspect ratio about 3-5;
- ``hollow``: a ring of 5-9 beads, a barrel, or an open spherical shell (chaperonins,
  proteasomes, capsids);
- ``multilobe``: 2-5 unequal ellipsoidal lobes attached to one another (multi-domain);
- ``branched``: a hub with 3-4 arms ending in knobs (antibody-/tripod-like).
  **Held out**: never used in training (:data:`TRAINING_FAMILIES`), only in the
  shifted-domain test set.

The same (family, size_nm, seed) always gives the same density at a given voxel size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

from tomolens.simulate.templates import (
    MASK_LEVEL,
    Sdf,
    Template,
    _cylinder,
    _ellipsoid,
    _render_sdf,
    _rod,
    _shell,
    _sphere,
    _union,
)

TRAINING_FAMILIES = ("compact", "elongated", "hollow", "multilobe")
HELD_OUT_FAMILIES = ("branched",)
FAMILIES = TRAINING_FAMILIES + HELD_OUT_FAMILIES
#: Largest extent of a pseudo-protein, nm (the issue's 6-40 nm).
SIZE_RANGE_NM = (6.0, 40.0)


@dataclass(frozen=True)
class PseudoProteinSpec:
    """One pseudo-protein: family, largest extent in nm, and the seed of its shape."""

    family: str
    size_nm: float
    seed: int

    def check(self) -> None:
        """Raise ValueError for an unknown family or a size outside :data:`SIZE_RANGE_NM`."""
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown pseudo-protein family {self.family!r}; choose one of {FAMILIES}.")
        lo, hi = SIZE_RANGE_NM
        if not lo <= self.size_nm <= hi:
            raise ValueError(f"Pseudo-protein size must be {lo}-{hi} nm, got {self.size_nm}.")

    @property
    def name(self) -> str:
        return f"{self.family}_{self.size_nm:.1f}nm_s{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _compact(rng) -> tuple[list[Sdf], float]:
    radii = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 0.9)])
    parts = [_ellipsoid((0, 0, 0), radii)]
    for _ in range(int(rng.integers(2, 6))):
        parts.append(_sphere(0.8 * radii * _unit(rng), rng.uniform(0.3, 0.55)))
    return parts, 1.6


def _elongated(rng) -> tuple[list[Sdf], float]:
    n = int(rng.integers(3, 7))
    radii = rng.uniform(0.4, 0.7, n)
    direction, pos = np.array([1.0, 0, 0]), [np.zeros(3)]
    for i in range(n - 1):
        direction = direction + 0.35 * _unit(rng)
        direction /= np.linalg.norm(direction)
        pos.append(pos[-1] + direction * 0.9 * (radii[i] + radii[i + 1]))
    pos = np.array(pos) - np.mean(pos, axis=0)
    parts = [_sphere(p, r) for p, r in zip(pos, radii)]
    parts += [_rod(pos[i], pos[i + 1], 0.7 * min(radii[i], radii[i + 1])) for i in range(n - 1)]
    return parts, float(np.max(np.linalg.norm(pos, axis=1) + radii))


def _hollow(rng) -> tuple[list[Sdf], float]:
    kind = int(rng.integers(3))
    if kind == 0:  # ring of beads
        n, bead = int(rng.integers(5, 10)), rng.uniform(0.28, 0.42)
        phase = rng.uniform(0, 2 * np.pi)
        return [
            _sphere((np.cos(a), np.sin(a), rng.uniform(-0.08, 0.08)), bead)
            for a in phase + 2 * np.pi * np.arange(n) / n
        ], 1.6
    if kind == 1:  # barrel
        return [_cylinder((0, 0, 0), (0, 0, 1), 1.0, rng.uniform(0.5, 1.1), r_inner=rng.uniform(0.5, 0.7))], 1.6
    # open shell: a spherical shell with a cap cut away by a smaller sphere's complement
    wall = rng.uniform(0.18, 0.3)
    shell, hole_c = _shell((0, 0, 0), 1.0, wall), _unit(rng) * 1.0
    hole_r = rng.uniform(0.3, 0.6)
    return [lambda p: np.maximum(shell(p), hole_r - np.linalg.norm(p - hole_c, axis=-1))], 1.3


def _multilobe(rng) -> tuple[list[Sdf], float]:
    n = int(rng.integers(2, 6))
    centres, sizes = [np.zeros(3)], [rng.uniform(0.6, 1.0)]
    for _ in range(1, n):
        j = int(rng.integers(len(centres)))
        r = rng.uniform(0.45, 0.9)
        centres.append(centres[j] + _unit(rng) * 0.85 * (sizes[j] + r))
        sizes.append(r)
    centres = np.array(centres) - np.mean(centres, axis=0)
    parts = [
        _ellipsoid(c, r * np.array([1.0, rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0)]))
        for c, r in zip(centres, sizes)
    ]
    return parts, float(np.max(np.linalg.norm(centres, axis=1) + np.array(sizes)))


def _branched(rng) -> tuple[list[Sdf], float]:
    parts = [_sphere((0, 0, 0), rng.uniform(0.35, 0.5))]
    first = _unit(rng)
    for i in range(int(rng.integers(3, 5))):
        d = first if i == 0 else _unit(rng)
        if i and d @ first > 0.8:  # keep arms apart from the first one
            d = -d
        tip = d * rng.uniform(1.2, 2.0)
        parts += [_rod((0, 0, 0), tip, rng.uniform(0.25, 0.35)), _sphere(tip, rng.uniform(0.38, 0.52))]
    return parts, 2.55


_BUILDERS = {
    "compact": _compact,
    "elongated": _elongated,
    "hollow": _hollow,
    "multilobe": _multilobe,
    "branched": _branched,
}


def _largest_extent(mask: np.ndarray) -> float:
    """Longest distance (voxels) between two voxel centres of a mask (convex hull vertices)."""
    pts = np.argwhere(mask).astype(float)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except QhullError:  # flat or tiny: all points
        pass
    return float(pdist(pts).max())


def render_pseudoprotein(spec: PseudoProteinSpec, voxel_size_A: float) -> Template:
    """Render a pseudo-protein at ``voxel_size_A`` (Å) as a Template.

    Parameters
    ----------
    spec : PseudoProteinSpec
    voxel_size_A : float
        Target voxel size in Å.

    Returns
    -------
    Template
        Density float32 (n, n, n), about 1 inside, centred on its centre of mass; the
        mask's largest extent is ``spec.size_nm`` (± one voxel), name ``spec.name``.

    Raises
    ------
    ValueError
        Unknown family, size out of range, or a voxel size that is not positive.
    """
    spec.check()
    if not voxel_size_A > 0:
        raise ValueError(f"voxel_size_A must be positive, got {voxel_size_A}.")
    rng = np.random.default_rng([spec.seed, FAMILIES.index(spec.family)])
    parts, probe_bound = _BUILDERS[spec.family](rng)
    unit_sdf = _union(*parts)
    # measure the unit shape's extent and centre of mass on a fine grid, then scale to size_nm
    probe_v = probe_bound / 30
    probe = _render_sdf(unit_sdf, probe_bound, probe_v)
    extent_u = _largest_extent(probe >= 0.5) * probe_v + probe_v
    scale = spec.size_nm * 10.0 / extent_u  # Å per unit
    com_u = (np.array(ndimage.center_of_mass(probe)) - (probe.shape[0] - 1) / 2.0) * probe_v  # z y x
    bound_A = scale * (probe_bound + np.linalg.norm(com_u))

    def sdf_A(p):
        return scale * unit_sdf(p / scale)

    density = _render_sdf(sdf_A, bound_A, voxel_size_A, offset_A=(scale * com_u)[::-1])
    idx = np.argwhere(density > 0)
    lo, hi = idx.min(0), idx.max(0) + 1
    half = int(np.max(np.maximum((density.shape[0] - 1) / 2 - lo, hi - 1 - (density.shape[0] - 1) / 2))) + 2
    c = (density.shape[0] - 1) // 2
    density = density[c - half : c + half + 1, c - half : c + half + 1, c - half : c + half + 1]
    texture = ndimage.gaussian_filter(
        rng.standard_normal(density.shape).astype(np.float32), max(1.0, 15.0 / voxel_size_A)
    )
    texture /= max(float(np.abs(texture).max()), 1e-6)
    inside = density >= 0.999
    density[inside] *= 1.0 + 0.15 * texture[inside]
    return Template(spec.name, density.astype(np.float32), float(voxel_size_A))


def sample_pseudoprotein(families, rng: np.random.Generator, size_range_nm=SIZE_RANGE_NM) -> PseudoProteinSpec:
    """Draw a family from ``families``, a size uniform in ``size_range_nm`` and a shape seed."""
    family = str(families[int(rng.integers(len(families)))])
    size = float(np.round(rng.uniform(*size_range_nm), 2))
    return PseudoProteinSpec(family, size, int(rng.integers(2**31 - 1)))


__all__ = [
    "FAMILIES",
    "HELD_OUT_FAMILIES",
    "MASK_LEVEL",
    "PseudoProteinSpec",
    "SIZE_RANGE_NM",
    "TRAINING_FAMILIES",
    "render_pseudoprotein",
    "sample_pseudoprotein",
]
