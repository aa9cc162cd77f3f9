"""Simulate single-particle projections of a 3D map by the Fourier-slice theorem.

The map is zero-padded to a cube, oversampled ``pad_factor`` times in real space, and
Fourier transformed once; each projection is the central slice ``V̂(Aᵀ (kx, ky, 0))``
sampled by trilinear interpolation (``scipy.ndimage.map_coordinates`` on complex data),
optionally multiplied by a CTF and a phase ramp (in-plane shift), then inverse
transformed and cropped.  Values are line integrals (sums of voxels along the beam), as
ASTRA's projector in the paper, so a noise variance has the paper's meaning.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from tomolens.jobs import Progress
from tomolens.orient.rotations import matrices, random_orientations

log = logging.getLogger(__name__)

#: Fewest projections that recovery and reconstruction accept.
MIN_PROJECTIONS = 10


@dataclass
class ProjectionSet:
    """A stack of projections and what is known about them.

    Attributes
    ----------
    images : ndarray, float32, shape (N, n, n)
        Projections (y, x), line integrals in map units × voxels.
    pixel_size_A : float
        Pixel size in Å.
    quats : ndarray, float64, shape (N, 4) or None
        True orientations (x, y, z, w), or None when unknown.
    shifts_A : ndarray, float64, shape (N, 2) or None
        In-plane shifts (x, y) in Å applied to the image content.
    noise_variance : float
        Variance of the added Gaussian noise (0 for none).
    info : dict
        Provenance (map, seed, CTF settings, SNR…).
    """

    images: np.ndarray
    pixel_size_A: float
    quats: np.ndarray | None = None
    shifts_A: np.ndarray | None = None
    noise_variance: float = 0.0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def pad_to_cube(volume: np.ndarray) -> np.ndarray:
    """Zero-pad a (z, y, x) map to a cube of its largest side, centred; float32."""
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(
            f"Projections need a 3D map (z, y, x); got an array of shape {vol.shape}. "
            "Give a .mrc/.map density map, not an image or a stack."
        )
    n = max(vol.shape)
    out = np.zeros((n, n, n), np.float32)
    starts = [(n - s) // 2 for s in vol.shape]
    out[tuple(slice(a, a + s) for a, s in zip(starts, vol.shape))] = vol
    return out


def padded_size(n: int, pad_factor: float) -> int:
    """FFT size of a box of n zero-padded by ``pad_factor``: about ``pad_factor·n``, even, and ≥ n."""
    return max(n + n % 2, int(2 * round(pad_factor * n / 2)))


def fourier_plane(m: int, radius: float, min_radius: float = 0.0):
    """The central plane of a centred m×m Fourier grid between two radii (grid units).

    Returns
    -------
    kx, ky : ndarray, float64, shape (m, m)
        Frequencies of the centred grid (origin at m // 2).
    disc : ndarray, bool, shape (m, m)
        ``min_radius ≤ |k| < radius``.
    plane : ndarray, float64, shape (3, P)
        The disc's points as (x, y, z = 0) rows, P = disc.sum().
    """
    k = np.arange(m, dtype=np.float64) - m // 2
    ky, kx = np.meshgrid(k, k, indexing="ij")
    k2 = kx**2 + ky**2
    disc = (k2 < radius**2) & (k2 >= min_radius**2)
    return kx, ky, disc, np.stack([kx[disc], ky[disc], np.zeros(int(disc.sum()))])


def shift_phase(kx, ky, shift_x, shift_y, m: int) -> np.ndarray:
    """``exp(−2πi (kx·sx + ky·sy) / m)``: multiplying a centred m-grid spectrum by it moves the
    image content by (sx, sy) pixels; its conjugate undoes that shift.  Arguments broadcast."""
    return np.exp(-2j * np.pi * (kx * shift_x + ky * shift_y) / m)


def centred_fft2(images: np.ndarray, m: int) -> np.ndarray:
    """Centred 2D FFTs of images (N, n, n) zero-padded to m×m (pixel n//2 on the origin), complex."""
    n = images.shape[1]
    a = m // 2 - n // 2
    padded = np.zeros((len(images), m, m), np.float32)
    padded[:, a : a + n, a : a + n] = images
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=(1, 2))), axes=(1, 2))


def centred_fft3(volume: np.ndarray, pad_factor: float = 2.0) -> np.ndarray:
    """Centred 3D FFT of a cube zero-padded to ``m = padded_size(n, pad_factor)``, complex64."""
    n = volume.shape[0]
    m = padded_size(n, pad_factor)
    padded = np.zeros((m, m, m), np.float32)
    a = m // 2 - n // 2  # the cube's centre voxel n//2 lands on the FFT origin m//2
    padded[a : a + n, a : a + n, a : a + n] = volume
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(padded))).astype(np.complex64)


