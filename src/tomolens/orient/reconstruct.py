"""3D reconstruction from projections and orientations, and the FSC against a reference.

Direct Fourier inversion: every projection is zero-padded ``pad_factor`` times, Fourier
transformed and its values are spread onto the 3D Fourier grid at ``Aᵀ (kx, ky, 0)``
(trilinear weights, inside the Nyquist sphere); each voxel is divided by its summed
weight (voxels with little weight are left empty), and the inverse FFT is cropped.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from tomolens.jobs import Progress
from tomolens.orient.files import check_stack
from tomolens.orient.project import centred_fft2, fourier_plane, padded_size, shift_phase
from tomolens.orient.rotations import matrices

log = logging.getLogger(__name__)


def reconstruct_fourier(
    images: np.ndarray,
    quats: np.ndarray,
    shifts_px: np.ndarray | None = None,
    pad_factor: float = 2.0,
    batch: int = 200,
    min_weight: float = 0.2,
    symmetry=None,
) -> Generator[Progress, None, np.ndarray]:
    """Reconstruct a map by direct Fourier inversion (job).

    Parameters
    ----------
    images : ndarray, shape (N, n, n)
        Projections (y, x).
    quats : ndarray, shape (N, 4)
        Their orientations (see :mod:`tomolens.orient.rotations`).
    shifts_px : ndarray, shape (N, 2), optional
        Known in-plane shifts (x, y) of the image content in pixels; undone before insertion.
    pad_factor : float
        Real-space zero padding before the FFT (2 reduces interpolation artefacts).
    batch : int
        Images per Progress step.
    min_weight : float
        Fourier voxels whose summed interpolation weight is below this are set to 0.
    symmetry : tomolens.orient.symmetry.Symmetry or str, optional
        Point group of the particle (in the orientations' frame): the map is averaged over it
        (:func:`tomolens.orient.symmetry.symmetrise_volume`).  None or C1: no symmetry.

    Returns
    -------
    ndarray, float32, shape (n, n, n)
        The map (z, y, x), in the units of a voxel sum (so it matches the simulated map).
    """
    images = check_stack(images, "the projections", min_images=1)
    quats = np.asarray(quats, dtype=np.float64)
    if len(quats) != len(images):
        raise ValueError(f"{len(images)} images but {len(quats)} orientations; give one orientation per image.")
    n_img, n, _ = images.shape
    m = padded_size(n, pad_factor)
    half = m // 2
    a0 = half - n // 2
    kx, ky, inside, plane = fourier_plane(m, 0.5 * m - 2)
    mats = matrices(quats)
    size = m**3
    acc_re = np.zeros(size)
    acc_im = np.zeros(size)
    acc_w = np.zeros(size)
    for start in range(0, n_img, batch):
        stop = min(n_img, start + batch)
        spec = centred_fft2(images[start:stop], m)
        if shifts_px is not None:
            sx = shifts_px[start:stop, 0][:, None, None]
            sy = shifts_px[start:stop, 1][:, None, None]
            spec = spec * np.conj(shift_phase(kx, ky, sx, sy, m))
        values = spec[:, inside].ravel()  # (b·P,)
        xyz = np.einsum("bji,jp->bip", mats[start:stop], plane)  # Aᵀ k, (b, 3, P)
        zyx = np.stack([xyz[:, 2].ravel(), xyz[:, 1].ravel(), xyz[:, 0].ravel()]) + half
        base = np.floor(zyx).astype(np.int64)
        frac = (zyx - base).astype(np.float32)
        base = (base[0] * m + base[1]) * m + base[2]
        v_re = values.real.astype(np.float32)
        v_im = values.imag.astype(np.float32)
        for dz in (0, 1):
            wz = frac[0] if dz else 1.0 - frac[0]
            for dy in (0, 1):
                wzy = wz * (frac[1] if dy else 1.0 - frac[1])
                for dx in (0, 1):
                    w = wzy * (frac[2] if dx else 1.0 - frac[2])
                    # inside the Nyquist sphere every corner lies inside the grid
                    flat = base + ((dz * m + dy) * m + dx)
                    acc_re += np.bincount(flat, weights=w * v_re, minlength=size)
                    acc_im += np.bincount(flat, weights=w * v_im, minlength=size)
                    acc_w += np.bincount(flat, weights=w, minlength=size)
        yield Progress(stop, n_img, "inserting projections in Fourier space")
    weight = acc_w.reshape(m, m, m)
    spectrum = (acc_re + 1j * acc_im).reshape(m, m, m) / np.maximum(weight, min_weight)
    spectrum[weight < min_weight] = 0.0
    vol = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(spectrum))).real
    vol = vol[a0 : a0 + n, a0 : a0 + n, a0 : a0 + n].astype(np.float32)
    if symmetry is not None:
        from tomolens.orient.symmetry import symmetrise_volume

        vol = symmetrise_volume(vol, symmetry)
    return vol


def reconstruct_half_sets(
    images: np.ndarray,
    quats: np.ndarray,
    shifts_px: np.ndarray | None = None,
    pad_factor: float = 2.0,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """Two reconstructions, from the even and from the odd images (job; no symmetry applied).

    Their FSC (:func:`fourier_shell_correlation`) measures how consistent the orientations are
    without a truth.  Arguments as :func:`reconstruct_fourier`.

    Returns
    -------
    half_a, half_b : ndarray, float32, shape (n, n, n)
    """
    from tomolens.jobs import relay

    images = check_stack(images, "the projections", min_images=2)
    quats = np.asarray(quats, dtype=np.float64)
    if len(quats) != len(images):
        raise ValueError(f"{len(images)} images but {len(quats)} orientations; give one orientation per image.")
    halves = []
    for h in (0, 1):
        sel = slice(h, None, 2)
        sub_shifts = None if shifts_px is None else shifts_px[sel]
        halves.append(
            (
                yield from relay(
                    reconstruct_fourier(images[sel], quats[sel], sub_shifts, pad_factor=pad_factor),
                    lambda s, h=h: Progress(h * s.total + s.done, 2 * s.total, f"half set {h + 1} of 2: {s.message}"),
                )
            )
        )
    return halves[0], halves[1]


@dataclass
class FSCResult:
    """A Fourier shell correlation curve and the resolutions at its thresholds.

    Attributes
    ----------
    frequency_per_A : ndarray
        Shell frequencies, Å⁻¹.
    fsc : ndarray
        Correlation per shell.
    resolution_05_A, resolution_0143_A : float
        1/frequency where the FSC first falls below 0.5 and 0.143 (linear interpolation
        between shells), Å; the Nyquist limit ``2 · voxel`` when it never does.
    """

    frequency_per_A: np.ndarray
    fsc: np.ndarray
    resolution_05_A: float
    resolution_0143_A: float


def _crossing(freq: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    below = np.nonzero(curve < threshold)[0]
    below = below[below > 0]
    if len(below) == 0:
        return float(1.0 / freq[-1])
    i = int(below[0])
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    f = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0) if c0 != c1 else f1
    return float(1.0 / f)


def fourier_shell_correlation(vol1: np.ndarray, vol2: np.ndarray, voxel_size_A: float) -> FSCResult:
    """FSC between two cubic maps of the same shape, and the 0.5 and 0.143 resolutions.

    Parameters
    ----------
    vol1, vol2 : ndarray, shape (n, n, n)
    voxel_size_A : float

    Returns
    -------
    FSCResult
    """
    a = np.asarray(vol1, dtype=np.float64)
    b = np.asarray(vol2, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"The FSC needs two cubes of the same shape; got {a.shape} and {b.shape}.")
    n = a.shape[0]
    fa = np.fft.fftshift(np.fft.fftn(a))
    fb = np.fft.fftshift(np.fft.fftn(b))
    g = np.arange(n) - n // 2
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    shell = np.rint(np.sqrt(x**2 + y**2 + z**2)).astype(np.int64).ravel()
    n_shells = n // 2
    keep = shell < n_shells
    cross = np.bincount(shell[keep], weights=(fa * np.conj(fb)).real.ravel()[keep], minlength=n_shells)
    pa = np.bincount(shell[keep], weights=(np.abs(fa) ** 2).ravel()[keep], minlength=n_shells)
    pb = np.bincount(shell[keep], weights=(np.abs(fb) ** 2).ravel()[keep], minlength=n_shells)
    fsc = cross / np.sqrt(np.maximum(pa * pb, 1e-30))
    freq = np.arange(n_shells) / (n * voxel_size_A)
    freq[0] = 0.5 / (n * voxel_size_A)
    return FSCResult(freq[1:], fsc[1:], _crossing(freq[1:], fsc[1:], 0.5), _crossing(freq[1:], fsc[1:], 0.143))
