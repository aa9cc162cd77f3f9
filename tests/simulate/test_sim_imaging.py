"""Image formation: SNR, missing wedge, contrast, ground-truth centres and angles, seeds."""

import math

import numpy as np
import pytest

from tomolens.jobs import run_job
from tomolens.simulate import SimulationConfig, load_template, rotation_matrix_zyx, simulate_tomogram
from tomolens.simulate.imaging import CtfParams, fourier_filter, missing_wedge_mask
from tomolens.simulate.templates import MASK_LEVEL, rotate_density

TEMPLATES = ("l_shape", "two_subunit", "tetrahedron", "globule")


@pytest.fixture(scope="module")
def sim():
    cfg = SimulationConfig(
        shape_zyx=(32, 64, 64), templates=TEMPLATES, n_particles=18, snr=0.05, n_filaments=1, seed=11
    )
    return run_job(simulate_tomogram(cfg))


@pytest.fixture(scope="module")
def clean_sim():
    cfg = SimulationConfig(shape_zyx=(32, 64, 64), templates=TEMPLATES, n_particles=12, snr=math.inf, seed=5)
    return run_job(simulate_tomogram(cfg))


def test_measured_snr_on_projections_within_10_percent(sim):
    noise = sim.tilt_series - sim.tilt_series_clean
    snr = np.var(sim.tilt_series_clean) / np.var(noise)
    assert sim.snr_domain == "projections"
    assert snr == pytest.approx(0.05, rel=0.1)
    assert sim.measured_snr == pytest.approx(snr, rel=1e-3)
    assert sim.tilt_series.shape == (41, 64, 64)


def test_fourier_mode_snr_on_volume():
    cfg = SimulationConfig(shape_zyx=(32, 48, 48), templates=TEMPLATES, n_particles=8, snr=0.1, mode="fourier", seed=2)
    s = run_job(simulate_tomogram(cfg))
    assert s.snr_domain == "volume" and s.measured_snr == pytest.approx(0.1, rel=0.1)


def test_missing_wedge_in_fourier_transform(sim):
    power = np.abs(np.fft.rfftn(sim.tomogram)) ** 2
    kz = np.abs(np.fft.fftfreq(32))[:, None, None]
    kx = np.abs(np.fft.rfftfreq(64))[None, None, :]
    k = np.sqrt(kz**2 + kx**2)
    measured = missing_wedge_mask(sim.tomogram.shape, 60.0)
    # well inside the wedge (10° margin) versus the measured region, away from DC and Nyquist
    in_wedge = (np.abs(kz) > np.tan(np.deg2rad(70)) * kx) & (k > 0.05) & (k < 0.4)
    in_wedge = np.broadcast_to(in_wedge, power.shape)
    band = np.broadcast_to((k > 0.05) & (k < 0.4), power.shape)
    ratio = power[in_wedge].mean() / power[measured & band].mean()
    assert ratio < 0.1, ratio


def test_particles_bright_and_normalised(clean_sim):
    t = clean_sim.tomogram
    assert abs(t.mean()) < 1e-3 and t.std() == pytest.approx(1.0, rel=1e-3)
    particle = clean_sim.semantic > 0
    assert t[particle].mean() > t[~particle].mean() + 0.5


def test_ground_truth_centres_are_correlation_peaks(clean_sim):
    """Cross-correlating the tomogram with each particle's template (rotated by its angles
    and filtered with the same wedge and CTF) peaks at the listed centre (within 1 voxel)."""
    sim = clean_sim
    shape = sim.tomogram.shape
    filt = fourier_filter(shape, 10.0, 60.0, CtfParams())
    tomo_f = np.fft.rfftn(sim.tomogram)
    templates = {n: load_template(n, 10.0) for n in TEMPLATES}
    for (z, y, x), row in zip(sim.particles.coords_zyx, sim.particles.features.itertuples()):
        t = templates[row.class_name]
        c = np.round([z, y, x]).astype(int)
        ref = rotate_density(
            t.density, rotation_matrix_zyx((row.rot, row.tilt, row.psi)), centre_offset=np.array([z, y, x]) - c
        )
        full = np.zeros(shape, np.float32)
        h = (np.array(ref.shape) - 1) // 2
        idx = np.argwhere(ref > 0)
        full[tuple(((idx - h) % shape).T)] = ref[tuple(idx.T)]  # centred on voxel 0, wrapped
        cc = np.fft.irfftn(tomo_f * np.conj(np.fft.rfftn(full) * filt), s=shape, axes=(0, 1, 2))
        near = np.array([[dz, dy, dx] for dz in range(-3, 4) for dy in range(-3, 4) for dx in range(-3, 4)])
        scores = cc[tuple(((c + near) % shape).T)]
        best = near[int(np.argmax(scores))]
        assert np.abs(best).max() <= 1, (row.class_name, best)


def test_euler_angles_reproduce_orientation(clean_sim):
    """Rotating the template by the table's angles reproduces the particle's density;
    the wrong convention (not inverted) does not, for asymmetric templates."""
    sim = clean_sim
    for (z, y, x), row in zip(sim.particles.coords_zyx, sim.particles.features.itertuples()):
        t = load_template(row.class_name, 10.0)
        c = np.round([z, y, x]).astype(int)
        h = (np.array(t.density.shape) - 1) // 2
        lo, hi = c - h, c - h + t.density.shape
        if np.any(lo < 0) or np.any(hi > np.array(sim.density.shape)):
            continue
        own = sim.instances[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == row.instance_id
        dens = sim.density[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        angles = (row.rot, row.tilt, row.psi)
        right = rotate_density(t.density, rotation_matrix_zyx(angles), centre_offset=np.array([z, y, x]) - c)
        wrong = rotate_density(t.density, rotation_matrix_zyx(angles).T, centre_offset=np.array([z, y, x]) - c)
        assert np.array_equal(right >= MASK_LEVEL, own)
        assert np.allclose(right[own], dens[own], atol=0.35)  # neighbours' tails may add a little
        if row.class_name in ("l_shape", "two_subunit"):
            assert (wrong >= MASK_LEVEL)[own].mean() < 0.9


def test_same_seed_same_tomogram():
    cfg = SimulationConfig(shape_zyx=(32, 48, 48), templates=TEMPLATES, n_particles=6, snr=0.1, seed=4)
    a, b = run_job(simulate_tomogram(cfg)), run_job(simulate_tomogram(cfg))
    assert np.array_equal(a.tomogram, b.tomogram) and np.array_equal(a.instances, b.instances)
    cfg.seed = 5
    c = run_job(simulate_tomogram(cfg))
    assert not np.array_equal(a.tomogram, c.tomogram)
