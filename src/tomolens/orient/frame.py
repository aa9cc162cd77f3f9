"""The frame that distances leave open, fixed by common lines (after recovery from distances).

Distances between orientations do not change when every orientation ``A_i`` is multiplied
on the left by a fixed rotation ``L``, nor when it is transposed (see
:func:`tomolens.orient.rotations.align_orientations`), yet only a *right* factor — a global
rotation of the map — leaves the projections consistent with one 3D map.  A recovery from
distances alone therefore gives ``L A_i G`` (or ``L A_iᵀ G``) and a reconstruction from it is
blurred.  The *common-line* geometry of pairs of projections depends on ``L`` and on the
transposition but not on ``G``: :func:`fix_frame` compares central lines of the images' Fourier
transforms (low-pass, ``resolution_A``) along the lines each candidate predicts, for a few
thousand random pairs; the candidate ``L`` (a grid over the viewing direction ``Lᵀ e_z`` and an
in-plane angle, then a local search) and branch with the highest mean correlation is applied.  The
hand of the map stays undetermined, as in any single-particle reconstruction (a mirrored map with
mirrored orientations scores the same).
"""

from __future__ import annotations

import logging
from collections.abc import Generator

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress
from tomolens.orient.files import check_stack
from tomolens.orient.matching import fourier_radius, zero_mean
from tomolens.orient.project import centred_fft2
from tomolens.orient.rotations import (
    canonical,
    fibonacci_sphere,
    matrices,
    rotation_grid,
    rotation_to_ez,
)

log = logging.getLogger(__name__)

#: Steps (degrees) of the local search that polishes the frame found on the grid.
LOCAL_STEPS_DEG = (6.0, 3.0, 3.0, 1.5, 1.5)


def _central_lines(images: np.ndarray, pixel_size_A: float, resolution_A: float, n_angles: int) -> np.ndarray:
    """Unit-norm central half-lines of the images' Fourier transforms, (N, n_angles, R) complex64."""
    n = images.shape[1]
    m = 2 * n
    half = m // 2
    radius = fourier_radius(m, pixel_size_A, resolution_A)
    radii = np.arange(2, int(radius) + 1)
    angles = np.arange(n_angles) * 2 * np.pi / n_angles
    xs = half + radii[None] * np.cos(angles)[:, None]
    ys = half + radii[None] * np.sin(angles)[:, None]
    lines = np.empty((len(images), n_angles, len(radii)), np.complex64)
    for start in range(0, len(images), 200):
        spec = centred_fft2(zero_mean(images[start : start + 200]), m)
        for i, f in enumerate(spec):
            lines[start + i] = ndimage.map_coordinates(f.real, [ys, xs], order=1) + 1j * ndimage.map_coordinates(
                f.imag, [ys, xs], order=1
            )
    lines /= np.linalg.norm(lines, axis=2, keepdims=True) + 1e-12
    return lines


def _line_angles(mats: np.ndarray, first: np.ndarray, second: np.ndarray, n_angles: int):
    """Angle indices of the common line of each pair in its first and second image."""
    ni, nj = mats[first, 2, :], mats[second, 2, :]  # plane normals Aᵀ e_z (third rows)
    c = np.cross(ni, nj)
    c /= np.linalg.norm(c, axis=1, keepdims=True) + 1e-12
    ki = np.einsum("pij,pj->pi", mats[first], c)
    kj = np.einsum("pij,pj->pi", mats[second], c)
    step = 2 * np.pi / n_angles
    return (
        np.round(np.arctan2(ki[:, 1], ki[:, 0]) / step).astype(np.int64),
        np.round(np.arctan2(kj[:, 1], kj[:, 0]) / step).astype(np.int64),
    )


def _branch(mats: np.ndarray, transposed: bool) -> np.ndarray:
    """The orientation matrices (N, 3, 3), or their transposes."""
    return np.transpose(mats, (0, 2, 1)) if transposed else mats


