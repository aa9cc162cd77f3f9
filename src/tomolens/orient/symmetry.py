"""Point-group symmetry of a map: groups, symmetry-aware errors, symmetrisation, detection.

Groups
------
A point group is named as in RELION: ``C1`` (none), ``Cn`` (n-fold axis), ``Dn`` (n-fold axis
and n perpendicular 2-fold axes), ``T``, ``O``, ``I`` (= ``I2``), ``I1``…``I4``.  Its rotations
come from :meth:`scipy.spatial.transform.Rotation.create_group`, turned into RELION's setting
(the *canonical setting*, :data:`RELION_SETTINGS`): Cn and Dn have the n-fold axis along z and
Dn a 2-fold axis along x; T a 3-fold axis along z and a 2-fold axis in the yz plane; O 4-fold
axes along x, y and z; I1 and I2 2-fold axes along x, y and z with a 5-fold axis in the xz plane
(I1: 31.7° from x; I2, RELION's ``I``: 31.7° from z); I3 and I4 a 5-fold axis along z and a
2-fold axis in the xz plane (I3 at −31.7°, I4 at +31.7° from z towards x).

A map in its own frame may have its axes elsewhere: :class:`Symmetry` carries a ``frame``
rotation ``F`` (3×3) and stands for the group ``F G Fᵀ``, i.e. the canonical axes moved by
``F`` (``F e_z`` is the n-fold axis of Cn/Dn).  :func:`find_symmetry_frame` measures ``F``
on a map; a map with ``F`` = identity is aligned with its symmetry axes as RELION expects.

Orientations
------------
If ``V(g x) = V(x)`` for every ``g`` of the group, the orientation matrices ``A`` and ``A g``
(see :mod:`tomolens.orient.rotations`) give the same projection, so an orientation is known
only up to a right factor from the group: errors against a truth are the minimum over the
group (:func:`symmetric_distance`, :func:`align_orientations_symmetric`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress
from tomolens.orient.rotations import _random_o4, canonical, fibonacci_sphere, geodesic_distance, global_grid

log = logging.getLogger(__name__)

#: Groups that :func:`detect_symmetry` tries, lowest order first.
DETECT_CANDIDATES: tuple[str, ...] = (
    tuple(f"C{n}" for n in range(2, 9)) + tuple(f"D{n}" for n in range(2, 9)) + ("T", "O", "I")
)

#: The cyclic subgroup a candidate is tried after: Dn after Cn, T after C3, O after C4, I after C5.
_DETECT_AFTER = {"T": "C3", "O": "C4", "I": "C5"}

#: A map whose symmetry score (see :func:`symmetry_score`) is below this does not have the symmetry:
#: interpolation alone keeps a truly symmetric map above ~0.95.
SYMMETRY_THRESHOLD = 0.9

#: :func:`detect_symmetry` suggests only groups within this of the best score.
SUGGEST_MARGIN = 0.05

#: Choices offered by the widget and listed in errors (any Cn/Dn with n ≤ 60 is accepted).
COMMON_GROUPS: tuple[str, ...] = (
    ("C1",)
    + tuple(f"C{n}" for n in range(2, 13))
    + tuple(f"D{n}" for n in range(2, 13))
    + ("T", "O", "I", "I1", "I2", "I3", "I4")
)

_PATTERN = re.compile(r"^(?:([CD])(\d+)|([TO])|(I[1-4]?))$")

#: Angle between a 5-fold axis of the icosahedron and its nearest 2-fold axis, degrees (atan(1/φ)).
_ICOSAHEDRAL_TILT = float(np.degrees(np.arctan(2.0 / (1.0 + np.sqrt(5.0)))))


def _frame_t() -> np.ndarray:
    """RELION's T from scipy's: the 3-fold axis (1, 1, 1)/√3 to z, the 2-fold axis z to (0, √(2/3), √(1/3))."""
    rot, _ = Rotation.align_vectors(
        [[0.0, 0.0, 1.0], [0.0, np.sqrt(2.0 / 3.0), np.sqrt(1.0 / 3.0)]],
        [np.ones(3) / np.sqrt(3.0), [0.0, 0.0, 1.0]],
    )
    return rot.as_matrix()


def _rotation_y(angle_deg: float) -> np.ndarray:
    return Rotation.from_euler("y", angle_deg, degrees=True).as_matrix()


#: RELION's settings of T, O and I as (scipy's group, F): the group is ``F G Fᵀ`` with ``G`` from
#: :meth:`Rotation.create_group` (scipy's I is RELION's I1; scipy's O is RELION's O).
RELION_SETTINGS: dict[str, tuple[str, np.ndarray]] = {
    "T": ("T", _frame_t()),
    "O": ("O", np.eye(3)),
    "I1": ("I", np.eye(3)),
    "I2": ("I", _rotation_y(90.0)),
    "I3": ("I", _rotation_y(90.0 - _ICOSAHEDRAL_TILT)),
    "I4": ("I", _rotation_y(90.0 + _ICOSAHEDRAL_TILT)),
}
RELION_SETTINGS["I"] = RELION_SETTINGS["I2"]  # RELION's default icosahedral setting


def parse_symmetry(name: str | None) -> str:
    """Normalise a point-group name: ``"c7"`` → ``"C7"``, ``None``/``""`` → ``"C1"``.

    Raises
    ------
    ValueError
        For anything but Cn, Dn (1 ≤ n ≤ 60; D needs n ≥ 2), T, O, I or I1…I4.
    """
    text = (name or "C1").strip().upper()
    match = _PATTERN.match(text)
    if match is None or (match.group(2) and not 1 <= int(match.group(2)) <= 60) or text == "D1":
        raise ValueError(
            f"Unknown symmetry {name!r}: give a point group as RELION names them, Cn or Dn (n-fold axis "
            "along z, n ≤ 60; Dn with n ≥ 2), T, O, I (= I2) or I1…I4 (RELION's settings); C1 for none."
        )
    return text


def group_rotations(name: str | None) -> Rotation:
    """The group's rotations in the canonical setting (identity first)."""
    text = parse_symmetry(name)
    if text == "C1":
        return Rotation.identity(1)
    if text in RELION_SETTINGS:
        base, frame = RELION_SETTINGS[text]
        group = Rotation.from_matrix(frame[None] @ Rotation.create_group(base).as_matrix() @ frame.T[None])
    else:
        group = Rotation.create_group(text)
    angles = group.magnitude()
    return group[np.argsort(angles, kind="stable")]  # the identity (angle 0) first


