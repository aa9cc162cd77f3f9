"""Image formation steps of the domain-randomised simulator (beyond :mod:`.imaging`).

- :func:`coloured_noise`: Gaussian noise with a 2D power spectrum ∝ |f|^-β per image
  (β = 0 white; β > 0 more low-frequency power, like detector/ice noise).
- :func:`ice_attenuation`: an ice-thickness gradient across the field; thicker ice passes
  fewer electrons: signal × a, noise × 1/√a, with a = exp(-g·ramp / cos θ).
- :func:`phase_flip`: CTF correction by phase flipping (multiply by the CTF's sign).
- :func:`misalign`: rotate the specimen about z by the tilt-axis error and each image back
  by it (a reconstruction that assumes the axis on y), plus per-image shift jitter.
- :func:`bin_images` / :func:`bin_volume` / :func:`bin_labels`: block averaging (and a
  block mode for labels).
- Reconstructions: ``"wbp"`` weighted back-projection (:class:`.imaging.TiltProjector`);
  ``"sirt_like"`` a WBP whose ramp is replaced by the filter that reproduces k SIRT
  iterations, ``|f| (1 - (1 - f0/|f|)^k)`` with f0 = 1/n (Zeng 2012; IMOD's
  "fake SIRT"): ramp at low frequencies, flat above about k/n; ``"sirt"`` k true SIRT
  iterations (:func:`sirt`).
- :func:`butterworth_lowpass`: an order-4 Butterworth low-pass on the volume.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np
from scipy import ndimage

from tomolens.jobs import Progress
from tomolens.simulate.imaging import CtfParams, TiltProjector

RECONSTRUCTIONS = ("wbp", "sirt_like", "sirt")


def coloured_noise(shape, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise (n, y, x), float32, power ∝ |f|^-``exponent`` in each image."""
    white = rng.standard_normal(shape, dtype=np.float32)
    if exponent == 0:
        return white
    ny, nx = shape[-2:]
    f = np.sqrt(np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.rfftfreq(nx)[None, :] ** 2)
    f[0, 0] = 1.0
    amp = np.maximum(f, 1.0 / max(ny, nx)) ** (-exponent / 2)
    amp[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(white) * amp.astype(np.float32), s=(ny, nx)).astype(np.float32)
    out /= np.float32(max(float(out.std()), 1e-12))
    return out


def ice_attenuation(shape_yx, angles_deg: np.ndarray, gradient: float, direction_rad: float) -> np.ndarray:
    """Fraction of electrons passed (n_tilts, y, x), float32: exp(-gradient · ramp / cos θ),
    ramp ∈ [-1, 1] along ``direction_rad`` in the image, normalised to mean 1 per image."""
    ny, nx = shape_yx
    y, x = np.mgrid[:ny, :nx].astype(np.float32)
    ramp = (
        np.sin(direction_rad) * (y - (ny - 1) / 2) / max(ny, 1)
        + np.cos(direction_rad) * (x - (nx - 1) / 2) / max(nx, 1)
    ) * 2
    cos = np.cos(np.deg2rad(np.asarray(angles_deg, float)))[:, None, None]
    a = np.exp(-gradient * ramp[None] / cos).astype(np.float32)
    return a / a.mean(axis=(1, 2), keepdims=True)


