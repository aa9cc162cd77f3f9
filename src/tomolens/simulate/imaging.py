"""Image formation: tilt-series projection, CTF, noise, weighted back-projection, and the
fast 3D Fourier approximation (missing wedge + CTF as one filter).

Geometry: the tilt axis is y.  Every x-z slice of the volume is an independent 2D
parallel-beam problem with the same geometry, so the projector is one sparse matrix
(linear, pixel-driven interpolation onto the detector) built once and applied to all
y at once; back-projection is its transpose.  Tilt images are (n_tilts, y, x).

Contrast: the CTF used here is ``+(sqrt(1 - A²) sin χ + A cos χ) · exp(-B k² / 4)``,
i.e. the physical CTF with the sign flipped, which is the usual contrast inversion of
cryo-ET data: protein density comes out *bright* (positive) in the tomogram.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from tomolens.jobs import Progress

log = logging.getLogger(__name__)


def tilt_angles(range_deg: float, step_deg: float) -> np.ndarray:
    """Tilt angles in degrees from ``-range_deg`` to ``+range_deg`` in steps of ``step_deg``.

    Raises
    ------
    ValueError
        Range outside (0, 90] or a step that is not positive.
    """
    if not 0 < range_deg <= 90:
        raise ValueError(
            f"tilt_range_deg must be in (0, 90] degrees (a tilt beyond ±90° is impossible); got {range_deg}."
        )
    if not 0 < step_deg <= 2 * range_deg:
        raise ValueError(f"tilt_step_deg must be positive and at most twice the range; got {step_deg}.")
    n = int(np.floor(range_deg / step_deg + 1e-6))
    return np.arange(-n, n + 1) * float(step_deg)


def electron_wavelength_A(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    v = voltage_kv * 1e3
    return 12.2643 / np.sqrt(v * (1 + 0.978466e-6 * v))


@dataclass(frozen=True)
class CtfParams:
    """Microscope settings: defocus (µm, positive = underfocus), voltage (kV), Cs (mm),
    amplitude contrast (fraction), B-factor (Å²)."""

    defocus_um: float = 3.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    b_factor_A2: float = 0.0

    def check(self) -> None:
        if not self.voltage_kv > 0:
            raise ValueError(f"voltage_kv must be positive, got {self.voltage_kv}.")
        if not 0 <= self.amplitude_contrast <= 1:
            raise ValueError(f"amplitude_contrast must be in [0, 1], got {self.amplitude_contrast}.")
        if self.cs_mm < 0 or self.b_factor_A2 < 0:
            raise ValueError("cs_mm and b_factor_A2 must be 0 or more.")

    def transfer(self, k_inv_A: np.ndarray) -> np.ndarray:
        """Contrast-inverted CTF at spatial frequencies ``k`` (1/Å); see module docstring."""
        lam = electron_wavelength_A(self.voltage_kv)
        k2 = np.asarray(k_inv_A, dtype=np.float64) ** 2
        chi = np.pi * lam * self.defocus_um * 1e4 * k2 - 0.5 * np.pi * self.cs_mm * 1e7 * lam**3 * k2**2
        a = self.amplitude_contrast
        ctf = np.sqrt(1 - a * a) * np.sin(chi) + a * np.cos(chi)
        if self.b_factor_A2 > 0:
            ctf = ctf * np.exp(-self.b_factor_A2 * k2 / 4.0)
        return ctf


def apply_ctf_2d(images: np.ndarray, pixel_A: float, ctf: CtfParams) -> np.ndarray:
    """Filter each image of a stack (n, y, x) with the CTF; returns float32."""
    ny, nx = images.shape[-2:]
    ky = np.fft.fftfreq(ny, d=pixel_A)[:, None]
    kx = np.fft.rfftfreq(nx, d=pixel_A)[None, :]
    h = ctf.transfer(np.sqrt(ky**2 + kx**2)).astype(np.float32)
    out = np.empty(images.shape, np.float32)
    for i in range(images.shape[0]):
        out[i] = np.fft.irfft2(np.fft.rfft2(images[i]) * h, s=(ny, nx))
    return out


def _ramp(n_pad: int, cutoff: float = 0.35, falloff: float = 0.035) -> np.ndarray:
    """Radial (ramp) weighting with an IMOD-style Gaussian fall-off above ``cutoff`` (cycles/pixel)."""
    f = np.fft.rfftfreq(n_pad)
    w = np.abs(f)
    w[0] = 0.25 / n_pad  # keep a trace of the mean
    high = f > cutoff
    w[high] *= np.exp(-((f[high] - cutoff) ** 2) / (2 * falloff**2))
    return w


class TiltProjector:
    """Parallel-beam projector for volumes (nz, ny, nx) tilted about y.

    Parameters
    ----------
    nz, nx : int
        Size of each x-z slice.
    angles_deg : array
        Tilt angles in degrees.
    n_detector : int, optional
        Detector width in pixels; default ``nx`` (a real camera sees the same field).
    """

    def __init__(self, nz: int, nx: int, angles_deg: np.ndarray, n_detector: int | None = None) -> None:
        self.nz, self.nx = int(nz), int(nx)
        self.angles_deg = np.asarray(angles_deg, float)
        self.nd = int(n_detector or nx)
        nt = len(self.angles_deg)
        z, x = np.meshgrid(np.arange(nz) - (nz - 1) / 2.0, np.arange(nx) - (nx - 1) / 2.0, indexing="ij")
        z, x = z.ravel(), x.ravel()
        vox = np.arange(nz * nx, dtype=np.int64)
        rows, cols, vals = [], [], []
        for i, a in enumerate(np.deg2rad(self.angles_deg)):
            u = x * np.cos(a) - z * np.sin(a) + (self.nd - 1) / 2.0
            i0 = np.floor(u).astype(np.int64)
            w = (u - i0).astype(np.float32)
            for off, ww in ((0, 1 - w), (1, w)):
                idx = i0 + off
                ok = (idx >= 0) & (idx < self.nd)
                rows.append(i * self.nd + idx[ok])
                cols.append(vox[ok])
                vals.append(ww[ok])
        self.matrix = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nt * self.nd, nz * nx)
        )
        self.matrix_t = self.matrix.T.tocsr()

    @property
    def n_tilts(self) -> int:
        return len(self.angles_deg)

    def project(self, volume: np.ndarray, chunk: int = 64) -> Generator[Progress, None, np.ndarray]:
        """Project a volume (nz, ny, nx) to tilt images (n_tilts, ny, nd), float32 (job)."""
        nz, ny, nx = volume.shape
        out = np.empty((self.n_tilts, ny, self.nd), np.float32)
        for y0 in range(0, ny, chunk):
            y1 = min(ny, y0 + chunk)
            block = np.ascontiguousarray(volume[:, y0:y1, :].transpose(0, 2, 1)).reshape(nz * nx, y1 - y0)
            res = (self.matrix @ block).reshape(self.n_tilts, self.nd, y1 - y0)
            out[:, y0:y1, :] = res.transpose(0, 2, 1)
            yield Progress(y1, ny, "projecting tilt series")
        return out

    def weighted_backproject(self, images: np.ndarray, chunk: int = 64) -> Generator[Progress, None, np.ndarray]:
        """Weighted back-projection of tilt images (n_tilts, ny, nd) to (nz, ny, nx), float32 (job)."""
        nt, ny, nd = images.shape
        n_pad = int(2 ** np.ceil(np.log2(2 * nd)))
        ramp = _ramp(n_pad).astype(np.float32) * (np.pi / (2 * nt))
        filtered = np.fft.irfft(np.fft.rfft(images, n=n_pad, axis=-1) * ramp, n=n_pad, axis=-1)[..., :nd]
        filtered = filtered.astype(np.float32)
        out = np.empty((self.nz, ny, self.nx), np.float32)
        for y0 in range(0, ny, chunk):
            y1 = min(ny, y0 + chunk)
            block = np.ascontiguousarray(filtered[:, y0:y1, :].transpose(0, 2, 1)).reshape(nt * nd, y1 - y0)
            res = (self.matrix_t @ block).reshape(self.nz, self.nx, y1 - y0)
            out[:, y0:y1, :] = res.transpose(0, 2, 1)
            yield Progress(y1, ny, "weighted back-projection")
        return out


def add_noise(signal: np.ndarray, snr: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Add white Gaussian noise so that var(signal) / var(noise) = ``snr``.

    Returns the noisy array (float32) and the SNR measured from the noise actually drawn
    (``inf`` when ``snr`` is infinite).
    """
    if np.isinf(snr):
        return signal.astype(np.float32, copy=True), float("inf")
    var_s = float(np.var(signal, dtype=np.float64))
    noise = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(np.sqrt(var_s / snr))
    measured = var_s / float(np.var(noise, dtype=np.float64))
    noise += signal
    return noise, measured