@dataclass
class Symmetry:
    """A point group in a frame.

    Attributes
    ----------
    name : str
        ``C1``, ``Cn``, ``Dn``, ``T``, ``O``, ``I`` or ``I1``…``I4``.
    frame : ndarray, float64, shape (3, 3)
        Rotation ``F`` moving the canonical axes to the map's (identity: RELION's setting).
    score : float or None
        Symmetry score of the map this frame was measured on (see :func:`symmetry_score`).
    """

    name: str = "C1"
    frame: np.ndarray = field(default_factory=lambda: np.eye(3))
    score: float | None = None

    def __post_init__(self) -> None:
        self.name = parse_symmetry(self.name)
        self.frame = np.asarray(self.frame, dtype=np.float64).reshape(3, 3)

    @property
    def order(self) -> int:
        """Number of rotations in the group."""
        return len(group_rotations(self.name))

    def matrices(self) -> np.ndarray:
        """The group's rotations ``F g Fᵀ`` (K, 3, 3), identity first."""
        g = group_rotations(self.name).as_matrix()
        return self.frame[None] @ g @ self.frame.T[None]

    def quats(self) -> np.ndarray:
        """The group's rotations as quaternions (K, 4), identity first."""
        return canonical(Rotation.from_matrix(self.matrices()).as_quat())


