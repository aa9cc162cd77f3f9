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
   single-particle analysis: reconstruct from the current orientations, then score
   candidate orientations by the normalised correlation of each image's Fourier transform
   with the map's central slice within a resolution limit.  *Global* passes try a grid
   over all of SO(3) and move an orientation only when the grid's best beats it (this
   brings back orientations too far off for small steps); *local* passes move each
   orientation to the best of 27 small rotations around it (a 3×3×3 grid of rotation
   vectors of step ``δ``; it stays unless another scores strictly higher).  δ shrinks
   and the resolution limit rises over the passes (:data:`REFINE_SCHEDULE`).

Every reconstruction is made from two half sets (even and odd images) (matched each against its
own map with ``gold_standard``); the half-set FSC is the refinement's own criterion, and the
refined orientations are returned only if they score at least as well as the start.  With a
point group (:mod:`tomolens.orient.symmetry`) the group's axes are found on each reconstruction,
the orientations are turned into the group's canonical frame (RELION's: n-fold axis along z) and
the half maps are averaged over the group.

Images are compared without their mean (the zero frequency and the lowest ring are left
out), and at least :data:`MIN_RADIUS` Fourier pixels are always compared.

In-plane shifts are searched only when asked (``max_shift_px``; by default the projections are
assumed centred, as in the paper's benchmark); no CTF is modelled.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress, relay
from tomolens.orient.files import check_stack
from tomolens.orient.project import centred_fft2, fourier_plane, padded_size, shift_phase
from tomolens.orient.rotations import canonical, matrices
from tomolens.orient.symmetry import (
    SYMMETRY_THRESHOLD,
    Symmetry,
    _rotate_volume,
    as_symmetry,
    find_symmetry_frame,
    symmetrise_volume,
)

log = logging.getLogger(__name__)

#: Finest resolution compared, in pixels (2 = Nyquist): limits of a schedule or of the frame
#: search finer than this × the pixel size are raised to it.
FINEST = 2.5

#: Fewest Fourier pixels compared along a radius: coarser resolution limits are lowered to it.
MIN_RADIUS = 4.0

#: Frequencies below this radius (Fourier pixels) are not compared (the images' mean and
#: the slowest ring carry no orientation information).
LOW_CUT = 1.5

#: Steps (degrees) of the local search that polishes the frame found on the grid.
LOCAL_STEPS_DEG = (6.0, 3.0, 3.0, 1.5, 1.5)

#: Projection-matching passes: (mode, step in degrees, resolution limit in Å, passes); see
#: :func:`refine_orientations`.
REFINE_SCHEDULE: tuple[tuple[str, float, float, int], ...] = (
    ("global", 10.0, 20.0, 1), ("local", 6.0, 20.0, 2), ("global", 10.0, 15.0, 1), ("local", 3.0, 15.0, 2),
    ("local", 1.5, 12.0, 1), ("local", 0.75, 10.0, 1))


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


def _radius(m: int, pixel_size_A: float, resolution_A: float) -> float:
    """Fourier radius (pixels of an m grid) of a resolution limit, within [MIN_RADIUS, m / FINEST]."""
    return float(np.clip(m * pixel_size_A / resolution_A, MIN_RADIUS, m / FINEST))


def _zero_mean(images: np.ndarray) -> np.ndarray:
    """Images (N, n, n) minus each one's mean, float32."""
    images = np.asarray(images, np.float32)
    return images - images.mean(axis=(1, 2), keepdims=True)


def _central_lines(images: np.ndarray, pixel_size_A: float, resolution_A: float, n_angles: int) -> np.ndarray:
    """Unit-norm central half-lines of the images' Fourier transforms, (N, n_angles, R) complex64."""
    n = images.shape[1]
    m = 2 * n
    half = m // 2
    radius = _radius(m, pixel_size_A, resolution_A)
    radii = np.arange(2, int(radius) + 1)
    angles = np.arange(n_angles) * 2 * np.pi / n_angles
    xs = half + radii[None] * np.cos(angles)[:, None]
    ys = half + radii[None] * np.sin(angles)[:, None]
    lines = np.empty((len(images), n_angles, len(radii)), np.complex64)
    for start in range(0, len(images), 200):
        spec = centred_fft2(_zero_mean(images[start : start + 200]), m)
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
    directions = _fibonacci_sphere(n_directions)
    for b, transposed in enumerate((False, True)):
        base = _branch(mats, transposed)
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
            if d % 20 == 0 or d == n_directions - 1:
                yield Progress(b * n_directions + d + 1, total, "common lines: searching the frame")
    score, left, transposed = best
    base = _branch(mats, transposed)
    # polish L around the best so far: 27 small rotations ΔL per round (the first is ΔL = L)
    for r, step in enumerate(LOCAL_STEPS_DEG):
        candidates = _rotation_grid(np.radians(step)) @ left
        scores = [common_line_score(lines, c[None] @ base, first, second) for c in candidates]
        k = int(np.argmax(scores))
        if scores[k] > score:
            score, left = float(scores[k]), candidates[k]
        yield Progress(2 * n_directions + r + 1, total, "common lines: polishing the frame")
    fixed = canonical(Rotation.from_matrix(left[None] @ _branch(mats_all, transposed)).as_quat())
    log.info("frame from common lines: score %.4f (before %.4f), transposed %s", score, before, transposed)
    return fixed, {"score": score, "score_before": float(before), "transposed": transposed}


def _centre_first(points: np.ndarray) -> np.ndarray:
    """Grid points (K, d) ordered by their L1 distance from the origin: the origin first, so it wins ties."""
    return points[np.argsort(np.abs(points).sum(axis=1), kind="stable")]


def _rotation_grid(step_rad: float) -> np.ndarray:
    """27 rotation matrices: rotation vectors on a 3×3×3 grid of spacing ``step_rad``, the identity first."""
    grid = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return Rotation.from_rotvec(_centre_first(grid) * step_rad).as_matrix()


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
                candidates: np.ndarray, batch: int) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Local projection matching (job): each orientation to the best of ``Δ A`` (Δ in candidates).

    ``candidates[0]`` is the identity: an orientation stays unless another scores strictly higher.
    """
    import torch

    out = mats.copy()
    moved = 0
    for start in range(0, len(mats), batch):
        cur = mats[start : start + batch]
        ft = torch.from_numpy(np.stack([images_ft[start : start + batch].real, images_ft[start : start + batch].imag]))
        cand = np.einsum("cij,bjk->bcik", candidates, cur).reshape(-1, 3, 3)  # Δ A
        slices = _unit(_slices(spec, cand, plane)).reshape(2, len(cur), len(candidates), -1)
        score = (slices * ft[:, :, None, :]).sum(dim=(0, 3))
        best = score.argmax(dim=1).numpy()  # the first maximum: ties keep the identity
        moved += int(np.sum(best != 0))
        out[start : start + batch] = cand.reshape(len(cur), len(candidates), 3, 3)[np.arange(len(cur)), best]
        yield Progress(start + len(cur), len(mats), "local matching")
    return out, moved


def _global_pass(images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, grid: np.ndarray,
                 batch: int) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Global projection matching (job): an orientation moves to the best of ``grid`` if that scores higher."""
    import torch

    refs = []
    for i in range(0, len(grid), 2000):
        refs.append(_unit(_slices(spec, grid[i : i + 2000], plane)))
        yield Progress(0, len(mats), "global matching: reference slices")
    refs = torch.cat(refs, dim=1).permute(0, 2, 1).reshape(-1, len(grid))  # (2P, K): real rows, then imaginary
    out = mats.copy()
    moved = 0
    for start in range(0, len(mats), batch):
        chunk = images_ft[start : start + batch]
        ft = torch.from_numpy(np.concatenate([chunk.real, chunk.imag], axis=1))  # (b, 2P), same layout
        current = _unit(_slices(spec, mats[start : start + batch], plane))
        current_score = (current.permute(1, 0, 2).reshape(len(chunk), -1) * ft).sum(dim=1)
        score, best = (ft @ refs).max(dim=1)
        better = (score > current_score).numpy()
        out[np.flatnonzero(better) + start] = grid[best.numpy()[better]]
        moved += int(better.sum())
        yield Progress(start + len(chunk), len(mats), "global matching")
    return out, moved