def missing_wedge_mask(shape_zyx, tilt_range_deg: float) -> np.ndarray:
    """Boolean rfftn-shaped mask of Fourier components a ±``tilt_range_deg`` series measures.

    Tilt axis y: the component (kz, ky, kx) is measured when
    ``|kz| <= tan(range) |kx|`` (all ky), plus the kz = 0 plane.
    """
    nz, ny, nx = shape_zyx
    kz = np.fft.fftfreq(nz)[:, None, None]
    kx = np.fft.rfftfreq(nx)[None, None, :]
    if tilt_range_deg >= 90:
        return np.ones((nz, 1, nx // 2 + 1), bool) & np.ones((1, ny, 1), bool)
    meas = np.abs(kz) <= np.tan(np.deg2rad(tilt_range_deg)) * np.abs(kx) + 1e-9
    return np.broadcast_to(meas, (nz, ny, nx // 2 + 1))


def fourier_filter(shape_zyx, voxel_size_A: float, tilt_range_deg: float, ctf: CtfParams | None) -> np.ndarray:
    """rfftn-shaped float32 filter: missing-wedge mask times the CTF of |k| (3D)."""
    filt = missing_wedge_mask(shape_zyx, tilt_range_deg).astype(np.float32)
    if ctf is not None:
        kz = np.fft.fftfreq(shape_zyx[0], d=voxel_size_A)[:, None, None]
        ky = np.fft.fftfreq(shape_zyx[1], d=voxel_size_A)[None, :, None]
        kx = np.fft.rfftfreq(shape_zyx[2], d=voxel_size_A)[None, None, :]
        filt = filt * ctf.transfer(np.sqrt(kz**2 + ky**2 + kx**2)).astype(np.float32)
    return filt


def wedge_noise(
    signal: np.ndarray,
    wedge: np.ndarray,
    snr: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Add white noise restricted to the measured wedge so that var(signal)/var(noise) = snr.

    Returns the noisy volume (float32) and the SNR measured from the noise drawn.
    """
    if np.isinf(snr):
        return signal.astype(np.float32, copy=True), float("inf")
    var_s = float(np.var(signal, dtype=np.float64))
    if var_s == 0:
        raise ValueError("The volume is empty (no signal), so an SNR cannot be set; add particles.")
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    noise = np.fft.irfftn(np.fft.rfftn(noise) * wedge, s=signal.shape, axes=(0, 1, 2)).astype(np.float32)
    noise *= np.float32(np.sqrt(var_s / (snr * float(np.var(noise, dtype=np.float64)))))
    measured = var_s / float(np.var(noise, dtype=np.float64))
    return signal + noise, measured


def fourier_image(
    volume: np.ndarray,
    voxel_size_A: float,
    tilt_range_deg: float,
    ctf: CtfParams | None,
    snr: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """Fast tomogram approximation: missing wedge and CTF as one 3D Fourier filter, plus
    white noise restricted to the same wedge (seed 000's approach).

    The SNR is var(filtered signal) / var(filtered noise), measured on the volume.

    Returns
    -------
    (ndarray float32 (z, y, x), float)
        The filtered noisy volume and the measured SNR.
    """
    shape = volume.shape
    filt = fourier_filter(shape, voxel_size_A, tilt_range_deg, ctf)
    signal = np.fft.irfftn(np.fft.rfftn(volume) * filt, s=shape, axes=(0, 1, 2)).astype(np.float32)
    return wedge_noise(signal, missing_wedge_mask(shape, tilt_range_deg), snr, rng)