def as_symmetry(symmetry: Symmetry | str | None) -> Symmetry:
    """A :class:`Symmetry` from a name (canonical frame) or itself."""
    return symmetry if isinstance(symmetry, Symmetry) else Symmetry(parse_symmetry(symmetry))


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products ``a ⊗ b`` of (…, 4) quaternions (x, y, z, w), broadcast: the matrix ``A B``.

    Both numpy arrays, or both torch tensors (gradients kept).
    """
    ax, ay, az, aw = (a[..., k] for k in range(4))
    bx, by, bz, bw = (b[..., k] for k in range(4))
    if isinstance(a, np.ndarray):
        stack = np.stack
    else:
        import torch

        stack = torch.stack
    return stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def expand_quats(quats: np.ndarray, symmetry: Symmetry | str | None) -> np.ndarray:
    """Every orientation times every group element: ``A g``, shape (N, K, 4)."""
    sym = as_symmetry(symmetry)
    return _quat_multiply(np.asarray(quats, np.float64)[:, None, :], sym.quats()[None, :, :])


def symmetric_distance(q1: np.ndarray, q2: np.ndarray, symmetry: Symmetry | str | None) -> np.ndarray:
    """``min_g d(q1, q2 g)`` in radians (0…π), rows (N, 4) against rows (N, 4)."""
    expanded = expand_quats(np.atleast_2d(q2), symmetry)  # (N, K, 4)
    dots = np.abs(np.einsum("nj,nkj->nk", np.atleast_2d(q1), expanded)).max(axis=1)
    return 2.0 * np.arccos(np.clip(dots, 0.0, 1.0))


def _refine_alignment(classes: np.ndarray, r: np.ndarray, m: np.ndarray, iterations: int) -> tuple[float, np.ndarray]:
    """Alternate per-image element/sign choice and orthogonal Procrustes from ``m``: (score, M)."""
    rows = np.arange(len(r))
    for _ in range(iterations):
        dots = np.einsum("nkj,nj->nk", classes, r @ m.T)
        k = np.abs(dots).argmax(axis=1)
        target = classes[rows, k] * np.sign(dots[rows, k])[:, None]
        u, _, vt = np.linalg.svd(target.T @ r)
        m_new = u @ vt
        converged = np.allclose(m_new, m, atol=1e-10)
        m = m_new
        if converged:
            break
    return float(np.mean(np.abs(np.einsum("nkj,nj->nk", classes, r @ m.T)).max(axis=1))), m


def _right_factor_starts(step_deg: float) -> np.ndarray:
    """4×4 matrices of ``q → q b`` and ``q → h q b`` for rotations b on a grid (h: half turn about z)."""
    b = canonical(Rotation.from_matrix(global_grid(step_deg)).as_quat())  # (B, 4)
    eye = np.eye(4)
    right = np.transpose(_quat_multiply(eye[None, :, :], b[:, None, :]), (0, 2, 1))  # columns e_j ⊗ b
    hand = np.array([0.0, 0.0, 1.0, 0.0])
    left = np.transpose(_quat_multiply(hand[None, :], eye), (1, 0))  # columns h ⊗ e_j
    return np.concatenate([right, left[None] @ right])


def _start_scores(classes: np.ndarray, r: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mean over images of the best |<t_i g, M r_i>| for each start M (S, 4, 4): shape (S,)."""
    moved = np.einsum("sab,nb->sna", starts, r)  # (S, N, 4)
    return np.abs(np.einsum("nkj,snj->snk", classes, moved)).max(axis=2).mean(axis=1)


