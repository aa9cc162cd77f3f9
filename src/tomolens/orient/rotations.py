"""Orientations as unit quaternions: sampling, RELION Euler angles, distances, alignment.

Conventions
-----------
* Quaternions follow scipy: ``(x, y, z, w)``, scalar last, shape (N, 4), float64.
* An orientation is the 3×3 matrix ``A`` (acting on x, y, z coordinates in Å) such that
  the projection image is ``I(x, y) = ∫ V(Aᵀ (x, y, z)) dz``, i.e. by the Fourier-slice
  theorem ``Î(kx, ky) = V̂(Aᵀ (kx, ky, 0))``.  This is RELION's matrix of the Euler angles
  (rot, tilt, psi) (ZYZ, degrees): ``A = Rotation.from_euler("ZYZ", (rot, tilt, psi)).inv()``.
* The distance between two orientations is the geodesic distance on SO(3),
  ``d(q1, q2) = 2 arccos |<q1, q2>|`` in radians (0…π), as in Banjac et al. (2021).

Projection ambiguity
--------------------
The projection along −v is the projection along v flipped in-plane (mirror):
``A' = F A`` with ``F = diag(1, −1, −1)`` gives ``I'(x, y) = I(x, −y)``, although
``d(A, F A) = π``.  A network that sees images cannot tell these apart reliably, so, as
the paper's "half coverage" does, projection directions are restricted to one hemisphere
(tilt ≤ 90°) by :func:`random_orientations` (``half_sphere=True``): every sampled ``A``
whose viewing direction ``Aᵀ e_z`` points to z < 0 is replaced by ``F A`` (a one-to-one,
measure-preserving map between the two halves, so the result stays uniform on its half).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

#: Flip that maps a projection direction to its opposite (in-plane mirror of the image).
MIRROR_FLIP = np.diag([1.0, -1.0, -1.0])


def random_orientations(n: int, seed: int | None = 0, half_sphere: bool = True) -> np.ndarray:
    """Uniformly random orientations.

    Parameters
    ----------
    n : int
        Number of orientations.
    seed : int or None
        Random seed.
    half_sphere : bool
        Restrict viewing directions to the hemisphere z ≥ 0 (tilt ≤ 90°), which removes
        the mirror ambiguity of projections (see the module docstring).

    Returns
    -------
    ndarray, float64, shape (n, 4)
        Unit quaternions (x, y, z, w) with w ≥ 0.
    """
    rot = Rotation.random(int(n), random_state=np.random.default_rng(seed))
    mats = rot.as_matrix()
    if half_sphere:
        flip = mats[:, 2, 2] < 0  # viewing direction Aᵀ e_z = third row of A
        mats[flip] = MIRROR_FLIP @ mats[flip]
    return canonical(Rotation.from_matrix(mats).as_quat())


def canonical(quats: np.ndarray) -> np.ndarray:
    """Unit quaternions with w ≥ 0 (q and −q are the same rotation)."""
    q = np.asarray(quats, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., 3:4] < 0, -q, q)


def matrices(quats: np.ndarray) -> np.ndarray:
    """Orientation matrices ``A``, shape (N, 3, 3), from quaternions (N, 4)."""
    return Rotation.from_quat(np.asarray(quats, dtype=np.float64)).as_matrix()


def quats_from_relion(angles_deg: np.ndarray) -> np.ndarray:
    """Quaternions from RELION Euler angles (rot, tilt, psi) in degrees, shape (N, 3)."""
    angles = np.atleast_2d(np.asarray(angles_deg, dtype=np.float64))
    return canonical(Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_quat())


def relion_from_quats(quats: np.ndarray) -> np.ndarray:
    """RELION Euler angles (rot, tilt, psi) in degrees, shape (N, 3), from quaternions."""
    rot = Rotation.from_quat(np.asarray(quats, dtype=np.float64)).inv()
    return rot.as_euler("ZYZ", degrees=True)


def geodesic_distance(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Geodesic distance ``2 arccos |<q1, q2>|`` in radians (0…π), broadcast over rows."""
    dot = np.abs(np.sum(np.asarray(q1) * np.asarray(q2), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def _random_o4(rng: np.random.Generator) -> np.ndarray:
    m, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    return m


def align_orientations(
    recovered: np.ndarray, truth: np.ndarray, n_starts: int = 32, iterations: int = 30, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Align recovered orientations to the truth before measuring errors.

    Distances ``d`` are unchanged when every quaternion is multiplied on the left and on
    the right by fixed unit quaternions (global rotations of the image frame and of the
    map) or conjugated (a reflection), i.e. by any 4×4 orthogonal matrix ``M`` acting on
    the quaternions (O(4)).  Recovery from distances is therefore defined only up to such
    an ``M``; this function finds the ``M`` maximising ``Σ <t_i, M r_i>²`` by alternating
    sign choice and orthogonal Procrustes (SVD) from several random starts.

    Parameters
    ----------
    recovered, truth : ndarray, shape (N, 4)
        Unit quaternions (x, y, z, w).
    n_starts : int
        Random starting matrices (both determinants are reachable).
    iterations : int
        Sign/Procrustes iterations per start.
    seed : int
        Seed of the starting matrices.

    Returns
    -------
    aligned : ndarray, shape (N, 4)
        ``M r_i`` with the sign of ``t_i`` (canonical, w ≥ 0).
    transform : ndarray, shape (4, 4)
        The orthogonal matrix ``M``.
    """
    r = canonical(recovered)
    t = canonical(truth)
    if r.shape != t.shape or r.ndim != 2 or r.shape[1] != 4:
        raise ValueError(
            f"Recovered and true orientations must both be (N, 4) quaternions; got {r.shape} and {t.shape}."
        )
    rng = np.random.default_rng(seed)
    best_score, best_m = -1.0, np.eye(4)
    starts = [np.eye(4), np.diag([1.0, 1.0, 1.0, -1.0])] + [_random_o4(rng) for _ in range(n_starts)]
    for m in starts:
        for _ in range(iterations):
            dots = np.einsum("ij,ij->i", t, r @ m.T)
            signs = np.where(dots < 0, -1.0, 1.0)
            cov = t.T @ (r * signs[:, None])
            u, _, vt = np.linalg.svd(cov)
            m_new = u @ vt
            if np.allclose(m_new, m, atol=1e-10):
                m = m_new
                break
            m = m_new
        score = float(np.mean(np.abs(np.einsum("ij,ij->i", t, r @ m.T))))
        if score > best_score:
            best_score, best_m = score, m
    return canonical(r @ best_m.T), best_m


def orientation_errors_deg(recovered: np.ndarray, truth: np.ndarray, **align_kwargs) -> np.ndarray:
    """Per-projection orientation error in degrees after :func:`align_orientations`.

    Returns
    -------
    ndarray, float64, shape (N,)
        ``d(M r_i, t_i)`` in degrees.
    """
    aligned, _ = align_orientations(recovered, truth, **align_kwargs)
    return np.degrees(geodesic_distance(aligned, canonical(truth)))


def fibonacci_sphere(k: int) -> np.ndarray:
    """k nearly uniform unit vectors (x, y, z), shape (k, 3)."""
    i = np.arange(k) + 0.5
    z = 1.0 - 2.0 * i / k
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def rotation_to_ez(u: np.ndarray) -> np.ndarray:
    """A rotation matrix L with L u = e_z."""
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [u])
    return rot.as_matrix()


def centre_first(points: np.ndarray) -> np.ndarray:
    """Grid points (K, d) ordered by their L1 distance from the origin: the origin first, so it wins ties."""
    return points[np.argsort(np.abs(points).sum(axis=1), kind="stable")]


def rotation_grid(step_rad: float) -> np.ndarray:
    """27 rotation matrices: rotation vectors on a 3×3×3 grid of spacing ``step_rad``, the identity first."""
    grid = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return Rotation.from_rotvec(centre_first(grid) * step_rad).as_matrix()


def global_grid(step_deg: float) -> np.ndarray:
    """Orientations covering SO(3) about ``step_deg`` apart: (K, 3, 3) matrices.

    Viewing directions ``Aᵀ e_z`` on a Fibonacci sphere (about 4π/step² of them) × in-plane
    angles every ``step_deg``.
    """
    step = np.radians(step_deg)
    directions = fibonacci_sphere(max(8, int(round(4 * np.pi / step**2))))
    to_z = np.stack([rotation_to_ez(u) for u in directions])  # R u = e_z, so (Rz R)ᵀ e_z = u
    in_plane = Rotation.from_euler("z", np.arange(0.0, 2 * np.pi, step)[:, None]).as_matrix()
    return np.einsum("aij,djk->daik", in_plane, to_z).reshape(-1, 3, 3)
