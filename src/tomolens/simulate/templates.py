"""Macromolecule templates: built-in phantoms and user density maps.

A template is a 3D density map (z, y, x), float32, normalised so that protein density
is about 1 and solvent 0, with its centre at the centre of the box
(``(n - 1) / 2`` in every axis).  Its *mask* is ``density >= MASK_LEVEL``; masks are
what the packer keeps apart and what the semantic and instance labels show.

Built-in phantoms are unions of simple solids (spheres, rods, tubes, tori, boxes) given
as signed distance functions in Å, so they can be rendered at any voxel size with
one-voxel anti-aliasing.  Each is re-centred on its centre of mass, so a particle's
listed position is the centre of its density.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

#: Density level (after normalisation) that defines a template's mask.
MASK_LEVEL = 0.3

Sdf = Callable[[np.ndarray], np.ndarray]  # points (..., 3) in Å, x y z order -> signed distance Å


@dataclass
class Template:
    """One macromolecule density map.

    Attributes
    ----------
    name : str
        Class name (phantom name or file stem).
    density : ndarray, float32, shape (n, n, n)
        Density, z y x, about 1 inside the molecule and 0 outside; centre at (n-1)/2.
    voxel_size_A : float
        Voxel size in Å.
    """

    name: str
    density: np.ndarray
    voxel_size_A: float

    @property
    def mask(self) -> np.ndarray:
        """Boolean mask (z, y, x): ``density >= MASK_LEVEL``."""
        return self.density >= MASK_LEVEL

    @property
    def radius_A(self) -> float:
        """Largest distance (Å) from the box centre to a mask voxel."""
        idx = np.argwhere(self.mask)
        if len(idx) == 0:
            return 0.0
        centre = (np.asarray(self.density.shape) - 1) / 2.0
        return float(np.sqrt(((idx - centre) ** 2).sum(1)).max() * self.voxel_size_A)

    @property
    def volume_A3(self) -> float:
        """Mask volume in Å³."""
        return float(self.mask.sum()) * self.voxel_size_A**3


# ----------------------------------------------------------------------------- SDF solids
def _sphere(c, r):
    c = np.asarray(c, float)
    return lambda p: np.linalg.norm(p - c, axis=-1) - r


def _rod(a, b, r):
    """Solid rod with round caps from point a to point b (Å)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ab = b - a

    def f(p):
        t = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
        return np.linalg.norm(p - a - t[..., None] * ab, axis=-1) - r

    return f


def _cylinder(c, axis, r, half_height, r_inner=0.0):
    """Flat-ended cylinder (a tube when ``r_inner`` > 0) centred at c along ``axis``."""
    c, axis = np.asarray(c, float), np.asarray(axis, float) / np.linalg.norm(axis)

    def f(p):
        q = p - c
        h = q @ axis
        rad = np.linalg.norm(q - h[..., None] * axis, axis=-1)
        dr = np.maximum(rad - r, r_inner - rad) if r_inner > 0 else rad - r
        dh = np.abs(h) - half_height
        outside = np.sqrt(np.maximum(dr, 0) ** 2 + np.maximum(dh, 0) ** 2)
        return outside + np.minimum(np.maximum(dr, dh), 0.0)

    return f


def _torus(c, axis, big_r, small_r):
    c, axis = np.asarray(c, float), np.asarray(axis, float) / np.linalg.norm(axis)

    def f(p):
        q = p - c
        h = q @ axis
        rad = np.linalg.norm(q - h[..., None] * axis, axis=-1)
        return np.sqrt((rad - big_r) ** 2 + h**2) - small_r

    return f


def _box(c, half):
    c, half = np.asarray(c, float), np.asarray(half, float)

    def f(p):
        q = np.abs(p - c) - half
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0.0)

    return f


def _shell(c, r, thickness):
    c = np.asarray(c, float)
    return lambda p: np.abs(np.linalg.norm(p - c, axis=-1) - r) - thickness / 2.0