def align_orientations_symmetric(
    recovered: np.ndarray,
    truth: np.ndarray,
    symmetry: Symmetry | str | None,
    n_starts: int = 100,
    iterations: int = 30,
    subset: int = 200,
    keep: int = 8,
    grid_step_deg: float = 12.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Align recovered orientations to the truth up to the group (and the O(4) of distances).

    As :func:`tomolens.orient.rotations.align_orientations`, but each true orientation stands
    for its whole class ``{t_i g}``: alternately pick, per image, the element and sign that
    best match ``M r_i``, and solve for the orthogonal ``M`` (SVD).  The per-image choice
    makes the problem rugged: a random start rarely lies in the right basin, so the starts are
    right factors ``q → q b`` (a rotation of the map: what is left after the common-line frame)
    on a grid ``grid_step_deg`` apart, with and without the other hand (``q → h q b``, ``h`` a
    half turn about z), scored at once on a ``subset`` of the images, plus ``n_starts`` random
    O(4) matrices; all are iterated briefly on the subset and the ``keep`` best on all images.
    Orientations from distances alone (any left factor) may therefore be aligned less well
    than after the frame is fixed.

    Parameters
    ----------
    recovered, truth : ndarray, shape (N, 4)
    symmetry : Symmetry or str
        The group in the truth's frame.
    n_starts, iterations, subset, keep, seed : int

    Returns
    -------
    aligned : ndarray, shape (N, 4)
        ``M r_i`` (canonical).
    transform : ndarray, shape (4, 4)
    """
    r = canonical(recovered)
    t = canonical(truth)
    if r.shape != t.shape or r.ndim != 2 or r.shape[1] != 4:
        raise ValueError(
            f"Recovered and true orientations must both be (N, 4) quaternions; got {r.shape} and {t.shape}."
        )
    classes = expand_quats(t, symmetry)  # (N, K, 4)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(r), min(subset, len(r)), replace=False)
    # starts: right factors (a rotation of the map) on a grid, with and without the other hand, plus random O(4)
    grid = _right_factor_starts(grid_step_deg)
    scores = np.concatenate(
        [_start_scores(classes[pick], r[pick], grid[i : i + 256]) for i in range(0, len(grid), 256)]
    )
    starts = [grid[i] for i in np.argsort(-scores)[:keep]]
    starts += [np.eye(4), np.diag([1.0, 1.0, 1.0, -1.0])] + [_random_o4(rng) for _ in range(n_starts)]
    brief = sorted((_refine_alignment(classes[pick], r[pick], m, 6) for m in starts), key=lambda sm: -sm[0])
    best_score, best_m = -1.0, np.eye(4)
    for _, m in brief[:keep]:
        score, m = _refine_alignment(classes, r, m, iterations)
        if score > best_score:
            best_score, best_m = score, m
    return canonical(r @ best_m.T), best_m


def symmetric_errors_deg(
    recovered: np.ndarray, truth: np.ndarray, symmetry: Symmetry | str | None = None, **align_kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image errors (degrees) up to the group, after alignment; and the aligned orientations.

    With C1 this is :func:`tomolens.orient.rotations.align_orientations` and the geodesic distance.

    Returns
    -------
    errors : ndarray, shape (N,)
    aligned : ndarray, shape (N, 4)
    """
    from tomolens.orient.rotations import align_orientations

    sym = as_symmetry(symmetry)
    if sym.name == "C1":
        aligned, _ = align_orientations(recovered, truth, **align_kwargs)
        return np.degrees(geodesic_distance(aligned, canonical(truth))), aligned
    aligned, _ = align_orientations_symmetric(recovered, truth, sym, **align_kwargs)
    return np.degrees(symmetric_distance(aligned, canonical(truth), sym)), aligned


#: A direction on no symmetry axis of any group used here: the centre of the asymmetric unit of viewing directions.
_UNIT_CENTRE = np.array([0.1234, 0.3456, 0.9301]) / np.linalg.norm([0.1234, 0.3456, 0.9301])


def asymmetric_unit_grid(step_deg: float, symmetry: Symmetry | str | None) -> np.ndarray:
    """The orientations of :func:`~tomolens.orient.rotations.global_grid` in the group's asymmetric unit.

    On a map with the group's symmetry ``A`` and ``A g`` give the same projection, and the
    viewing direction of ``A g`` is ``gᵀ v`` (``v = Aᵀ e_z``).  A grid point is kept when its
    viewing direction lies in the Dirichlet cell of a generic direction ``w`` under the group
    (``v·w ≥ v·(g w)`` for every ``g``): every orientation is still within about ``step_deg``
    of a kept point up to the group, and about 1/order of the points are kept.

    Parameters
    ----------
    step_deg : float
        Grid spacing, degrees.
    symmetry : Symmetry or str
        The group in the frame of the map that is searched.

    Returns
    -------
    ndarray, float64, shape (K, 3, 3)
    """
    grid = global_grid(step_deg)
    sym = as_symmetry(symmetry)
    if sym.name == "C1":
        return grid
    orbit = sym.matrices() @ _UNIT_CENTRE  # (K, 3): g w
    views = grid[:, 2, :]  # viewing directions Aᵀ e_z
    closeness = views @ orbit.T  # (G, K)
    return grid[closeness[:, 0] >= closeness.max(axis=1) - 1e-12]


# -- maps ---------------------------------------------------------------------------------------


def _rotate_volume(volume: np.ndarray, matrix_xyz: np.ndarray, order: int = 1) -> np.ndarray:
    """``out(x) = V(g x)`` about the box centre (voxel n//2), for a rotation g acting on (x, y, z)."""
    n = volume.shape[0]
    flip = np.eye(3)[::-1]  # (x, y, z) ↔ (z, y, x)
    mat = flip @ matrix_xyz @ flip
    centre = np.full(3, n // 2, dtype=np.float64)
    return ndimage.affine_transform(volume, mat, offset=centre - mat @ centre, order=order, mode="constant")


def symmetrise_volume(volume: np.ndarray, symmetry: Symmetry | str | None) -> np.ndarray:
    """Average of the map over the group: ``(1/K) Σ_g V(g x)`` (trilinear), float32 cube.

    Parameters
    ----------
    volume : ndarray, shape (n, n, n)
        A cubic map (z, y, x), symmetry centre at voxel n//2.
    symmetry : Symmetry or str
    """
    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"Symmetrisation needs a cubic map; got shape {vol.shape}.")
    sym = as_symmetry(symmetry)
    mats = sym.matrices()
    if len(mats) == 1:
        return vol.copy()
    out = vol.astype(np.float64)
    for g in mats[1:]:
        out += _rotate_volume(vol, g)
    return (out / len(mats)).astype(np.float32)


def _sphere_mask(n: int) -> np.ndarray:
    g = np.arange(n) - n // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    return x**2 + y**2 + z**2 < (0.5 * n - 1) ** 2


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask] - a[mask].mean()
    y = b[mask] - b[mask].mean()
    return float(np.sum(x * y) / (np.sqrt(np.sum(x * x) * np.sum(y * y)) + 1e-12))