def add_dose_noise(
    signal: np.ndarray,
    snr: float,
    exponent: float,
    rng: np.random.Generator,
    attenuation: np.ndarray | None = None,
    noise_scale: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Attenuate ``signal`` (n, y, x) and add coloured noise so that var(signal)/var(noise)
    = ``snr`` before attenuation, times ``noise_scale`` in standard deviation.

    Returns the noisy images (float32) and the SNR measured on them.
    """
    var_s = float(np.var(signal, dtype=np.float64))
    if var_s == 0:
        raise ValueError("The scene is empty (no signal), so an SNR cannot be set.")
    noise = coloured_noise(signal.shape, exponent, rng) * np.float32(np.sqrt(var_s / snr) * noise_scale)
    out = signal.astype(np.float32, copy=True)
    if attenuation is not None:
        out *= attenuation
        noise /= np.sqrt(attenuation)
    measured = float(np.var(out, dtype=np.float64)) / float(np.var(noise, dtype=np.float64))
    out += noise
    return out, measured


def phase_flip(images: np.ndarray, pixel_A: float, ctf: CtfParams) -> np.ndarray:
    """CTF correction by phase flipping each image (n, y, x); returns float32."""
    ny, nx = images.shape[-2:]
    k = np.sqrt(np.fft.fftfreq(ny, d=pixel_A)[:, None] ** 2 + np.fft.rfftfreq(nx, d=pixel_A)[None, :] ** 2)
    sign = np.sign(ctf.transfer(k)).astype(np.float32)
    return np.fft.irfft2(np.fft.rfft2(images) * sign, s=(ny, nx)).astype(np.float32)


def misalign(
    volume: np.ndarray, projector: TiltProjector, axis_error_deg: float, shift_sigma_px: float, rng: np.random.Generator
) -> Generator[Progress, None, np.ndarray]:
    """Project ``volume`` about an axis rotated by ``axis_error_deg`` from y, as seen by a
    reconstruction that assumes y, with per-image random shifts (σ pixels) (job).

    Images = rot2d(+δ)[P_θ(rot_z(-δ) V)], shifted; returns (n_tilts, y, x) float32.
    """
    vol = volume
    if axis_error_deg:
        vol = ndimage.rotate(volume, -axis_error_deg, axes=(1, 2), reshape=False, order=1).astype(np.float32)
    images = yield from projector.project(vol)
    if axis_error_deg:
        images = ndimage.rotate(images, axis_error_deg, axes=(1, 2), reshape=False, order=1).astype(np.float32)
    if shift_sigma_px > 0:
        for i in range(len(images)):
            images[i] = ndimage.shift(images[i], rng.normal(0, shift_sigma_px, 2), order=1, mode="nearest")
    return images


def _blocks(arr: np.ndarray, factor: int, axes: int) -> np.ndarray:
    lead = arr.shape[: arr.ndim - axes]
    shape = list(lead)
    for n in arr.shape[arr.ndim - axes :]:
        shape += [n // factor, factor]
    return arr.reshape(shape)


def bin_images(images: np.ndarray, factor: int) -> np.ndarray:
    """Block-average the last two axes by ``factor`` (sizes must be multiples)."""
    if factor == 1:
        return images
    return _blocks(images, factor, 2).mean(axis=(-3, -1), dtype=np.float32)


def bin_volume(volume: np.ndarray, factor: int) -> np.ndarray:
    """Block-average a volume (z, y, x) by ``factor`` in every axis."""
    if factor == 1:
        return volume
    return _blocks(volume, factor, 3).mean(axis=(1, 3, 5), dtype=np.float32)


def bin_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Block mode of a label volume (z, y, x) by ``factor``; ties go to a non-zero label."""
    if factor == 1:
        return labels
    b = _blocks(labels, factor, 3).transpose(0, 2, 4, 1, 3, 5)
    out_shape = b.shape[:3]
    rows = np.sort(b.reshape(-1, factor**3), axis=1)
    k = rows.shape[1]
    new_run = np.ones(rows.shape, bool)
    new_run[:, 1:] = rows[:, 1:] != rows[:, :-1]
    start = np.maximum.accumulate(np.where(new_run, np.arange(k), 0), axis=1)
    score = (np.arange(k) - start + 1) * 2 + (rows != 0)
    return rows[np.arange(len(rows)), np.argmax(score, axis=1)].reshape(out_shape)


def sirt_like_weights(n_pad: int, n: int, iterations: int) -> np.ndarray:
    """rfft weights |f| (1 - (1 - f0/|f|)^k), f0 = 1/n: the SIRT-like filter (see module docstring)."""
    f = np.fft.rfftfreq(n_pad)
    f0 = 1.0 / n
    w = np.where(f >= f0, f * (1 - np.clip(1 - f0 / np.maximum(f, f0), 0, 1) ** iterations), f)
    w[0] = 0.25 / n_pad
    return w


def reconstruct(
    images: np.ndarray,
    projector: TiltProjector,
    method: str,
    iterations: int,
) -> Generator[Progress, None, np.ndarray]:
    """Reconstruct (nz, ny, nx) float32 from tilt images (n, ny, nx) by ``method`` (job)."""
    if method == "wbp":
        return (yield from projector.weighted_backproject(images))
    if method == "sirt_like":
        nt, ny, nd = images.shape
        n_pad = int(2 ** np.ceil(np.log2(2 * nd)))
        w = sirt_like_weights(n_pad, nd, iterations).astype(np.float32)
        filt = np.fft.irfft(np.fft.rfft(images, n=n_pad, axis=-1) * w, n=n_pad, axis=-1)[..., :nd]
        return (yield from _backproject(projector, filt.astype(np.float32)))
    if method == "sirt":
        return (yield from sirt(images, projector, iterations))
    raise ValueError(f"reconstruction must be one of {RECONSTRUCTIONS}, got {method!r}.")


def _backproject(projector: TiltProjector, images: np.ndarray) -> Generator[Progress, None, np.ndarray]:
    nt, ny, nd = images.shape
    flat = np.ascontiguousarray(images.transpose(0, 2, 1)).reshape(nt * nd, ny)
    yield Progress(0, 1, "back-projection")
    out = (projector.matrix_t @ flat).reshape(projector.nz, projector.nx, ny).transpose(0, 2, 1)
    yield Progress(1, 1, "back-projection")
    return np.ascontiguousarray(out, dtype=np.float32)


def sirt(
    images: np.ndarray,
    projector: TiltProjector,
    iterations: int,
) -> Generator[Progress, None, np.ndarray]:
    """``iterations`` SIRT updates x += C Aᵀ R (b - A x) from x = 0, with R and C the inverse
    row and column sums of the projector (job); returns (nz, ny, nx) float32."""
    nt, ny, nd = images.shape
    a, at = projector.matrix, projector.matrix_t
    b = np.ascontiguousarray(images.transpose(0, 2, 1)).reshape(nt * nd, ny)
    row = np.asarray(a.sum(axis=1)).ravel()
    col = np.asarray(a.sum(axis=0)).ravel()
    r = np.where(row > 0, 1.0 / np.maximum(row, 1e-12), 0).astype(np.float32)[:, None]
    c = np.where(col > 0, 1.0 / np.maximum(col, 1e-12), 0).astype(np.float32)[:, None]
    x = np.zeros((a.shape[1], ny), np.float32)
    for k in range(iterations):
        x += c * (at @ (r * (b - a @ x)))
        yield Progress(k + 1, iterations, f"SIRT iteration {k + 1}/{iterations}")
    out = x.reshape(projector.nz, projector.nx, ny).transpose(0, 2, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def butterworth_lowpass(volume: np.ndarray, cutoff_fraction: float, order: int = 4) -> np.ndarray:
    """Low-pass a volume with cutoff ``cutoff_fraction`` of Nyquist (1 = no filter); float32."""
    if cutoff_fraction >= 1:
        return volume
    shape = volume.shape
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1])[None, :, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    f = np.sqrt(kz**2 + ky**2 + kx**2) / (0.5 * cutoff_fraction)
    h = (1.0 / (1.0 + f ** (2 * order))).astype(np.float32)
    return np.fft.irfftn(np.fft.rfftn(volume) * h, s=shape, axes=(0, 1, 2)).astype(np.float32)