def _ellipsoid(c, radii):
    c, radii = np.asarray(c, float), np.asarray(radii, float)

    def f(p):
        k = np.linalg.norm((p - c) / radii, axis=-1)
        return (k - 1.0) * radii.min()

    return f


def _union(*parts: Sdf) -> Sdf:
    return lambda p: np.min(np.stack([s(p) for s in parts]), axis=0)


def _ring_of_spheres(n, ring_r, bead_r, z=0.0, phase=0.0):
    angles = phase + 2 * np.pi * np.arange(n) / n
    return [_sphere((ring_r * np.cos(a), ring_r * np.sin(a), z), bead_r) for a in angles]


# ----------------------------------------------------------------------------- phantoms
def _phantoms() -> dict[str, tuple[Sdf, float]]:
    """name -> (signed distance function in Å, bounding radius in Å)."""
    tet = np.array([(1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)], float) / np.sqrt(3)
    octa = np.array([(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)], float)
    helix_t = np.linspace(0, 2.5 * 2 * np.pi, 11)
    helix = [(40 * np.cos(t), 40 * np.sin(t), -100 + 200 * t / helix_t[-1]) for t in helix_t]
    return {
        # 7-fold ring of beads, ~18 nm across
        "ring7": (_union(*_ring_of_spheres(7, 62, 26)), 90),
        # proteasome-like barrel: hollow cylinder, 15 nm wide, 15 nm tall
        "barrel": (_cylinder((0, 0, 0), (0, 0, 1), 75, 75, r_inner=38), 110),
        # two globular domains joined by a thin stalk, ~21 nm long
        "dumbbell": (_union(_sphere((0, 0, -62), 45), _sphere((0, 0, 62), 40), _rod((0, 0, -62), (0, 0, 62), 17)), 110),
        # four globules at tetrahedron vertices, ~17 nm
        "tetrahedron": (_union(*[_sphere(55 * v, 34) for v in tet]), 95),
        # asymmetric L: long arm along x, short arm along y, knob up z at the corner
        "l_shape": (
            _union(_rod((-40, 0, 0), (110, 0, 0), 24), _rod((-40, 0, 0), (-40, 70, 0), 24), _sphere((-40, 0, 35), 22)),
            125,
        ),
        # virus-like hollow capsid, 26 nm across, 3 nm wall
        "shell": (_shell((0, 0, 0), 115, 30), 135),
        # small elongated globule, 9 nm long
        "globule": (_ellipsoid((0, 0, 0), (45, 32, 26)), 50),
        # GroEL-like double ring of 6+6 beads
        "double_ring": (
            _union(*_ring_of_spheres(6, 52, 24, z=-26), *_ring_of_spheres(6, 52, 24, z=26, phase=np.pi / 6)),
            85,
        ),
        # right-handed helix of 11 beads, 23 nm long (chiral)
        "helix": (_union(*[_sphere(c, 22) for c in helix]), 130),
        # six globules on the axes, ~19 nm
        "octahedron": (_union(*[_sphere(70 * v, 27) for v in octa]), 105),
        # smooth torus, 19 nm across
        "torus": (_torus((0, 0, 0), (0, 0, 1), 65, 28), 100),
        # ribosome-like two unequal subunits with a flat beak, ~25 nm
        "two_subunit": (
            _union(_sphere((0, 0, -25), 80), _sphere((15, 0, 70), 55), _box((85, 0, 60), (35, 15, 15))),
            135,
        ),
        # T-shaped cross of two boxes, ~20 nm
        "t_shape": (_union(_box((0, 0, 45), (95, 22, 20)), _box((0, 0, -30), (22, 22, 65))), 120),
    }


def builtin_template_names() -> list[str]:
    """Names of the built-in phantom templates, in a fixed order."""
    return list(_phantoms())