def _shift_pass(images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, offsets: np.ndarray,
                m: int, batch: int) -> Generator[Progress, None, np.ndarray]:
    """Best in-plane shift offset (pixels, x y) of each image against its central slice (job).

    ``images_ft`` already has the current shifts undone; the offset ``o`` maximising
    ``Re Σ Î(k) S*(k) exp(2πi k·o / m)`` is returned per image, shape (N, 2).
    """
    import torch

    phase = np.conj(shift_phase(plane[0][:, None], plane[1][:, None], offsets[:, 0], offsets[:, 1], m))
    phase = torch.from_numpy(phase.astype(np.complex64))  # (P, G)
    out = np.zeros((len(mats), 2))
    for start in range(0, len(mats), batch):
        ref = _unit(_slices(spec, mats[start : start + batch], plane))
        cross = torch.from_numpy(images_ft[start : start + batch]) * torch.complex(ref[0], -ref[1])
        out[start : start + batch] = offsets[(cross @ phase).real.argmax(dim=1).numpy()]
        yield Progress(start + len(cross), len(mats), "shift search")
    return out


def _undo_shifts(images_ft: np.ndarray, plane: np.ndarray, shifts: np.ndarray, m: int) -> np.ndarray:
    """Image spectra on ``plane`` with in-plane shifts (N, 2) px (x, y) of their content undone."""
    if not np.any(shifts):
        return images_ft
    ramp = np.conj(shift_phase(plane[0], plane[1], shifts[:, :1], shifts[:, 1:], m))  # (N, P)
    return (images_ft * ramp).astype(np.complex64)


