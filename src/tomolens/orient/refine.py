"""Refine orientations by projection matching against their own reconstruction.

After the recovery from distances and the common-line frame (:mod:`tomolens.orient.frame`),
:func:`refine_orientations` runs projection matching, the classical refinement of single-particle
analysis: reconstruct from the current orientations, then score candidate orientations by the
normalised correlation of each image's Fourier transform with the map's central slice within a
resolution limit (:mod:`tomolens.orient.matching`).  *Global* passes try a grid over all of SO(3)
(with a point group, over its asymmetric unit) and move an orientation only when the grid's best beats it (this brings back orientations too far
off for small steps); *local* passes move each orientation to the best of 27 small rotations
around it (a 3×3×3 grid of rotation vectors of step ``δ``; it stays unless another scores strictly
higher).  δ shrinks and the resolution limit rises over the passes (:data:`REFINE_SCHEDULE`).

Every reconstruction is made from two half sets (even and odd images) (matched each against its
own map with ``gold_standard``); the half-set FSC is the refinement's own criterion, and the
refined orientations are returned only if they score at least as well as the start.  With a
point group (:mod:`tomolens.orient.symmetry`) the group's axes are found on each reconstruction,
the orientations are turned into the group's canonical frame (RELION's: n-fold axis along z) and
the half maps are averaged over the group.

Images are compared without their mean (the zero frequency and the lowest ring are left
out), and at least :data:`~tomolens.orient.matching.MIN_RADIUS` Fourier pixels are always compared.

In-plane shifts are searched only when asked (``max_shift_px``; by default the projections are
assumed centred, as in the paper's benchmark); no CTF is modelled.

``fix_frame`` and ``global_grid`` are importable from here as before.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress, relay
from tomolens.orient.files import check_stack
from tomolens.orient.frame import fix_frame
from tomolens.orient.matching import (
    LOW_CUT,
    MIN_RADIUS,
    fourier_radius,
    global_pass,
    local_pass,
    shift_pass,
    undo_shifts,
    zero_mean,
)
from tomolens.orient.project import centred_fft2, fourier_plane, padded_size
from tomolens.orient.rotations import (
    canonical,
    centre_first,
    global_grid,
    matrices,
    rotation_grid,
)
from tomolens.orient.symmetry import (
    SYMMETRY_THRESHOLD,
    Symmetry,
    _rotate_volume,
    as_symmetry,
    asymmetric_unit_grid,
    find_symmetry_frame,
    symmetrise_volume,
)

__all__ = ["REFINE_SCHEDULE", "fix_frame", "global_grid", "refine_orientations"]

log = logging.getLogger(__name__)

#: Projection-matching passes: (mode, step in degrees, resolution limit in Å, passes); see
#: :func:`refine_orientations`.
REFINE_SCHEDULE: tuple[tuple[str, float, float, int], ...] = (
    ("global", 10.0, 20.0, 1),
    ("local", 6.0, 20.0, 2),
    ("global", 10.0, 15.0, 1),
    ("local", 3.0, 15.0, 2),
    ("local", 1.5, 12.0, 1),
    ("local", 0.75, 10.0, 1),
)


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
        SO(3); with a symmetry only its asymmetric unit,
        :func:`tomolens.orient.symmetry.asymmetric_unit_grid`, about 1/order of the points) when
        that beats it, which brings back orientations too far off for local steps.
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

    images = zero_mean(check_stack(images, "the projections"))
    n_img, n, _ = images.shape
    mats = matrices(quats)
    if len(mats) != n_img:
        raise ValueError(f"{n_img} images but {len(mats)} orientations; give one orientation per image.")
    passes = [(mode, step, res) for mode, step, res, count in schedule for _ in range(int(count))]
    if any(mode not in ("local", "global") for mode, _, _ in passes):
        raise ValueError(f"Refinement passes are 'local' or 'global'; got {[p[0] for p in passes]}.")
    m = padded_size(n, pad_factor)
    radii = [fourier_radius(m, pixel_size_A, res) for _, _, res in passes]
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
        label = (
            "projection matching: checking the result"
            if last
            else f"projection matching: pass {p + 1} of {len(passes)}"
        )
        halves, score, mats = yield from _half_set_volume(
            images,
            mats,
            shifts,
            pixel_size_A,
            pad_factor,
            sym,
            p == 0,
            frame_info,
            finest_A,
            lambda s, p=p, label=label: Progress(
                1000 * p + 300 * s.done // max(s.total, 1), steps, f"{label}, reconstructing"
            ),
        )
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
        ft = undo_shifts(spectra[:, sel], plane, shifts, m)
        mats = mats.copy()
        found = np.zeros_like(shifts)
        moved = 0
        # gold standard: each half against its own map; otherwise every image against the mean of the two
        groups = (
            list(zip((slice(0, None, 2), slice(1, None, 2)), halves))
            if gold_standard
            else [(slice(None), 0.5 * (halves[0] + halves[1]))]
        )
        for h, (rows, volume) in enumerate(groups):
            spectrum = centred_fft3(volume, pad_factor)
            spec = torch.from_numpy(np.stack([spectrum.real, spectrum.imag])[None])
            match = (
                global_pass(ft[rows], mats[rows], spec, plane, asymmetric_unit_grid(step, sym), 5 * batch)
                if mode == "global"
                else local_pass(ft[rows], mats[rows], spec, plane, rotation_grid(np.radians(step)), batch)
            )
            share = 600 // len(groups)
            mats[rows], moved_h = yield from relay(
                match,
                lambda s, p=p, h=h, label=label, mode=mode, share=share: Progress(
                    1000 * p + 300 + share * h + share * s.done // max(s.total, 1),
                    steps,
                    f"{label}, {mode} ({s.done}/{s.total})",
                ),
            )
            moved += moved_h
            if max_shift_px > 0:
                reach, spacing = (2.0, 1.0) if 2 * p < len(passes) else (1.0, 0.5)
                grid = np.arange(-reach, reach + spacing / 2, spacing)
                offsets = centre_first(np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1).reshape(-1, 2))
                found[rows] = yield from relay(
                    shift_pass(ft[rows], mats[rows], spec, plane, offsets, m, batch),
                    lambda s, p=p, label=label: Progress(
                        1000 * p + 900, steps, f"{label}, shifts ({s.done}/{s.total})"
                    ),
                )
        resolution = m * pixel_size_A / radius
        history.append(
            {"mode": mode, "step_deg": step, "resolution_A": resolution, "moved": moved, "half_set_score_before": score}
        )
        if max_shift_px > 0:
            shifts = np.clip(shifts + found, -max_shift_px, max_shift_px)
            history[-1]["mean_shift_px"] = float(np.mean(np.hypot(shifts[:, 0], shifts[:, 1])))
        log.info(
            "refinement pass %d (%s): step %.2f°, %.1f Å, %d of %d moved, half-set score %.4f",
            p + 1,
            mode,
            step,
            resolution,
            moved,
            n_img,
            score,
        )
        yield Progress(1000 * (p + 1), steps, f"{label} ({moved} moved)")
    score, mats, shifts, kept = best
    kept_start = kept == 0 and len(passes) > 0
    if kept_start:
        log.warning(
            "refinement kept its starting orientations: the refined ones scored lower by half-set FSC "
            "(%.4f against %.4f)",
            history[-1]["half_set_score_after"],
            score,
        )
    if frame_info is not None:
        frame_info["half_set_score"] = score
        frame_info["kept_start"] = kept_start
    return canonical(Rotation.from_matrix(mats).as_quat()), shifts, history


def _half_set_volume(
    images, mats, shifts, pixel_size_A, pad_factor, sym, find_frame, frame_info, resolution_A, transform
):
    """Reconstruct the even and odd halves (job): the two maps, their score, and the orientations.

    The score is the mean FSC of the halves between ``2 · resolution_A`` and ``resolution_A``.
    With a symmetry, the group's axes are found on the mean map, both halves are turned into the
    group's canonical frame (orientations ``A F``) and averaged over the group; the first call
    (``find_frame``) records the symmetry score.
    """
    from tomolens.orient.reconstruct import (
        fourier_shell_correlation,
        reconstruct_half_sets,
    )

    quats_now = canonical(Rotation.from_matrix(mats).as_quat())
    half_a, half_b = yield from relay(
        reconstruct_half_sets(images, quats_now, shifts if np.any(shifts) else None, pad_factor=pad_factor), transform
    )
    if sym.name != "C1":
        # the axes are searched on every pass: the first maps are blurred, so the first frame is rough
        found = find_symmetry_frame(0.5 * (half_a + half_b), sym.name)
        mats = mats @ found.frame
        half_a, half_b = (_rotate_volume(h, found.frame) for h in (half_a, half_b))
        if find_frame:
            if frame_info is not None:
                frame_info.update({"symmetry": sym.name, "symmetry_score": found.score})
            if found.score < SYMMETRY_THRESHOLD:
                log.warning(
                    "the reconstruction scores %.2f for %s symmetry (a symmetric map scores above %.2f): "
                    "the particle may not have it",
                    found.score,
                    sym.name,
                    SYMMETRY_THRESHOLD,
                )
        canonical_sym = Symmetry(sym.name)
        half_a, half_b = symmetrise_volume(half_a, canonical_sym), symmetrise_volume(half_b, canonical_sym)
    fsc = fourier_shell_correlation(half_a, half_b, pixel_size_A)
    # the upper half of the compared band: where better orientations show (low shells correlate anyway)
    band = (fsc.frequency_per_A <= 1.0 / resolution_A) & (fsc.frequency_per_A >= 0.5 / resolution_A)
    score = float(np.mean(fsc.fsc[band])) if np.any(band) else float(fsc.fsc[-1])
    return (half_a, half_b), score, mats
