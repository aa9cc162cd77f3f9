"""Imaging steps of the domain-randomised simulator: noise, CTF correction, binning, reconstructions."""

import numpy as np
import pytest

from tomolens.jobs import run_job
from tomolens.simulate.domain_imaging import (
    add_dose_noise,
    bin_images,
    bin_labels,
    butterworth_lowpass,
    coloured_noise,
    ice_attenuation,
    misalign,
    phase_flip,
    reconstruct,
    sirt_like_weights,
)
from tomolens.simulate.imaging import CtfParams, TiltProjector, apply_ctf_2d, tilt_angles


def _radial_power(images):
    p = np.abs(np.fft.rfft2(images)) ** 2
    f = np.sqrt(np.fft.fftfreq(images.shape[-2])[:, None] ** 2 + np.fft.rfftfreq(images.shape[-1])[None] ** 2)
    low, high = (f > 0.02) & (f < 0.06), (f > 0.3) & (f < 0.45)
    return p[..., low].mean() / p[..., high].mean()


def test_coloured_noise_spectrum_and_snr():
    rng = np.random.default_rng(0)
    white, red = coloured_noise((4, 128, 128), 0.0, rng), coloured_noise((4, 128, 128), 1.0, rng)
    assert white.std() == pytest.approx(1, rel=0.02) and red.std() == pytest.approx(1, rel=0.02)
    assert _radial_power(white) == pytest.approx(1, rel=0.3)
    assert _radial_power(red) > 4  # power ∝ 1/|f|: ~ 10x more at low frequency
    signal = np.zeros((4, 64, 64), np.float32)
    signal[:, 20:40, 20:40] = 1
    noisy, snr = add_dose_noise(signal, 0.1, 0.5, rng)
    assert snr == pytest.approx(0.1, rel=0.05)
    assert np.var(signal) / np.var(noisy - signal) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match="empty"):
        add_dose_noise(np.zeros((2, 8, 8), np.float32), 0.1, 0.0, rng)


def test_ice_gradient_and_phase_flip():
    att = ice_attenuation((32, 32), np.array([0.0, 60.0]), 0.5, 0.0)
    assert att.mean(axis=(1, 2)) == pytest.approx([1, 1])
    assert att[0, :, 0].mean() > att[0, :, -1].mean()  # thicker ice on the +x side passes fewer electrons
    assert np.ptp(att[1]) > np.ptp(att[0])  # longer path at high tilt
    ctf = CtfParams(defocus_um=3.0)
    img = np.zeros((1, 64, 64), np.float32)
    img[0, 32, 32] = 1
    flipped = phase_flip(apply_ctf_2d(img, 5.0, ctf), 5.0, ctf)
    # after phase flipping, all frequencies carry the sign of the object: the peak is positive and dominant
    assert flipped[0, 32, 32] == flipped.max() > 0


def test_bin_labels_is_block_mode_with_ties_to_objects():
    labels = np.zeros((4, 4, 4), np.uint32)
    labels[:2, :2, :2] = 7
    labels[0, 0, 0] = 3
    labels[2:, 2:, 2:][:1] = 5  # half of a block: a tie goes to the object
    out = bin_labels(labels, 2)
    assert out[0, 0, 0] == 7 and out[1, 1, 1] == 5 and out[0, 1, 0] == 0
    assert bin_images(np.arange(16, dtype=np.float32).reshape(1, 4, 4), 2)[0, 0, 0] == pytest.approx(2.5)


def _phantom():
    vol = np.zeros((24, 8, 48), np.float32)
    vol[8:16, :, 14:22] = 1
    vol[10:14, :, 30:40] = 1
    return vol


def test_sirt_converges_and_sirt_like_is_smoother_than_wbp():
    vol = _phantom()
    proj = TiltProjector(24, 48, tilt_angles(60, 3))
    images = run_job(proj.project(vol))
    errs = [np.linalg.norm(run_job(reconstruct(images, proj, "sirt", k)) - vol) for k in (2, 10, 30)]
    assert errs[0] > errs[1] > errs[2]
    w = sirt_like_weights(128, 48, 10)
    f = np.fft.rfftfreq(128)
    assert w[(f > 0.3)].std() < 0.05 * w[f > 0.3].mean()  # flat at high frequency
    assert w[2] < w[5] < w[10]  # ramp at low frequency
    wbp = run_job(reconstruct(images, proj, "wbp", 0))
    like = run_job(reconstruct(images, proj, "sirt_like", 10))
    hf = lambda v: np.abs(np.diff(v / v.std(), axis=2)).mean()  # noqa: E731
    assert hf(like) < hf(wbp)
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        run_job(reconstruct(images, proj, "art", 3))


def test_misalignment_and_lowpass():
    z, y, x = np.mgrid[:24, :64, :48].astype(np.float32)
    vol = np.exp(-((z - 12) ** 2 + (y - 52) ** 2 + (x - 28) ** 2) / (2 * 2.5**2)).astype(np.float32)
    proj = TiltProjector(24, 48, np.array([0.0, 50.0]))
    straight = run_job(misalign(vol, proj, 0.0, 0.0, np.random.default_rng(0)))
    assert np.allclose(straight, run_job(proj.project(vol)))
    rotated = run_job(misalign(vol, proj, 10.0, 0.0, np.random.default_rng(0)))
    diff = [np.abs(rotated[i] - straight[i]).max() / straight[i].max() for i in (0, 1)]
    # at zero tilt an axis error changes nothing (up to interpolation); tilted, the blob moves
    assert diff[0] < 0.1 and diff[1] > 3 * diff[0]
    jittered = run_job(misalign(vol, proj, 0.0, 2.0, np.random.default_rng(0)))
    assert not np.allclose(jittered[0], straight[0], atol=0.05)
    noise = np.random.default_rng(1).standard_normal((16, 32, 32)).astype(np.float32)
    assert butterworth_lowpass(noise, 1.0) is noise
    assert butterworth_lowpass(noise, 0.3).std() < 0.5 * noise.std()
