"""Template matching for pick by example: rotation search by FFT, locally normalised.

The score of a template ``T`` at a tomogram position ``x`` is the Pearson correlation
between ``T`` and the tomogram inside a spherical mask ``M`` of the particle's radius
centred on ``x`` (the fast local correlation function of Roseman 2003):

    score(x) = Σ_m T'(m) V(x + m) / (N σ_M(x))

where ``T'`` is ``T`` made zero-mean and unit-variance inside ``M`` (zero outside), ``N``
the number of mask voxels and ``σ_M(x)`` the tomogram's standard deviation under the mask
at ``x``.  The mask is a sphere, so ``σ_M`` does not depend on the rotation and is computed
once (two FFT correlations); each rotation then costs one forward and one inverse FFT of the
tomogram's size (torch.fft).  The map is the maximum over rotations and templates.

Rotations are a near-uniform grid of SO(3) (:func:`rotation_grid`): Fibonacci-sphere
directions about ``4π / step²`` of them, times in-plane angles every ``step``.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial.transform import Rotation

from tomolens.jobs import Progress

log = logging.getLogger(__name__)


def rotation_grid(step_deg: float) -> Rotation:
    """A near-uniform set of rotations about ``step_deg`` apart.

    Directions of the template's z axis on a Fibonacci sphere (``ceil(4π / step²)`` of
    them, ``step`` in radians) times in-plane angles ``0, step, …`` below 360°.

    Returns
    -------
    scipy.spatial.transform.Rotation
        ``ceil(4π / step²) × ceil(360 / step)`` rotations; the identity comes first.
    """
    if not 1.0 <= step_deg <= 180.0:
        raise ValueError(f"The angular step must be 1-180°; got {step_deg}.")
    step = np.deg2rad(step_deg)
    n_dirs = int(np.ceil(4 * np.pi / step**2))
    i = np.arange(n_dirs)
    cos_tilt = 1 - (2 * i + 1) / n_dirs if n_dirs > 1 else np.ones(1)
    tilt = np.arccos(np.clip(cos_tilt, -1, 1))
    tilt[0] = 0.0  # the identity first
    rot = np.mod(i * np.pi * (3 - np.sqrt(5)), 2 * np.pi)
    psi = np.arange(0, 2 * np.pi - 1e-9, step)
    euler = np.array([(r, t, p) for r, t in zip(rot, tilt) for p in psi])
    euler[: len(psi), 0] = 0.0
    return Rotation.from_euler("ZYZ", euler)


def sphere_mask(box: int, radius: float) -> np.ndarray:
    """Boolean ball of ``radius`` voxels centred in a ``box``³ cube (centre ``(box - 1) / 2``)."""
    c = (box - 1) / 2
    g = np.indices((box,) * 3, dtype=np.float32) - c
    return (g**2).sum(0) <= radius**2


def template_box(radius_vox: float) -> int:
    """Odd cube side holding a ball of ``radius_vox`` voxels with one voxel to spare."""
    return 2 * int(np.ceil(radius_vox)) + 3


def cut_box(volume: np.ndarray, centre_zyx, box: int) -> np.ndarray:
    """The ``box``³ cube of ``volume`` centred on the voxel nearest ``centre_zyx`` (zero past the edges)."""
    c = np.rint(np.asarray(centre_zyx, float)).astype(int)
    lo = c - box // 2
    out = np.zeros((box,) * 3, np.float32)
    src = tuple(slice(max(a, 0), min(a + box, n)) for a, n in zip(lo, volume.shape))
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo))
    out[dst] = volume[src]
    return out


def rotate_box(cube: np.ndarray, rotation: Rotation) -> np.ndarray:
    """``cube`` rotated about its centre (linear interpolation, zero outside); rotation acts on (z, y, x)."""
    m = rotation.as_matrix()
    c = (np.asarray(cube.shape) - 1) / 2
    inv = m.T
    return ndimage.affine_transform(cube, inv, offset=c - inv @ c, order=1, cval=0.0).astype(np.float32)


def normalise_in_mask(cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cube`` made zero-mean, unit-variance inside ``mask``, zero outside (float32)."""
    vals = cube[mask]
    sd = float(vals.std())
    out = np.zeros_like(cube, dtype=np.float32)
    out[mask] = (vals - vals.mean()) / (sd if sd > 0 else 1.0)
    return out