def refine_orientations(
    images: np.ndarray,
    quats: np.ndarray,
    pixel_size_A: float,
    schedule: Sequence[tuple[str, float, float, int]] = REFINE_SCHEDULE,
    pad_factor: float = 1.0,
    batch: int = 100,
    max_shift_px: float = 0.0,
    symmetry=None,
    info: dict | None = None,
    gold_standard: bool = False,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray, list[dict]]]:
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
        (kept between :data:`MIN_RADIUS` Fourier pixels and :data:`FINEST` pixels).
        ``"local"``: every orientation moves to the best of the 27 rotations ``Δ A`` with
        ``Δ`` on a grid of rotation vectors of spacing ``step_deg``.  ``"global"``: an
        orientation moves to the best of :func:`global_grid` (``step_deg`` apart over all of
        SO(3)) when that beats it, which brings back orientations too far off for local steps.
    pad_factor : float
        Zero padding of reconstruction and slices (1 is enough for matching).
    batch : int
        Images per local batch (memory ≈ batch × 27 × slice points × 12 bytes); global
        passes score 5 × batch images at a time.
    max_shift_px : float
        0: the projections are centred.  Otherwise each pass also moves every image's
        in-plane shift by the best offset on a grid (±2 px in steps of 1 in the first half of
        the passes, ±1 px in steps of 0.5 after), kept within ±max_shift_px; shifts are
        undone in matching and reconstruction.
    symmetry : tomolens.orient.symmetry.Symmetry or str, optional
        Point group of the particle.  Its axes are found on the first reconstruction
        (:func:`tomolens.orient.symmetry.find_symmetry_frame`), the orientations are turned into
        the group's canonical frame (RELION's: n-fold axis along z) and every reconstruction is
        averaged over the group.
    info : dict, optional
        Filled with ``half_set_score`` (of the result), ``kept_start`` (True when the refined
        orientations scored lower than the start and the start was returned) and, with a symmetry,
        ``symmetry`` and the ``symmetry_score`` of the first reconstruction.

    gold_standard : bool
        Match each half set only against its own map, as RELION, so that the two maps never share
        noise and their FSC is not inflated by the refinement itself.  Off by default: matching
        every image against the mean of both maps is more accurate on small sets (5j0n, 1,000
        projections at variance 16: 3.2° against 4.2°).

    Every reconstruction is made from two half sets (even and odd images); the mean FSC between
    them in the upper half of the compared band is the refinement's own criterion (it has no
    truth).  Without ``gold_standard`` both halves are matched against the same map, which
    raises their FSC a little by itself: the criterion then catches refinements that go wrong,
    not small losses.  The refined orientations are checked by one more pair of reconstructions and
    returned unless they score lower than the start, which is then returned instead.

    Returns
    -------
    quats : ndarray, shape (N, 4)
    shifts_px : ndarray, shape (N, 2)
        In-plane shifts (x, y) of the image content, pixels (zeros without a shift search).
    history : list of dict
        Per pass: mode, step_deg, resolution_A (as compared), moved (orientations that
        changed), ``half_set_score_before``/``_after`` and with a shift search ``mean_shift_px``.

    Raises
    ------
    ValueError
        Not a stack of at least 10 square images, not one orientation per image, or an
        unknown pass mode.
    """
    import torch

    from tomolens.orient.project import centred_fft3

    images = _zero_mean(check_stack(images, "the projections"))
    n_img, n, _ = images.shape
    mats = matrices(quats)
    if len(mats) != n_img:
        raise ValueError(f"{n_img} images but {len(mats)} orientations; give one orientation per image.")
    passes = [(mode, step, res) for mode, step, res, count in schedule for _ in range(int(count))]
    if any(mode not in ("local", "global") for mode, _, _ in passes):
        raise ValueError(f"Refinement passes are 'local' or 'global'; got {[p[0] for p in passes]}.")
    m = padded_size(n, pad_factor)
    radii = [_radius(m, pixel_size_A, res) for _, _, res in passes]
    # the images' spectra once, on the disc of the finest pass (batches keep the peak low)
    _, _, disc, plane_all = fourier_plane(m, max(radii, default=MIN_RADIUS), LOW_CUT)
    spectra = np.empty((n_img, int(disc.sum())), np.complex64)
    for start in range(0, n_img, 500):
        spectra[start : start + 500] = centred_fft2(images[start : start + 500], m)[:, disc]
    radius_of_point = np.hypot(plane_all[0], plane_all[1])
    shifts = np.zeros((n_img, 2))
    steps = 1000 * len(passes) + 300  # the last 300: reconstructions that check the result
    history = []
    sym = as_symmetry(symmetry)
    frame_info = info
    finest_A = m * pixel_size_A / max(radii, default=MIN_RADIUS)
    best = None  # (half-set score, orientations, shifts, pass): the result never scores below its start
    for p in range(len(passes) + 1):
        last = p == len(passes)
        label = "projection matching: checking the result" if last else \
            f"projection matching: pass {p + 1} of {len(passes)}"
        halves, score, mats = yield from _half_set_volume(
            images, mats, shifts, pixel_size_A, pad_factor, sym, p == 0, frame_info, finest_A,
            lambda s, p=p, label=label: Progress(1000 * p + 300 * s.done // max(s.total, 1), steps,
                                                 f"{label}, reconstructing"))
        if p == 0 and sym.name != "C1":
            sym = Symmetry(sym.name)  # the orientations are now in the group's canonical frame
        if history:
            history[-1]["half_set_score_after"] = score
        if p == 0 or last:  # the start, and the end
            if best is None or score > best[0]:
                best = (score, mats.copy(), shifts.copy(), p)
        if last:
            break
        mode, step, _ = passes[p]
        radius = radii[p]
        sel = radius_of_point < radius
        plane = plane_all[:, sel]
        ft = _undo_shifts(spectra[:, sel], plane, shifts, m)
        mats = mats.copy()
        found = np.zeros_like(shifts)
        moved = 0
        # gold standard: each half against its own map; otherwise every image against the mean of the two
        groups = (list(zip((slice(0, None, 2), slice(1, None, 2)), halves)) if gold_standard
                  else [(slice(None), 0.5 * (halves[0] + halves[1]))])
        for h, (rows, volume) in enumerate(groups):
            spectrum = centred_fft3(volume, pad_factor)
            spec = torch.from_numpy(np.stack([spectrum.real, spectrum.imag])[None])
            match = (_global_pass(ft[rows], mats[rows], spec, plane, global_grid(step), 5 * batch)
                     if mode == "global" else
                     _match_pass(ft[rows], mats[rows], spec, plane, _rotation_grid(np.radians(step)), batch))
            share = 600 // len(groups)
            mats[rows], moved_h = yield from relay(match, lambda s, p=p, h=h, label=label, mode=mode, share=share:
                                                   Progress(1000 * p + 300 + share * h + share * s.done
                                                            // max(s.total, 1), steps, f"{label}, {mode} "
                                                            f"({s.done}/{s.total})"))
            moved += moved_h
            if max_shift_px > 0:
                reach, spacing = (2.0, 1.0) if 2 * p < len(passes) else (1.0, 0.5)
                grid = np.arange(-reach, reach + spacing / 2, spacing)
                offsets = _centre_first(np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1).reshape(-1, 2))
                found[rows] = yield from relay(_shift_pass(ft[rows], mats[rows], spec, plane, offsets, m, batch),
                                               lambda s, p=p, label=label: Progress(
                                                   1000 * p + 900, steps, f"{label}, shifts ({s.done}/{s.total})"))
        resolution = m * pixel_size_A / radius
        history.append({"mode": mode, "step_deg": step, "resolution_A": resolution, "moved": moved,
                        "half_set_score_before": score})
        if max_shift_px > 0:
            shifts = np.clip(shifts + found, -max_shift_px, max_shift_px)
            history[-1]["mean_shift_px"] = float(np.mean(np.hypot(shifts[:, 0], shifts[:, 1])))
        log.info("refinement pass %d (%s): step %.2f°, %.1f Å, %d of %d moved, half-set score %.4f", p + 1, mode,
                 step, resolution, moved, n_img, score)
        yield Progress(1000 * (p + 1), steps, f"{label} ({moved} moved)")
    score, mats, shifts, kept = best
    kept_start = kept == 0 and len(passes) > 0
    if kept_start:
        log.warning("refinement kept its starting orientations: the refined ones scored lower by half-set FSC "
                    "(%.4f against %.4f)", history[-1]["half_set_score_after"], score)
    if frame_info is not None:
        frame_info["half_set_score"] = score
        frame_info["kept_start"] = kept_start
    return canonical(Rotation.from_matrix(mats).as_quat()), shifts, history


def _half_set_volume(images, mats, shifts, pixel_size_A, pad_factor, sym, find_frame, frame_info, resolution_A,
                     transform):
    """Reconstruct the even and odd halves (job): the two maps, their score, and the orientations.

    The score is the mean FSC of the halves between ``2 · resolution_A`` and ``resolution_A``.
    With a symmetry, the group's axes are found on the mean map, both halves are turned into the
    group's canonical frame (orientations ``A F``) and averaged over the group; the first call
    (``find_frame``) records the symmetry score.
    """
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_half_sets

    quats_now = canonical(Rotation.from_matrix(mats).as_quat())
    half_a, half_b = yield from relay(
        reconstruct_half_sets(images, quats_now, shifts if np.any(shifts) else None, pad_factor=pad_factor),
        transform)
    if sym.name != "C1":
        # the axes are searched on every pass: the first maps are blurred, so the first frame is rough
        found = find_symmetry_frame(0.5 * (half_a + half_b), sym.name)
        mats = mats @ found.frame
        half_a, half_b = (_rotate_volume(h, found.frame) for h in (half_a, half_b))
        if find_frame:
            if frame_info is not None:
                frame_info.update({"symmetry": sym.name, "symmetry_score": found.score})
            if found.score < SYMMETRY_THRESHOLD:
                log.warning("the reconstruction scores %.2f for %s symmetry (a symmetric map scores above %.2f): "
                            "the particle may not have it", found.score, sym.name, SYMMETRY_THRESHOLD)
        canonical_sym = Symmetry(sym.name)
        half_a, half_b = symmetrise_volume(half_a, canonical_sym), symmetrise_volume(half_b, canonical_sym)
    fsc = fourier_shell_correlation(half_a, half_b, pixel_size_A)
    # the upper half of the compared band: where better orientations show (low shells correlate anyway)
    band = (fsc.frequency_per_A <= 1.0 / resolution_A) & (fsc.frequency_per_A >= 0.5 / resolution_A)
    score = float(np.mean(fsc.fsc[band])) if np.any(band) else float(fsc.fsc[-1])
    return (half_a, half_b), score, mats