def ctf_2d(
    m: int,
    pixel_size_A: float,
    defocus_A: float,
    voltage_kV: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.1,
) -> np.ndarray:
    """The CTF on a centred m×m frequency grid (no envelope), float32, shape (m, m).

    ``CTF(k) = −sin(π λ Δf k² − π/2 Cs λ³ k⁴ + φ_a)`` with underfocus ``defocus_A`` > 0.
    """
    volts = voltage_kV * 1e3
    wavelength = 12.2643247 / np.sqrt(volts * (1 + 0.978466e-6 * volts))  # Å
    freq = np.fft.fftshift(np.fft.fftfreq(m, d=pixel_size_A))
    ky, kx = np.meshgrid(freq, freq, indexing="ij")
    k2 = kx**2 + ky**2
    cs_A = cs_mm * 1e7
    phase_a = np.arcsin(amplitude_contrast)
    gamma = np.pi * wavelength * defocus_A * k2 - 0.5 * np.pi * cs_A * wavelength**3 * k2**2 + phase_a
    return (-np.sin(gamma)).astype(np.float32)


def project_map(
    volume: np.ndarray,
    quats: np.ndarray,
    shifts_px: np.ndarray | None = None,
    ctf: np.ndarray | None = None,
    pad_factor: float = 2.0,
    batch: int = 100,
) -> Generator[Progress, None, np.ndarray]:
    """Project a map at given orientations (job).

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        Density map; padded to a cube of its largest side n.
    quats : ndarray, shape (N, 4)
        Orientations (see :mod:`tomolens.orient.rotations`).
    shifts_px : ndarray, shape (N, 2), optional
        In-plane shifts (x, y) of the image content, pixels.
    ctf : ndarray, shape (m, m) or (N, m, m), optional
        CTF on the oversampled grid (``m`` from :func:`centred_fft3`).
    pad_factor : float
        Real-space oversampling before the FFT (2 keeps interpolation errors small).
    batch : int
        Projections per Progress step.

    Returns
    -------
    ndarray, float32, shape (N, n, n)
    """
    cube = pad_to_cube(volume)
    n = cube.shape[0]
    spectrum = centred_fft3(cube, pad_factor)
    m = spectrum.shape[0]
    half = m // 2
    kx, ky, inside, plane = fourier_plane(m, 0.5 * m)  # the Nyquist disc: nothing outside it is sampled
    mats = matrices(quats)
    total = len(mats)
    out = np.empty((total, n, n), np.float32)
    a = m // 2 - n // 2
    for start in range(0, total, batch):
        stop = min(total, start + batch)
        xyz = np.einsum("bji,jp->bip", mats[start:stop], plane).astype(np.float32)  # Aᵀ k, (b, 3, P)
        coords = np.stack([xyz[:, 2], xyz[:, 1], xyz[:, 0]], axis=0).reshape(3, -1) + half
        slices = np.zeros((stop - start, m, m), np.complex64)
        slices[:, inside] = ndimage.map_coordinates(spectrum, coords, order=1, mode="constant", cval=0.0).reshape(
            stop - start, -1
        )
        if ctf is not None:
            slices = slices * (ctf if ctf.ndim == 2 else ctf[start:stop])
        if shifts_px is not None:
            sx = shifts_px[start:stop, 0][:, None, None]
            sy = shifts_px[start:stop, 1][:, None, None]
            slices = slices * shift_phase(kx, ky, sx, sy, m).astype(np.complex64)
        images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(slices, axes=(1, 2))), axes=(1, 2)).real
        out[start:stop] = images[:, a : a + n, a : a + n]
        yield Progress(stop, total, "projecting")
    return out