def common_line_score(lines: np.ndarray, mats: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Mean correlation of the pairs' central lines along their predicted common lines."""
    ai, aj = _line_angles(mats, first, second, lines.shape[1])
    n_angles = lines.shape[1]
    return float(np.mean(np.sum(lines[first, ai % n_angles] * np.conj(lines[second, aj % n_angles]), axis=1).real))


def fix_frame(
    images: np.ndarray,
    quats: np.ndarray,
    pixel_size_A: float,
    resolution_A: float = 25.0,
    n_pairs: int = 1500,
    n_directions: int = 400,
    n_angles: int = 180,
    seed: int = 0,
) -> Generator[Progress, None, tuple[np.ndarray, dict]]:
    """Choose the left factor and transposition that make orientations consistent (job).

    Parameters
    ----------
    images : ndarray, shape (N, n, n)
        The projections.
    quats : ndarray, shape (N, 4)
        Orientations from distances (defined up to left/right factors and transposition).
    pixel_size_A : float
        Pixel size, Å.
    resolution_A : float
        Only Fourier components up to this resolution are compared.
    n_pairs : int
        Random image pairs scored.
    n_directions, n_angles : int
        Candidate grid: viewing directions ``Lᵀ e_z`` (Fibonacci sphere) × in-plane angles.
    seed : int
        Seed of the pair sample.

    Returns
    -------
    quats : ndarray, shape (N, 4)
        ``L A_i`` or ``L A_iᵀ``, whichever scores best — the input itself when nothing beats
        it (canonical).
    info : dict
        ``score`` (best mean line correlation), ``score_before``, ``transposed``.

    Raises
    ------
    ValueError
        Not a stack of at least 10 square images, or not one orientation per image.
    """
    images = check_stack(images, "the projections")
    mats_all = matrices(quats)
    n_img = len(images)
    if len(mats_all) != n_img:
        raise ValueError(f"{n_img} images but {len(mats_all)} orientations; give one orientation per image.")
    rng = np.random.default_rng(seed)
    n_pairs = min(n_pairs, n_img * (n_img - 1) // 2)  # small stacks: about as many draws as distinct pairs
    first, second = rng.integers(0, n_img, n_pairs), rng.integers(0, n_img, n_pairs)
    keep = first != second
    # only the images of the sampled pairs are needed: index them 0..U-1
    used, inverse = np.unique(np.concatenate([first[keep], second[keep]]), return_inverse=True)
    first, second = np.split(inverse, 2)
    lines = _central_lines(images[used], pixel_size_A, resolution_A, n_angles)
    mats = mats_all[used]
    total = 2 * n_directions + len(LOCAL_STEPS_DEG)
    yield Progress(0, total, "common lines")
    # correlation of every angle pair of every image pair: (P, n_angles, n_angles)
    table = np.matmul(lines[first], np.conj(lines[second]).transpose(0, 2, 1)).real.astype(np.float32)
    before = common_line_score(lines, mats, first, second)
    shifts = np.arange(n_angles)
    rows = np.arange(len(first))[None]
    best = (before, np.eye(3), False)  # the input is a candidate too
    directions = fibonacci_sphere(n_directions)
    for b, transposed in enumerate((False, True)):
        base = _branch(mats, transposed)
        for d, u in enumerate(directions):
            left = rotation_to_ez(u)
            ai, aj = _line_angles(left[None] @ base, first, second, n_angles)
            # a rotation by φ about z after L adds φ to every line angle of every image
            scores = table[rows, (ai[None] + shifts[:, None]) % n_angles, (aj[None] + shifts[:, None]) % n_angles]
            scores = scores.mean(axis=1)
            k = int(np.argmax(scores))
            if scores[k] > best[0]:
                phi = k * 2 * np.pi / n_angles
                best = (float(scores[k]), Rotation.from_euler("z", phi).as_matrix() @ left, transposed)
            if d % 20 == 0 or d == n_directions - 1:
                yield Progress(b * n_directions + d + 1, total, "common lines: searching the frame")
    score, left, transposed = best
    base = _branch(mats, transposed)
    # polish L around the best so far: 27 small rotations ΔL per round (the first is ΔL = L)
    for r, step in enumerate(LOCAL_STEPS_DEG):
        candidates = rotation_grid(np.radians(step)) @ left
        scores = [common_line_score(lines, c[None] @ base, first, second) for c in candidates]
        k = int(np.argmax(scores))
        if scores[k] > score:
            score, left = float(scores[k]), candidates[k]
        yield Progress(2 * n_directions + r + 1, total, "common lines: polishing the frame")
    fixed = canonical(Rotation.from_matrix(left[None] @ _branch(mats_all, transposed)).as_quat())
    log.info("frame from common lines: score %.4f (before %.4f), transposed %s", score, before, transposed)
    return fixed, {"score": score, "score_before": float(before), "transposed": transposed}