def symmetry_score(volume: np.ndarray, symmetry: Symmetry | str | None, n_random: int = 16) -> float:
    """How well the map matches its copies rotated by the group, 0…1, relative to any rotation.

    ``c`` is the mean correlation (inside the inscribed sphere) of the map with its copies rotated
    by the group's elements, ``b`` the mean correlation with copies rotated at random
    (``n_random`` rotations, fixed seed): a small or round map correlates well with *any*
    rotation of itself at low resolution, so the score is ``(c − b) / (1 − b)``: 1 for a
    perfectly symmetric map (a little less after interpolation), near 0 for one without the
    symmetry, whatever its shape; 1 for C1.
    """
    vol = np.asarray(volume, np.float32)
    sym = as_symmetry(symmetry)
    mats = sym.matrices()
    if len(mats) == 1:
        return 1.0
    mask = _sphere_mask(vol.shape[0])
    group = float(np.mean([_correlation(vol, _rotate_volume(vol, g), mask) for g in mats[1:]]))
    randoms = Rotation.random(n_random, random_state=np.random.default_rng(0)).as_matrix()
    base = float(np.mean([_correlation(vol, _rotate_volume(vol, g), mask) for g in randoms]))
    return float(min(1.0, (group - base) / max(1.0 - base, 1e-6)))


def _search_volume(volume: np.ndarray, size: int = 32) -> np.ndarray:
    """A cube of at most ``size`` voxels a side for the axis search (Gaussian low-pass, then zoom)."""
    vol = np.asarray(volume, np.float32)
    n = vol.shape[0]
    if n <= size:
        return vol
    factor = size / n
    smooth = ndimage.gaussian_filter(vol, 0.5 / factor)
    small = ndimage.zoom(smooth, factor, order=1)
    return small[:size, :size, :size] if small.shape[0] > size else small