def simulate_projections(
    volume: np.ndarray,
    voxel_size_A: float,
    n_projections: int,
    seed: int = 0,
    half_sphere: bool = True,
    max_shift_A: float = 0.0,
    defocus_A: float | None = None,
    noise_variance: float | None = None,
    snr: float | None = None,
    pad_factor: float = 2.0,
) -> Generator[Progress, None, ProjectionSet]:
    """Projections at uniformly random orientations, with optional shifts, CTF and noise (job).

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        Density map.
    voxel_size_A : float
        Its voxel size, Å (the projections' pixel size).
    n_projections : int
        N.
    seed : int
        Seed of orientations, shifts, defoci and noise.
    half_sphere : bool
        Viewing directions on one hemisphere (the paper's way round the mirror ambiguity).
    max_shift_A : float
        In-plane shifts uniform in ±max_shift_A along x and y.
    defocus_A : float, optional
        Apply a CTF (300 kV, Cs 2.7 mm, 10 % amplitude contrast) at defocus drawn uniformly
        in [0.8, 1.2]·defocus_A per projection.
    noise_variance : float, optional
        Variance of added white Gaussian noise (the paper's "noise variance").
    snr : float, optional
        Alternatively, noise variance = mean image variance / snr (not with noise_variance).

    Returns
    -------
    ProjectionSet
    """
    if n_projections < 1:
        raise ValueError(f"Ask for at least one projection; got {n_projections}.")
    if noise_variance is not None and snr is not None:
        raise ValueError("Give either noise_variance or snr, not both.")
    if snr is not None and snr <= 0:
        raise ValueError(f"The SNR must be positive; got {snr}.")
    rng = np.random.default_rng(seed)
    quats = random_orientations(n_projections, seed=rng.integers(2**31), half_sphere=half_sphere)
    shifts_A = rng.uniform(-max_shift_A, max_shift_A, (n_projections, 2)) if max_shift_A > 0 else None
    cube = pad_to_cube(volume)
    ctf = None
    if defocus_A:
        m = padded_size(cube.shape[0], pad_factor)
        defoci = rng.uniform(0.8, 1.2, n_projections) * defocus_A
        ctf = np.stack([ctf_2d(m, voxel_size_A, d) for d in defoci])
    shifts_px = None if shifts_A is None else shifts_A / voxel_size_A
    images = yield from project_map(cube, quats, shifts_px, ctf, pad_factor)
    info = {"seed": seed, "half_sphere": half_sphere, "max_shift_A": max_shift_A, "defocus_A": defocus_A}
    signal_var = float(np.mean(np.var(images, axis=(1, 2))))
    info["signal_variance"] = signal_var
    variance = 0.0
    if snr is not None:
        variance = signal_var / snr
    elif noise_variance:
        variance = float(noise_variance)
    if variance > 0:
        images += rng.normal(0.0, np.sqrt(variance), images.shape).astype(np.float32)
        info["snr"] = signal_var / variance
    log.info("simulated %d projections %s, noise variance %.3g", n_projections, images.shape[1:], variance)
    return ProjectionSet(images, float(voxel_size_A), quats, shifts_A, variance, info)


def particle_diameter_A(volume: np.ndarray, voxel_size_A: float, level: float = 0.1) -> float:
    """Diameter of the particle about the box centre, Å: twice the farthest voxel above ``level`` × max.

    The map is smoothed a little (σ = 1 voxel) first, so isolated noisy voxels do not count.
    """
    cube = ndimage.gaussian_filter(pad_to_cube(volume), 1.0)
    inside = cube > level * float(cube.max()) if cube.max() > 0 else np.zeros(cube.shape, bool)
    if not inside.any():
        return 0.0
    n = cube.shape[0]
    zyx = np.argwhere(inside) - n // 2
    return float(2.0 * np.sqrt((zyx**2).sum(axis=1)).max() * voxel_size_A)


def box_warnings(volume: np.ndarray, voxel_size_A: float, window_A: float | None = None) -> list[str]:
    """What is wrong with a map for projections and for a distance network's input window.

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
    voxel_size_A : float
    window_A : float, optional
        Side of the distance network's input, Å (pixel size × input size).

    Returns
    -------
    list of str
        One sentence per problem: density reaching the box's edge (projections would cut the
        particle), a particle wider than the window, or one so small in it that it covers only a
        few input pixels.  Empty when the map fits.
    """
    cube = pad_to_cube(volume)
    out = []
    smooth = ndimage.gaussian_filter(cube, 1.0)
    peak = float(smooth.max())
    if peak > 0:
        rim = np.ones(cube.shape, bool)
        rim[2:-2, 2:-2, 2:-2] = False
        if np.any(smooth[rim] > 0.1 * peak):
            out.append(
                "The map's density reaches the edge of its box: projections cut the particle; pad the map "
                "(a box about 1.3× the particle) before simulating or reconstructing."
            )
    if window_A:
        diameter = particle_diameter_A(cube, voxel_size_A)
        if diameter > window_A:
            out.append(
                f"The particle is about {diameter:.0f} Å across, wider than the distance network's "
                f"{window_A:.0f} Å input window: train a network with a pixel size of at least "
                f"{diameter / window_A:.2f}× the current one "
                f"(pixel_size_A × input_size ≥ {diameter:.0f} Å)."
            )
        elif 0 < diameter < 0.25 * window_A:
            out.append(
                f"The particle is about {diameter:.0f} Å across, under a quarter of the distance network's "
                f"{window_A:.0f} Å input window: train a network with a finer pixel size so that it "
                "spans more input pixels."
            )
    return out
