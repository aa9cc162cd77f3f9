"""After recovery: the frame from common lines, and projection-matching refinement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import run_job
from tomolens.orient.project import simulate_projections
from tomolens.orient.refine import fix_frame, refine_orientations
from tomolens.orient.rotations import align_orientations, canonical, geodesic_distance, matrices


def blob_map(n: int = 32, seed: int = 1) -> np.ndarray:
    """An asymmetric map: Gaussian blobs of different sizes and weights."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(8):
        vol[tuple(rng.integers(n // 4, 3 * n // 4, 3))] += rng.uniform(0.5, 2.0)
    return ndimage.gaussian_filter(vol, 1.5) * 10


@pytest.fixture(scope="module")
def projections():
    return run_job(simulate_projections(blob_map(), 5.0, 300, seed=7, snr=1.0))


def errors_deg(quats, truth):
    aligned, _ = align_orientations(quats, truth)
    return np.degrees(geodesic_distance(aligned, canonical(truth)))


def right_factor_error_deg(quats, truth):
    """Mean error after the best *right* factor only (a global rotation of the map)."""
    a, t = matrices(quats), matrices(truth)
    u, _, vt = np.linalg.svd(np.einsum("nji,njk->ik", a, t))
    g = u @ vt
    if np.linalg.det(g) < 0:  # the mirrored hand: no right factor reaches it
        return 180.0
    cos = (np.einsum("nij,nij->n", a @ g, t) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


@pytest.mark.parametrize("transposed", [False, True])
def test_common_lines_undo_a_left_factor_and_transposition(projections, transposed):
    truth = projections.quats
    left = Rotation.from_euler("zyz", [40, 70, -25], degrees=True).as_matrix()
    mats = matrices(truth)
    scrambled = left[None] @ (np.transpose(mats, (0, 2, 1)) if transposed else mats)
    quats = Rotation.from_matrix(scrambled).as_quat()
    # distances cannot see the scrambling; only a right factor is left after the common lines
    assert right_factor_error_deg(quats, truth) > 30
    fixed, info = run_job(fix_frame(projections.images, quats, 5.0, resolution_A=15.0, n_pairs=800,
                                    n_directions=300))
    assert info["transposed"] == transposed
    assert info["score"] > info["score_before"] + 0.05
    # up to a global map rotation (or the undeterminable hand, an in-plane half turn away)
    hand = Rotation.from_euler("z", 180, degrees=True).as_matrix()
    mirrored = Rotation.from_matrix(hand[None] @ matrices(fixed)).as_quat()
    assert min(right_factor_error_deg(fixed, truth), right_factor_error_deg(mirrored, truth)) < 3.0


def test_projection_matching_reduces_the_error(projections):
    truth = projections.quats
    rng = np.random.default_rng(3)
    kicks = Rotation.from_rotvec(rng.normal(size=(len(truth), 3)) * np.radians(5.0))
    start = (kicks * Rotation.from_quat(truth)).as_quat()
    before = errors_deg(start, truth)
    progress = []
    refined, history = run_job(refine_orientations(projections.images, start, 5.0,
                                                   schedule=(("local", 4.0, 15.0, 2), ("local", 2.0, 12.0, 2), ("local", 1.0, 12.0, 1))),
                               on_progress=progress.append)
    after = errors_deg(refined, truth)
    assert before.mean() > 6.0
    assert after.mean() < 0.5 * before.mean() and np.median(after) < 4.0
    assert [h["step_deg"] for h in history] == [4.0, 4.0, 2.0, 2.0, 1.0] and history[0]["moved"] > 100
    assert progress[-1].done == progress[-1].total == 5
    # a schedule finer than the pixels allow is clamped to 2.5 pixels, not refused
    _, clamped = run_job(refine_orientations(projections.images, refined, 5.0, schedule=(("local", 1.0, 2.0, 1),)))
    assert clamped[0]["resolution_A"] == pytest.approx(12.5)


def test_global_pass_brings_back_orientations_far_off(projections):
    from tomolens.orient.refine import global_grid

    grid = global_grid(15.0)
    # the grid covers SO(3): every random rotation has a grid point within about the step
    probe = Rotation.random(200, random_state=np.random.default_rng(0)).as_quat()
    nearest = np.degrees(geodesic_distance(probe[:, None], Rotation.from_matrix(grid).as_quat()[None]).min(axis=1))
    assert nearest.max() < 15.0
    truth = projections.quats
    rng = np.random.default_rng(5)
    start = (Rotation.from_rotvec(rng.normal(size=(len(truth), 3)) * np.radians(2.0)) * Rotation.from_quat(truth)).as_quat()
    lost = rng.choice(len(truth), 60, replace=False)  # a fifth of them anywhere at all
    start[lost] = Rotation.random(60, random_state=rng).as_quat()
    schedule = (("global", 15.0, 15.0, 1), ("local", 6.0, 15.0, 2), ("local", 3.0, 12.0, 1))
    local_only, _ = run_job(refine_orientations(projections.images, start, 5.0, schedule=schedule[1:]))
    refined, history = run_job(refine_orientations(projections.images, start, 5.0, schedule=schedule))
    assert history[0]["mode"] == "global" and history[0]["moved"] >= 40
    assert np.median(errors_deg(refined, truth)[lost]) < 6.0 < np.median(errors_deg(local_only, truth)[lost])
    with pytest.raises(ValueError, match="'local' or 'global'"):
        run_job(refine_orientations(projections.images, start, 5.0, schedule=(("everywhere", 5.0, 15.0, 1),)))