def wedge_filter(cube: np.ndarray, tilt_range_deg: float) -> np.ndarray:
    """``cube`` with the missing wedge of a ±``tilt_range_deg`` tilt series about y removed (float32).

    Fourier components with ``|k_z| > tan(tilt_range) |k_x|`` are zeroed (on a grid padded
    to twice the cube, to keep the filter from wrapping around).
    """
    n = cube.shape[0]
    padded = np.zeros((2 * n,) * 3, np.float32)
    padded[:n, :n, :n] = cube
    kz = sfft.fftfreq(2 * n)[:, None, None]
    kx = sfft.rfftfreq(2 * n)[None, None, :]
    keep = np.abs(kz) <= np.tan(np.deg2rad(tilt_range_deg)) * np.abs(kx) + 1e-9
    out = sfft.irfftn(sfft.rfftn(padded) * keep, s=padded.shape)
    return out[:n, :n, :n].astype(np.float32)


class _Correlator:
    """FFT correlation of one padded volume with small centred kernels (torch.fft)."""

    def __init__(self, volume: np.ndarray, pad: int):
        import torch

        self.torch = torch
        self.shape = volume.shape
        self.pad = pad
        self.fshape = tuple(sfft.next_fast_len(n + 2 * pad, real=True) for n in volume.shape)
        self._buffer = np.zeros(self.fshape, np.float32)
        self.fvol = self.spectrum(volume)

    def spectrum(self, volume: np.ndarray):
        """rFFT of ``volume`` (the volume's shape) zero-padded into the FFT grid."""
        padded = np.zeros(self.fshape, np.float32)
        padded[tuple(slice(self.pad, self.pad + n) for n in volume.shape)] = volume
        return self.torch.fft.rfftn(self.torch.from_numpy(padded))

    def correlate(self, kernel: np.ndarray, fvol=None):
        """Σ_m kernel(m) V(x + m - c) on the volume's grid (c the kernel's centre), as a torch tensor."""
        torch = self.torch
        box = kernel.shape[0]
        # the kernel's centre at the origin, wrapped around (written into one reused buffer)
        at = np.ix_(*((np.arange(box) - box // 2) % n for n in self.fshape))
        self._buffer[at] = kernel
        fk = torch.fft.rfftn(torch.from_numpy(self._buffer))
        self._buffer[at] = 0.0
        out = torch.fft.irfftn((self.fvol if fvol is None else fvol) * fk.conj(), s=self.fshape)
        p = self.pad
        return out[p : p + self.shape[0], p : p + self.shape[1], p : p + self.shape[2]]


def match_templates(
    volume: np.ndarray,
    templates: Sequence[np.ndarray],
    radius_vox: float,
    rotations: Rotation,
    label: str = "template matching",
    keep_best: bool = False,
    tilt_range_deg: float = 0.0,
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray | None]]:
    """Locally normalised cross-correlation of ``templates`` over ``rotations`` (a job).

    Parameters
    ----------
    volume : ndarray, float32, shape (z, y, x)
        Normalised tomogram (polarity of the templates).
    templates : sequence of ndarray, float32, shape (b, b, b)
        Cubes of the same odd side ``b``, centred on the particle.
    radius_vox : float
        Radius of the spherical mask, voxels (at most ``(b - 1) / 2``).
    rotations : Rotation
        Rotations tried for every template.
    tilt_range_deg : float
        When > 0, every rotated template gets the missing wedge of a ±tilt range tilt series
        about y (:func:`wedge_filter`), as the particles in the tomogram have it.

    Returns
    -------
    score : ndarray, float32, shape (z, y, x)
        Maximum over templates and rotations of the masked Pearson correlation (−1…1).
    best : ndarray, int32, shape (z, y, x), or None
        With ``keep_best``: index ``template × len(rotations) + rotation`` of the best match
        per voxel.
    """
    import torch

    box = templates[0].shape[0]
    if any(t.shape != (box,) * 3 for t in templates) or box % 2 == 0:
        raise ValueError("Templates must be cubes of one odd side.")
    mask = sphere_mask(box, radius_vox)
    n_mask = float(mask.sum())
    vol = np.asarray(volume, np.float32)
    corr = _Correlator(vol, box // 2 + 1)
    yield Progress(0, 1, f"{label}: local statistics")
    local_mean = corr.correlate(mask.astype(np.float32)) / n_mask
    local_sq = corr.correlate(mask.astype(np.float32), corr.spectrum(vol**2)) / n_mask
    sigma = torch.sqrt(torch.clamp(local_sq - local_mean**2, min=0.0))
    del local_sq, local_mean
    floor = max(float(sigma.max()) * 1e-3, 1e-6)
    inv_norm = 1.0 / (torch.clamp(sigma, min=floor) * n_mask)
    del sigma
    score = torch.full(vol.shape, -1.0)
    best = torch.zeros(vol.shape, dtype=torch.int32) if keep_best else None
    total, done = len(templates) * len(rotations), 0
    for ti, template in enumerate(templates):
        for ri in range(len(rotations)):
            turned = rotate_box(template, rotations[ri])
            if tilt_range_deg:
                turned = wedge_filter(turned, tilt_range_deg)
            kernel = normalise_in_mask(turned, mask)
            cc = corr.correlate(kernel).mul_(inv_norm)
            if best is not None:
                best[cc > score] = ti * len(rotations) + ri
            torch.maximum(score, cc, out=score)
            del cc
            done += 1
            yield Progress(done, total, f"{label}: rotation {done}/{total}")
    return score.numpy(), (best.numpy() if best is not None else None)


def align_and_average(
    cubes: Sequence[np.ndarray], radius_vox: float, rotations: Rotation, max_shift: int = 2
) -> Generator[Progress, None, np.ndarray]:
    """Average of ``cubes`` after aligning each to the first by the same rotation search (a job).

    Each cube is matched (rotations × shifts up to ``max_shift`` voxels) against the first
    cube zero-padded by ``max_shift``; it joins the average in its best rotation and shift.

    Returns
    -------
    ndarray, float32, shape (b, b, b)
    """
    first = np.asarray(cubes[0], np.float32)
    box = first.shape[0]
    if len(cubes) == 1:
        return first
    search = np.pad(first, max_shift)
    c = box // 2 + max_shift
    total = (len(cubes) - 1) * len(rotations)
    aligned = [first]
    for k, cube in enumerate(cubes[1:]):
        job = match_templates(search, [cube], radius_vox, rotations, f"aligning example {k + 2}", keep_best=True)
        while True:
            try:
                p = next(job)
            except StopIteration as stop:
                score, best = stop.value
                break
            if p.total > 1:
                yield Progress(k * len(rotations) + p.done, total, p.message)
        window = score[
            c - max_shift : c + max_shift + 1, c - max_shift : c + max_shift + 1, c - max_shift : c + max_shift + 1
        ]
        at = np.array(np.unravel_index(int(np.argmax(window)), window.shape)) - max_shift
        rot = rotations[int(best[tuple(at + c)])]
        moved = ndimage.shift(rotate_box(cube, rot), at, order=1, cval=0.0)
        aligned.append(moved.astype(np.float32))
    return np.mean(aligned, axis=0).astype(np.float32)
