"""Orientation recovery core: rotations, alignment, simulator, recovery from exact distances."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import run_job
from tomolens.orient.files import check_stack, read_angles_star, read_projection_stack, write_projection_set
from tomolens.orient.project import pad_to_cube, project_map, simulate_projections
from tomolens.orient.recover import ExactDistances, recover_orientations, spectral_orientations
from tomolens.orient.rotations import (
    MIRROR_FLIP,
    align_orientations,
    geodesic_distance,
    matrices,
    orientation_errors_deg,
    quats_from_relion,
    random_orientations,
    relion_from_quats,
)


def blob_map(n: int = 24, seed: int = 0) -> np.ndarray:
    """An asymmetric test map: a few Gaussian blobs of different sizes."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(6):
        pos = rng.integers(n // 4, 3 * n // 4, 3)
        vol[tuple(pos)] += rng.uniform(0.5, 2.0)
    return ndimage.gaussian_filter(vol, 1.5) * 10


def test_relion_matrix_matches_relion_formula():
    rot, tilt, psi = np.radians([30.0, 50.0, 70.0])
    ca, sa, cb, sb, cg, sg = np.cos(rot), np.sin(rot), np.cos(tilt), np.sin(tilt), np.cos(psi), np.sin(psi)
    expected = np.array(
        [
            [cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
            [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
            [sb * ca, sb * sa, cb],
        ]
    )
    q = quats_from_relion([30.0, 50.0, 70.0])
    np.testing.assert_allclose(matrices(q)[0], expected, atol=1e-12)
    np.testing.assert_allclose(relion_from_quats(q)[0], [30.0, 50.0, 70.0], atol=1e-9)


def test_half_sphere_sampling_and_distance():
    q = random_orientations(2000, seed=3)
    assert np.all(matrices(q)[:, 2, 2] >= 0)  # viewing directions on one hemisphere
    d = geodesic_distance(q[:, None], q[None, :200])
    assert d.min() >= 0 and d.max() <= np.pi + 1e-12
    flipped = Rotation.from_matrix(MIRROR_FLIP @ matrices(q[:1])).as_quat()
    assert geodesic_distance(q[:1], flipped)[0] == pytest.approx(np.pi)


def test_mirror_projection_is_in_plane_flip():
    vol = blob_map()
    q = random_orientations(1, seed=5)
    q_mirror = Rotation.from_matrix(MIRROR_FLIP @ matrices(q)).as_quat()
    images = run_job(project_map(vol, np.concatenate([q, q_mirror])))
    n = vol.shape[0]
    flipped = np.roll(images[0][::-1], 1, axis=0) if n % 2 == 0 else images[0][::-1]
    np.testing.assert_allclose(images[1][1:], flipped[1:], atol=1e-2 * np.abs(images[0]).max())


@pytest.mark.parametrize("conjugate", [False, True])
def test_alignment_removes_global_rotation_and_reflection(conjugate):
    truth = random_orientations(300, seed=1)
    rot = Rotation.from_quat(truth)
    if conjugate:
        rot = rot.inv()
    left, right = Rotation.random(random_state=7), Rotation.random(random_state=8)
    moved = (left * rot * right).as_quat()
    assert np.degrees(geodesic_distance(moved, truth)).mean() > 20
    aligned, transform = align_orientations(moved, truth)
    np.testing.assert_allclose(transform @ transform.T, np.eye(4), atol=1e-9)
    assert orientation_errors_deg(moved, truth).max() < 1e-3


def test_projection_matches_real_space_rotation():
    vol = blob_map(24)
    q = random_orientations(2, seed=11)
    images = run_job(project_map(vol, q))
    n = vol.shape[0]
    c = n // 2
    g = np.arange(n) - c
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    xyz = np.stack([x.ravel(), y.ravel(), z.ravel()])
    for k, a in enumerate(matrices(q)):
        src = a.T @ xyz
        rotated = ndimage.map_coordinates(vol, [src[2] + c, src[1] + c, src[0] + c], order=1).reshape(n, n, n)
        corr = np.corrcoef(images[k].ravel(), rotated.sum(0).ravel())[0, 1]
        assert corr > 0.995
    identity = run_job(project_map(vol, quats_from_relion([0.0, 0.0, 0.0])))[0]
    np.testing.assert_allclose(identity, vol.sum(0), atol=1e-4 * vol.sum(0).max())


def test_simulation_noise_variance_and_files(tmp_path):
    vol = blob_map(20)[:, :, 2:]  # non-cubic map is padded to a cube
    assert pad_to_cube(vol).shape == (20, 20, 20)
    pset = run_job(simulate_projections(vol, 5.0, 40, seed=2, noise_variance=4.0, max_shift_A=5.0))
    clean = run_job(simulate_projections(vol, 5.0, 40, seed=2, max_shift_A=5.0))
    np.testing.assert_allclose(clean.quats, pset.quats)
    assert np.var(pset.images - clean.images) == pytest.approx(4.0, rel=0.05)
    stack, star = tmp_path / "p.mrcs", tmp_path / "p.star"
    write_projection_set(stack, star, pset)
    images, pixel = read_projection_stack(stack)
    assert images.shape == (40, 20, 20) and pixel == pytest.approx(5.0)
    quats, shifts = read_angles_star(star)
    assert np.degrees(geodesic_distance(quats, pset.quats)).max() < 1e-3
    np.testing.assert_allclose(shifts, pset.shifts_A, atol=1e-4)
    # a shift is the content's (the particle moves by +shift); RELION's origin brings it back: −shift in the file
    import starfile

    table = starfile.read(star)["particles"]
    np.testing.assert_allclose(table["rlnOriginXAngst"].to_numpy(), -pset.shifts_A[:, 0], atol=1e-4)
    one = np.array([[0.0, 0.0, 0.0, 1.0]])
    centred = run_job(project_map(vol, one))[0]
    moved = run_job(project_map(vol, one, shifts_px=np.array([[2.0, 0.0]])))[0]
    x_of = lambda img: (img.sum(axis=0) * np.arange(img.shape[1])).sum() / img.sum()  # noqa: E731
    assert x_of(moved) - x_of(centred) == pytest.approx(2.0, abs=0.2)


def test_noise_as_an_snr_is_relative_to_the_map_and_the_absolute_variance_stays_an_option():
    vol = blob_map(20)
    clean = run_job(simulate_projections(vol, 5.0, 60, seed=3))
    signal = np.mean(np.var(clean.images, axis=(1, 2)))
    for scale in (1.0, 100.0):  # the same SNR on a map in other density units
        noisy = run_job(simulate_projections(scale * vol, 5.0, 60, seed=3, snr=0.5))
        noise = noisy.images - scale * clean.images
        assert noisy.info["snr"] == pytest.approx(0.5)
        assert scale**2 * signal / np.var(noise) == pytest.approx(0.5, rel=0.05)
        assert noisy.noise_variance == pytest.approx(scale**2 * signal / 0.5, rel=1e-3)
    absolute = run_job(simulate_projections(100.0 * vol, 5.0, 60, seed=3, noise_variance=16.0))
    assert absolute.noise_variance == 16.0 and absolute.info["snr"] == pytest.approx(1e4 * signal / 16.0, rel=1e-3)
    with pytest.raises(ValueError, match="either noise_variance or snr"):
        run_job(simulate_projections(vol, 5.0, 60, snr=0.5, noise_variance=16.0))
    with pytest.raises(ValueError, match="SNR must be positive"):
        run_job(simulate_projections(vol, 5.0, 60, snr=0.0))


def test_bad_input_messages(tmp_path):
    with pytest.raises(ValueError, match="3D map"):
        run_job(simulate_projections(np.zeros((10, 10)), 1.0, 5))
    with pytest.raises(ValueError, match="stack of 2D projections"):
        check_stack(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="not square"):
        check_stack(np.zeros((20, 16, 12)))
    with pytest.raises(ValueError, match="at least"):
        check_stack(np.zeros((3, 16, 16)))
    with pytest.raises(ValueError, match="at least"):
        run_job(recover_orientations(ExactDistances(random_orientations(4)), steps=5))
    from tomolens.io import write_mrc

    write_mrc(tmp_path / "map.mrc", blob_map(16), 2.0)
    with pytest.raises(ValueError, match="not a stack of projections"):
        read_projection_stack(tmp_path / "map.mrc")


def test_spectral_start_is_exact_for_exact_distances():
    truth = random_orientations(60, seed=4)
    dist = geodesic_distance(truth[:, None], truth[None])
    assert orientation_errors_deg(spectral_orientations(dist), truth).max() < 1e-3


@pytest.mark.parametrize("n_anchors", [40, 150])
def test_recovery_from_exact_distances_within_one_degree(n_anchors):
    import torch

    torch.set_num_threads(1)
    truth = random_orientations(150, seed=9)
    result = run_job(
        recover_orientations(
            ExactDistances(truth), steps=150, pairs_per_step=3000, learning_rate=0.005, n_anchors=n_anchors, seed=1
        )
    )
    errors = orientation_errors_deg(result.quats, truth)
    assert errors.mean() < 1.0 and errors.max() < 3.0
    assert result.loss_history[-1] < 1e-3


def test_reconstruction_from_true_orientations_reaches_high_fsc():
    from tomolens.orient.reconstruct import fourier_shell_correlation, reconstruct_fourier

    vol = blob_map(24)
    pset = run_job(simulate_projections(vol, 4.0, 400, seed=6))
    recon = run_job(reconstruct_fourier(pset.images, pset.quats))
    fsc = fourier_shell_correlation(recon, vol, 4.0)
    assert fsc.fsc[: int(0.8 * len(fsc.fsc))].min() > 0.9
    assert fsc.resolution_0143_A == pytest.approx(1 / fsc.frequency_per_A[-1])  # never drops: the last shell
    wrong = run_job(reconstruct_fourier(pset.images, random_orientations(400, seed=99)))
    assert fourier_shell_correlation(wrong, vol, 4.0).resolution_05_A > 2 * fsc.resolution_05_A
    with pytest.raises(ValueError, match="one orientation per image"):
        run_job(reconstruct_fourier(pset.images, pset.quats[:10]))


def test_distance_network_trains_and_round_trips(tmp_path):
    import torch

    torch.set_num_threads(1)
    from tomolens.models.card import load_model, save_model
    from tomolens.orient.network import TrainingMap, embed_images, train_distance_model

    losses = []
    job = train_distance_model(
        [TrainingMap(blob_map(24), 8.0, "blob")],
        pixel_size_A=8.0,
        input_size=24,
        projections_per_map=120,
        steps=60,
        batch_size=24,
        learning_rate=3e-3,
        seed=1,
    )
    model, card = run_job(job, on_progress=lambda p: losses.append(p.info["loss"]) if p.info else None)
    assert losses[-1] < losses[0]  # the distance regression learns
    weights, _ = save_model(model, card, tmp_path / "orient_test.pt")
    loaded, card2 = load_model(weights, expected_task="orient")
    images = run_job(simulate_projections(blob_map(24), 8.0, 12, seed=5)).images
    e1 = run_job(embed_images(model, card, images, 8.0))
    e2 = run_job(embed_images(loaded, card2, images, 8.0))
    assert e1.shape == (12, 32)
    np.testing.assert_allclose(e1, e2, atol=1e-5)