def _axis_frame(axis: np.ndarray, angle: float = 0.0) -> np.ndarray:
    """A rotation F with F e_z = axis and F e_x at ``angle`` (radians) in the plane ⟂ axis."""
    rot, _ = Rotation.align_vectors([axis], [[0.0, 0.0, 1.0]])
    return rot.as_matrix() @ Rotation.from_euler("z", angle).as_matrix()


def _best_setting(small: np.ndarray, name: str) -> np.ndarray:
    """The frame, relative to RELION's setting of ``name``, of the setting of its group that fits the map best.

    Candidates are RELION's settings of the same group and scipy's (``create_group``); a map in
    the setting named gets the identity.
    """
    base, own = RELION_SETTINGS[name]
    frames: list[np.ndarray] = []
    for frame in [own] + [f for b, f in RELION_SETTINGS.values() if b == base] + [np.eye(3)]:
        if not any(np.allclose(frame @ own.T, seen) for seen in frames):  # O (and I = I2) appear twice
            frames.append(frame @ own.T)
    if len(frames) == 1:
        return frames[0]
    scores = [symmetry_score(small, Symmetry(name, frame), n_random=4) for frame in frames]
    return frames[int(np.argmax(scores))]


def find_symmetry_frame(volume: np.ndarray, symmetry: Symmetry | str | None, n_directions: int = 300) -> Symmetry:
    """Where a map's symmetry axes are: the frame ``F`` of highest :func:`symmetry_score`.

    For Cn/Dn the n-fold axis is searched over a hemisphere of directions (on a ≤ 32³ copy of
    the map), refined locally, then for Dn the 2-fold axis around it.  T, O and I are not
    searched: the map is scored in each of RELION's settings of its group (T and scipy's T;
    I1…I4; see :data:`RELION_SETTINGS`) and the best setting is returned as a frame relative to
    the one named.

    Parameters
    ----------
    volume : ndarray, shape (n, n, n)
        Cubic map, the symmetry centre at voxel n//2.
    symmetry : Symmetry or str
        The group (its frame, if any, is ignored).
    n_directions : int
        Candidate n-fold axes.

    Returns
    -------
    Symmetry
        The group with the frame found and the score of the full map in it.
    """
    sym = as_symmetry(symmetry)
    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"Finding symmetry axes needs a cubic map; got shape {vol.shape}.")
    if sym.name == "C1":
        return Symmetry("C1", np.eye(3), 1.0)
    if sym.name[0] in "TOI":
        frame = _best_setting(_search_volume(vol), sym.name)
        return Symmetry(sym.name, frame, symmetry_score(vol, Symmetry(sym.name, frame)))
    n_fold = int(sym.name[1:])
    small = _search_volume(vol)
    mask = _sphere_mask(small.shape[0])

    def axis_score(axis: np.ndarray) -> float:
        g = Rotation.from_rotvec(axis * 2 * np.pi / n_fold).as_matrix()
        return _correlation(small, _rotate_volume(small, g), mask)

    directions = fibonacci_sphere(2 * n_directions)
    directions = directions[directions[:, 2] >= 0]  # an axis and its opposite are the same
    scores = np.array([axis_score(u) for u in directions])
    axis = directions[int(np.argmax(scores))]
    best = float(scores.max())
    for step in np.radians([4.0, 2.0, 1.0, 0.5]):  # local refinement around the best direction
        frame = _axis_frame(axis)
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            u = frame @ np.array([dx * step, dy * step, 1.0])
            u /= np.linalg.norm(u)
            s = axis_score(u)
            if s > best:
                best, axis = s, u
    angle = 0.0
    if sym.name.startswith("D"):
        candidates = np.radians(np.arange(0.0, 180.0 / n_fold, 1.0))
        half_turn_x = Rotation.from_euler("x", np.pi).as_matrix()
        two_fold = []
        for a in candidates:  # the 2-fold axis F e_x: its half turn is F Rx(π) Fᵀ
            frame = _axis_frame(axis, a)
            two_fold.append(_correlation(small, _rotate_volume(small, frame @ half_turn_x @ frame.T), mask))
        angle = float(candidates[int(np.argmax(two_fold))])
    frame = _axis_frame(axis, angle)
    out = Symmetry(sym.name, frame)
    out.score = symmetry_score(vol, out)
    log.info("%s axes: n-fold along %s, score %.3f", sym.name, np.round(axis, 3), out.score)
    return out