def _render_sdf(sdf: Sdf, bound_A: float, voxel_size_A: float, offset_A=(0.0, 0.0, 0.0)) -> np.ndarray:
    n = int(np.ceil(2 * (bound_A + 2 * voxel_size_A) / voxel_size_A)) | 1  # odd box
    ax = (np.arange(n) - (n - 1) / 2.0) * voxel_size_A
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    pts = np.stack([xx, yy, zz], axis=-1) + np.asarray(offset_A, float)
    dist = sdf(pts)
    return np.clip(0.5 - dist / voxel_size_A, 0.0, 1.0).astype(np.float32)


def render_phantom(name: str, voxel_size_A: float) -> Template:
    """Render a built-in phantom at ``voxel_size_A`` (Å), centred on its centre of mass.

    Raises
    ------
    ValueError
        Unknown name or a voxel size that is not positive.
    """
    phantoms = _phantoms()
    if name not in phantoms:
        raise ValueError(f"Unknown phantom {name!r}; built-in phantoms: {', '.join(phantoms)}.")
    if not voxel_size_A > 0:
        raise ValueError(f"voxel_size_A must be positive, got {voxel_size_A}.")
    sdf, bound = phantoms[name]
    coarse = 6.0
    dens = _render_sdf(sdf, bound, coarse)
    com_zyx = (np.array(ndimage.center_of_mass(dens)) - (dens.shape[0] - 1) / 2.0) * coarse
    density = _render_sdf(sdf, bound + np.linalg.norm(com_zyx), voxel_size_A, offset_A=com_zyx[::-1])
    if voxel_size_A > 8:  # soften the staircase of coarse renderings a little
        density = ndimage.gaussian_filter(density, 0.4)
    return Template(name, density, float(voxel_size_A))


def template_from_map(data: np.ndarray, source_voxel_A: float, voxel_size_A: float, name: str) -> Template:
    """Turn a density map into a :class:`Template` at ``voxel_size_A``.

    The map is resampled with ``scipy.ndimage.zoom`` (cubic), negative values are
    clipped, it is scaled so that its bright interior is about 1, padded to a cube
    and re-centred on its centre of mass.
    """
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 3 or min(arr.shape) < 2:
        raise ValueError(f"Template {name!r} must be a 3D map; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Template {name!r} contains NaN or Inf values.")
    factor = source_voxel_A / voxel_size_A
    if abs(factor - 1) > 1e-3:
        arr = ndimage.zoom(arr, factor, order=3, prefilter=True).astype(np.float32)
    arr = np.clip(arr, 0, None)
    top = float(arr.max())
    if top <= 0:
        raise ValueError(f"Template {name!r} has no positive density; is it inverted?")
    bright = arr[arr > 0.2 * top]
    arr = arr / float(np.percentile(bright, 75))
    com = np.array(ndimage.center_of_mass(arr))
    n = int(np.ceil(max(arr.shape) + 2 * np.abs(com - (np.array(arr.shape) - 1) / 2).max())) + 2
    n |= 1
    out = np.zeros((n, n, n), np.float32)
    shift = (n - 1) / 2.0 - com
    # place, then shift by the sub-voxel remainder so the centre of mass sits at the box centre
    start = np.floor(shift).astype(int)
    sl = tuple(slice(s, s + m) for s, m in zip(start, arr.shape))
    out[sl] = arr
    out = ndimage.shift(out, shift - start, order=1)
    return Template(name, np.clip(out, 0, None).astype(np.float32), float(voxel_size_A))


