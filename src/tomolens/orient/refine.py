"""After recovery from distances: fix the frame by common lines, then refine by projection matching.

Distances between orientations do not change when every orientation ``A_i`` is multiplied
on the left by a fixed rotation ``L``, nor when it is transposed (see
:func:`tomolens.orient.rotations.align_orientations`), yet only a *right* factor — a global
rotation of the map — leaves the projections consistent with one 3D map.  A recovery from
distances alone therefore gives ``L A_i G`` (or ``L A_iᵀ G``) and a reconstruction from it is
blurred.  Two steps that use the images themselves follow the recovery:

1. :func:`fix_frame` — the *common-line* geometry of pairs of projections depends on ``L``
   and on the transposition but not on ``G``.  Central lines of the images' Fourier
   transforms (low-pass, ``frame_resolution_A``) are compared along the lines each
   candidate predicts, for a few thousand random pairs; the candidate ``L`` (a grid over the
   viewing direction ``Lᵀ e_z`` and an in-plane angle, then a local search) and branch with
   the highest mean correlation is applied.  The hand of the map stays undetermined, as in any
   single-particle reconstruction (a mirrored map with mirrored orientations scores the
   same).
2. :func:`refine_orientations` — projection matching, the classical refinement of
   single-particle analysis: reconstruct from the current orientations, then move each
   orientation to the best of 27 small rotations around it (a 3×3×3 grid of rotation
   vectors of step ``δ``), scored by the normalised correlation of the image's Fourier
   transform with the map's central slice within a resolution limit; δ shrinks and the
   resolution limit rises over the passes (:data:`REFINE_SCHEDULE`).

In-plane shifts are not refined (the projections are assumed centred, as in the paper's
benchmark) and no CTF is modelled.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress, relay
from tomolens.orient.rotations import canonical, matrices

log = logging.getLogger(__name__)

#: Finest resolution compared, in pixels (2 = Nyquist): limits of a schedule or of the frame
#: search finer than this × the pixel size are raised to it.
FINEST = 2.5

#: Steps (degrees) of the local search that polishes the frame found on the grid.
LOCAL_STEPS_DEG = (6.0, 3.0, 3.0, 1.5, 1.5)

#: Projection-matching passes: (mode, step in degrees, resolution limit in Å, passes); see
#: :func:`refine_orientations`.
REFINE_SCHEDULE: tuple[tuple[str, float, float, int], ...] = (
    ("global", 10.0, 20.0, 1), ("local", 6.0, 20.0, 2), ("global", 10.0, 15.0, 1), ("local", 3.0, 15.0, 2),
    ("local", 1.5, 12.0, 1), ("local", 0.75, 10.0, 1))


def _centred_fft2(images: np.ndarray, m: int) -> np.ndarray:
    """Centred 2D FFTs of images (N, n, n) zero-padded to m×m (image centre on the origin)."""
    n = images.shape[1]
    a = m // 2 - n // 2
    padded = np.zeros((len(images), m, m), np.float32)
    padded[:, a : a + n, a : a + n] = images
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=(1, 2))), axes=(1, 2))


def _fibonacci_sphere(k: int) -> np.ndarray:
    """k nearly uniform unit vectors (x, y, z), shape (k, 3)."""
    i = np.arange(k) + 0.5
    z = 1.0 - 2.0 * i / k
    r = np.sqrt(1.0 - z * z)
    phi = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _rotation_to_ez(u: np.ndarray) -> np.ndarray:
    """A rotation matrix L with L u = e_z."""
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [u])
    return rot.as_matrix()


def _central_lines(images: np.ndarray, pixel_size_A: float, resolution_A: float, n_angles: int) -> np.ndarray:
    """Unit-norm central half-lines of the images' Fourier transforms, (N, n_angles, R) complex64."""
    n = images.shape[1]
    m = 2 * n
    half = m // 2
    radii = np.arange(2, max(3, int(m * pixel_size_A / max(resolution_A, FINEST * pixel_size_A))) + 1)
    angles = np.arange(n_angles) * 2 * np.pi / n_angles
    xs = half + radii[None] * np.cos(angles)[:, None]
    ys = half + radii[None] * np.sin(angles)[:, None]
    lines = np.empty((len(images), n_angles, len(radii)), np.complex64)
    for start in range(0, len(images), 200):
        spec = _centred_fft2(images[start : start + 200] - images[start : start + 200].mean(axis=(1, 2), keepdims=True), m)
        for i, f in enumerate(spec):
            lines[start + i] = (ndimage.map_coordinates(f.real, [ys, xs], order=1)
                                + 1j * ndimage.map_coordinates(f.imag, [ys, xs], order=1))
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
    return (np.round(np.arctan2(ki[:, 1], ki[:, 0]) / step).astype(np.int64),
            np.round(np.arctan2(kj[:, 1], kj[:, 0]) / step).astype(np.int64))


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

    Returns
    -------
    quats : ndarray, shape (N, 4)
        ``L A_i`` or ``L A_iᵀ``, whichever scores best (canonical).
    info : dict
        ``score`` (best mean line correlation), ``score_before``, ``transposed``.
    """
    n_img = len(images)
    if n_img < 3:
        raise ValueError(f"Fixing the frame by common lines needs at least 3 projections; got {n_img}.")
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, n_img, n_pairs), rng.integers(0, n_img, n_pairs)
    keep = first != second
    first, second = first[keep], second[keep]
    lines = _central_lines(images, pixel_size_A, resolution_A, n_angles)
    # correlation of every angle pair of every image pair: (P, n_angles, n_angles)
    table = np.einsum("par,pbr->pab", lines[first], np.conj(lines[second])).real.astype(np.float32)
    yield Progress(0, 2 * n_directions, "common lines")
    mats = matrices(quats)
    before = common_line_score(lines, mats, first, second)
    shifts = np.arange(n_angles)
    rows = np.arange(len(first))[None]
    best = (-np.inf, None, False)
    directions = _fibonacci_sphere(n_directions)
    for b, transposed in enumerate((False, True)):
        base = np.transpose(mats, (0, 2, 1)) if transposed else mats
        for d, u in enumerate(directions):
            left = _rotation_to_ez(u)
            ai, aj = _line_angles(left[None] @ base, first, second, n_angles)
            # a rotation by φ about z after L adds φ to every line angle of every image
            scores = table[rows, (ai[None] + shifts[:, None]) % n_angles, (aj[None] + shifts[:, None]) % n_angles]
            scores = scores.mean(axis=1)
            k = int(np.argmax(scores))
            if scores[k] > best[0]:
                phi = k * 2 * np.pi / n_angles
                best = (float(scores[k]), Rotation.from_euler("z", phi).as_matrix() @ left, transposed)
            if d % 20 == 0:
                yield Progress(b * n_directions + d + 1, 2 * n_directions, "common lines: searching the frame")
    score, left, transposed = best
    base = np.transpose(mats, (0, 2, 1)) if transposed else mats
    # polish L around the grid's best: 27 small rotations ΔL per round, steps halving
    for step in LOCAL_STEPS_DEG:
        candidates = _rotation_grid(np.radians(step)) @ left
        scores = [common_line_score(lines, c[None] @ base, first, second) for c in candidates]
        k = int(np.argmax(scores))
        if scores[k] > score:
            score, left = float(scores[k]), candidates[k]
    fixed = canonical(Rotation.from_matrix(left[None] @ base).as_quat())
    log.info("frame from common lines: score %.4f (before %.4f), transposed %s", score, before, transposed)
    return fixed, {"score": score, "score_before": before, "transposed": transposed}


def _rotation_grid(step_rad: float) -> np.ndarray:
    """27 rotation matrices: rotation vectors on a 3×3×3 grid of spacing ``step_rad`` (centre = identity)."""
    grid = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return Rotation.from_rotvec(grid * step_rad).as_matrix()


def _slices(spec, mats: np.ndarray, plane: np.ndarray):
    """Central slices of a 3D spectrum (torch (1, 2, m, m, m)) at orientations: (2, len(mats), P)."""
    import torch

    m = spec.shape[-1]
    xyz = np.einsum("bji,jp->bpi", mats, plane)  # Aᵀ k as (x, y, z): grid_sample's order
    grid = torch.from_numpy(((xyz + m // 2) / (m - 1) * 2 - 1).astype(np.float32)).reshape(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(spec, grid, mode="bilinear", align_corners=True)
    return out.reshape(2, len(mats), -1)


def _unit(slices):
    """Slices (2, K, P) scaled to unit norm over (real, imaginary, points)."""
    import torch

    return slices / torch.sqrt((slices**2).sum(dim=(0, 2), keepdim=True) + 1e-12)


def global_grid(step_deg: float) -> np.ndarray:
    """Orientations covering SO(3) about ``step_deg`` apart: (K, 3, 3) matrices.

    Viewing directions ``Aᵀ e_z`` on a Fibonacci sphere (about 4π/step² of them) × in-plane
    angles every ``step_deg``.
    """
    step = np.radians(step_deg)
    directions = _fibonacci_sphere(max(8, int(round(4 * np.pi / step**2))))
    to_z = np.stack([_rotation_to_ez(u) for u in directions])  # R u = e_z, so (Rz R)ᵀ e_z = u
    in_plane = Rotation.from_euler("z", np.arange(0.0, 2 * np.pi, step)[:, None]).as_matrix()
    return np.einsum("aij,djk->daik", in_plane, to_z).reshape(-1, 3, 3)


def _match_pass(images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray,
                candidates: np.ndarray, batch: int):
    """Local projection matching (job): each orientation to the best of ``Δ A`` (Δ in candidates)."""
    import torch

    ft = torch.from_numpy(np.stack([images_ft.real, images_ft.imag]).astype(np.float32))  # (2, N, P)
    out = mats.copy()
    moved = 0
    centre = len(candidates) // 2
    for start in range(0, len(mats), batch):
        cur = mats[start : start + batch]
        cand = np.einsum("cij,bjk->bcik", candidates, cur).reshape(-1, 3, 3)  # Δ A
        slices = _unit(_slices(spec, cand, plane)).reshape(2, len(cur), len(candidates), -1)
        score = (slices * ft[:, start : start + batch, None, :]).sum(dim=(0, 3))
        best = score.argmax(dim=1).numpy()
        moved += int(np.sum(best != centre))
        out[start : start + batch] = cand.reshape(len(cur), len(candidates), 3, 3)[np.arange(len(cur)), best]
        yield Progress(start + len(cur), len(mats), "local matching")
    return out, moved


def _global_pass(images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, grid: np.ndarray,
                 batch: int = 500):
    """Global projection matching (job): an orientation moves to the best of ``grid`` if that scores higher."""
    import torch

    ft = torch.from_numpy(np.concatenate([images_ft.real, images_ft.imag], axis=1).astype(np.float32))  # (N, 2P)
    refs = _unit(torch.cat([_slices(spec, grid[i : i + 2000], plane) for i in range(0, len(grid), 2000)], dim=1))
    refs = refs.permute(0, 2, 1).reshape(-1, len(grid))  # (2P, K), rows real then imaginary like ft
    current = _unit(_slices(spec, mats, plane))
    current_score = (current.permute(1, 0, 2).reshape(len(mats), -1) * ft).sum(dim=1)
    out = mats.copy()
    moved = 0
    for start in range(0, len(mats), batch):
        score, best = (ft[start : start + batch] @ refs).max(dim=1)
        better = (score > current_score[start : start + batch]).numpy()
        idx = np.flatnonzero(better) + start
        out[idx] = grid[best.numpy()[better]]
        moved += int(better.sum())
        yield Progress(min(start + batch, len(mats)), len(mats), "global matching")
    return out, moved


def refine_orientations(
    images: np.ndarray,
    quats: np.ndarray,
    pixel_size_A: float,
    schedule: Sequence[tuple[str, float, float, int]] = REFINE_SCHEDULE,
    pad_factor: float = 1.0,
    batch: int = 100,
) -> Generator[Progress, None, tuple[np.ndarray, list[dict]]]:
    """Refine orientations by projection matching against their own reconstruction (job).

    Parameters
    ----------
    images : ndarray, shape (N, n, n)
        The projections (centred, no CTF).
    quats : ndarray, shape (N, 4)
        Starting orientations, consistent up to a global rotation of the map (after
        :func:`fix_frame`, or aligned to a known truth).
    pixel_size_A : float
        Pixel size, Å.
    schedule : sequence of (mode, step_deg, resolution_A, passes)
        Each pass reconstructs, then scores candidate orientations up to ``resolution_A``
        (at most :data:`FINEST` pixels).  ``"local"``: every orientation moves to the best of
        the 27 rotations ``Δ A`` with ``Δ`` on a grid of rotation vectors of spacing
        ``step_deg``.  ``"global"``: an orientation moves to the best of
        :func:`global_grid` (``step_deg`` apart over all of SO(3)) when that beats it, which
        brings back orientations too far off for local steps.
    pad_factor : float
        Zero padding of reconstruction and slices (1 is enough for matching).
    batch : int
        Images per matching batch (memory ≈ batch × 27 × slice points × 12 bytes).

    Returns
    -------
    quats : ndarray, shape (N, 4)
    history : list of dict
        Per pass: step_deg, resolution_A, moved (orientations that changed).
    """
    from tomolens.orient.reconstruct import reconstruct_fourier

    images = np.asarray(images, np.float32)
    n_img, n, _ = images.shape
    mats = matrices(quats)
    m = int(2 * round(pad_factor * n / 2))
    half = m // 2
    a = half - n // 2
    k = np.arange(m, dtype=np.float64) - half
    ky, kx = np.meshgrid(k, k, indexing="ij")
    import torch

    passes = [(mode, step, res) for mode, step, res, count in schedule for _ in range(int(count))]
    if any(mode not in ("local", "global") for mode, _, _ in passes):
        raise ValueError(f"Refinement passes are 'local' or 'global'; got {[p[0] for p in passes]}.")
    history = []
    spectra = _centred_fft2(images, m)
    for p, (mode, step, resolution) in enumerate(passes):
        resolution = max(resolution, FINEST * pixel_size_A)
        quats_now = canonical(Rotation.from_matrix(mats).as_quat())
        volume = yield from relay(reconstruct_fourier(images, quats_now, pad_factor=pad_factor), lambda _s, p=p: Progress(
            p, len(passes), f"projection matching: pass {p + 1} of {len(passes)}, reconstructing"))
        padded = np.zeros((m, m, m), np.float32)
        padded[a : a + n, a : a + n, a : a + n] = volume
        spectrum = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(padded)))
        disc = (kx**2 + ky**2) <= (m * pixel_size_A / resolution) ** 2
        plane = np.stack([kx[disc], ky[disc], np.zeros(int(disc.sum()))])
        spec = torch.from_numpy(np.stack([spectrum.real, spectrum.imag])[None].astype(np.float32))
        match = (_global_pass(spectra[:, disc], mats, spec, plane, global_grid(step)) if mode == "global" else
                 _match_pass(spectra[:, disc], mats, spec, plane, _rotation_grid(np.radians(step)), batch))
        mats, moved = yield from relay(match, lambda s, p=p, mode=mode: Progress(
            p, len(passes), f"projection matching: pass {p + 1} of {len(passes)}, {mode} ({s.done}/{s.total})"))
        history.append({"mode": mode, "step_deg": step, "resolution_A": resolution, "moved": moved})
        log.info("refinement pass %d (%s): step %.2f°, %.0f Å, %d of %d moved", p + 1, mode, step, resolution,
                 moved, n_img)
        yield Progress(p + 1, len(passes), f"projection matching: pass {p + 1} of {len(passes)} ({moved} moved)")
    return canonical(Rotation.from_matrix(mats).as_quat()), history