@dataclass
class SymmetryReport:
    """What :func:`detect_symmetry` measured.

    Attributes
    ----------
    suggested : Symmetry
        The group of highest order whose score reaches the threshold (C1 when none does).
    scores : dict
        Score of every group tried (in its best frame).
    """

    suggested: Symmetry
    scores: dict

    def summary(self) -> str:
        """One line: the suggestion and the best scores."""
        top = sorted(self.scores.items(), key=lambda kv: -kv[1])[:4]
        return (
            f"suggested symmetry {self.suggested.name}"
            + (f" (score {self.suggested.score:.2f})" if self.suggested.score is not None else "")
            + "; scores "
            + ", ".join(f"{k} {v:.2f}" for k, v in top)
        )


def detect_symmetry(
    volume: np.ndarray, candidates: tuple[str, ...] = DETECT_CANDIDATES, threshold: float = SYMMETRY_THRESHOLD
) -> Generator[Progress, None, SymmetryReport]:
    """Suggest a point group for a map from its symmetry scores (job).

    Each candidate's axes are searched (:func:`find_symmetry_frame`; T, O and I are only scored in
    RELION's settings); Dn is tried only when Cn scores at least ``threshold``, and T, O and I only
    when C3, C4 and C5 do (a map without those is spared their cost).  The suggestion is the
    candidate of highest order at or above ``threshold`` and within :data:`SUGGEST_MARGIN` of the
    best score (C1 when none is).

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        A map, symmetry centre at the box centre; padded to a cube.
    candidates : tuple of str
    threshold : float

    Returns
    -------
    SymmetryReport
    """
    from tomolens.orient.project import pad_to_cube

    vol = pad_to_cube(volume)
    scores: dict[str, float] = {}
    found: dict[str, Symmetry] = {}
    names = [parse_symmetry(c) for c in candidates]
    for i, name in enumerate(names):
        after = "C" + name[1:] if name.startswith("D") else _DETECT_AFTER.get(name)
        if after is None or scores.get(after, 1.0) >= threshold:
            found[name] = find_symmetry_frame(vol, name)
            scores[name] = float(found[name].score)
        yield Progress(i + 1, len(names), f"symmetry: {name}")
    top = max(scores.values(), default=0.0)
    # a group that holds only approximately (say C6 at 0.91 on a D3 map whose groups score 0.999) is not suggested
    passing = [s for s in found.values() if s.score >= max(threshold, top - SUGGEST_MARGIN)]
    best = max(passing, key=lambda s: (s.order, s.score), default=Symmetry("C1", np.eye(3), 1.0))
    report = SymmetryReport(best, scores)
    log.info("%s", report.summary())
    return report


def check_symmetry(
    volume: np.ndarray, symmetry: Symmetry | str | None, threshold: float = SYMMETRY_THRESHOLD
) -> tuple[Symmetry, str | None]:
    """The group's frame on a map, and a warning when the map scores below ``threshold`` for it.

    Returns
    -------
    symmetry : Symmetry
        In the map's frame, with its score (C1: the identity frame, score 1).
    warning : str or None
    """
    from tomolens.orient.project import pad_to_cube

    sym = find_symmetry_frame(pad_to_cube(volume), as_symmetry(symmetry).name)
    if sym.score is not None and sym.score < threshold:
        return sym, (
            f"The map scores {sym.score:.2f} for {sym.name} symmetry (a map with it scores at least "
            f"{threshold:.2f}): it probably does not have it; `tomolens orient symmetry MAP` measures "
            "which it has."
        )
    return sym, None