def load_template(name_or_path: str | os.PathLike, voxel_size_A: float) -> Template:
    """A built-in phantom by name, or an MRC density map by path, at ``voxel_size_A``.

    Parameters
    ----------
    name_or_path : str or path
        One of :func:`builtin_template_names`, a ``.mrc``/``.map`` file (any voxel
        size; resampled), or a ``.pdb``/``.cif`` atomic model (needs the optional
        gemmi extra; see :mod:`tomolens.simulate.atomic`).
    voxel_size_A : float
        Target voxel size in Å.

    Raises
    ------
    ValueError
        Unknown name, unreadable file, or a map without positive density.
    """
    if not voxel_size_A > 0:
        raise ValueError(f"voxel_size_A must be positive, got {voxel_size_A}.")
    text = str(name_or_path)
    if text in _phantoms():
        return render_phantom(text, voxel_size_A)
    path = Path(text)
    if not path.suffix:
        raise ValueError(
            f"Unknown template {text!r}: not a built-in phantom ({', '.join(_phantoms())}) and not a file path."
        )
    from tomolens.simulate.atomic import ATOMIC_EXTENSIONS, template_from_atomic_model

    if path.suffix.lower() in ATOMIC_EXTENSIONS:
        if not path.is_file():
            raise ValueError(f"Cannot use {text!r} as a template: no such file.")
        return template_from_atomic_model(path, voxel_size_A)
    from tomolens.io.mrc import MrcReadError, read_mrc

    try:
        vol = read_mrc(path)
    except (FileNotFoundError, MrcReadError) as err:
        raise ValueError(f"Cannot use {text!r} as a template: {err}") from err
    if vol.voxel_size_A is None:
        raise ValueError(
            f"Template {path.name} has no voxel size in its header; write one (e.g. with "
            "`tomolens info` to check) before using it as a template."
        )
    return template_from_map(np.array(vol.data), float(vol.voxel_size_A[-1]), voxel_size_A, path.stem)


def load_templates(templates, voxel_size_A: float) -> list[Template]:
    """Load several templates (None = all built-in phantoms); names must be unique."""
    names = builtin_template_names() if templates is None else list(templates)
    if not names:
        raise ValueError("No templates given; pass None for all built-in phantoms.")
    loaded = [load_template(t, voxel_size_A) for t in names]
    seen: dict[str, int] = {}
    for t in loaded:
        if t.name in seen:
            seen[t.name] += 1
            t.name = f"{t.name}_{seen[t.name]}"
        else:
            seen[t.name] = 0
    return loaded


# ----------------------------------------------------------------------------- rotation
def rotation_matrix_zyx(euler_rot_tilt_psi_deg) -> np.ndarray:
    """3×3 matrix acting on (z, y, x) vectors that turns the template into the particle.

    RELION convention: the rotation that takes the reference (template) onto the particle
    in the tomogram, acting on (x, y, z) column vectors, is
    ``Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv()``.
    """
    from scipy.spatial.transform import Rotation

    r_xyz = Rotation.from_euler("ZYZ", np.asarray(euler_rot_tilt_psi_deg, float), degrees=True).inv()
    return r_xyz.as_matrix()[::-1, ::-1]


def rotate_density(
    density: np.ndarray, matrix_zyx: np.ndarray, centre_offset=(0.0, 0.0, 0.0), out_shape=None, order: int = 1
) -> np.ndarray:
    """Rotate a template about its box centre (and shift by a sub-voxel offset).

    Parameters
    ----------
    density : ndarray (n, n, n)
        Template density, centre at (n-1)/2.
    matrix_zyx : ndarray (3, 3)
        Rotation acting on (z, y, x) vectors (template -> particle).
    centre_offset : sequence of 3 float
        Position (voxels) of the particle's centre relative to the output box centre.
    out_shape : tuple, optional
        Output box; default the template's shape.
    order : int
        Spline order for ``scipy.ndimage.affine_transform``.

    Returns
    -------
    ndarray float32
        ``out(p) = density(R^T (p - c_out - offset) + c_in)``.
    """
    out_shape = tuple(density.shape) if out_shape is None else tuple(out_shape)
    c_in = (np.asarray(density.shape) - 1) / 2.0
    c_out = (np.asarray(out_shape) - 1) / 2.0 + np.asarray(centre_offset, float)
    inv = np.asarray(matrix_zyx).T
    offset = c_in - inv @ c_out
    return ndimage.affine_transform(
        density, inv, offset=offset, output_shape=out_shape, order=order, mode="constant", cval=0.0, prefilter=order > 1
    )


__all__ = [
    "MASK_LEVEL",
    "Template",
    "builtin_template_names",
    "load_template",
    "load_templates",
    "render_phantom",
    "rotate_density",
    "rotation_matrix_zyx",
    "template_from_map",
]
