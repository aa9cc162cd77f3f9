"""Projection matching: score orientations by comparing images with a map's central slices.

The building blocks of :func:`tomolens.orient.refine.refine_orientations`.  Images are compared in
Fourier space with the map's central slice at each candidate orientation (normalised correlation,
real and imaginary parts together) on a disc of Fourier pixels between :data:`LOW_CUT` and the
pass's resolution limit; a 3D spectrum is a torch tensor (1, 2, m, m, m) (real, imaginary) and a
plane is the (2, P) array of Fourier pixel coordinates (x, y) from
:func:`tomolens.orient.project.fourier_plane`.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from tomolens.jobs import Progress
from tomolens.orient.project import shift_phase

#: Finest resolution compared, in pixels (2 = Nyquist): limits of a schedule or of the frame
#: search finer than this × the pixel size are raised to it.
FINEST = 2.5

#: Fewest Fourier pixels compared along a radius: coarser resolution limits are lowered to it.
MIN_RADIUS = 4.0

#: Frequencies below this radius (Fourier pixels) are not compared (the images' mean and
#: the slowest ring carry no orientation information).
LOW_CUT = 1.5


def fourier_radius(m: int, pixel_size_A: float, resolution_A: float) -> float:
    """Fourier radius (pixels of an m grid) of a resolution limit, within [MIN_RADIUS, m / FINEST]."""
    return float(np.clip(m * pixel_size_A / resolution_A, MIN_RADIUS, m / FINEST))


def zero_mean(images: np.ndarray) -> np.ndarray:
    """Images (N, n, n) minus each one's mean, float32."""
    images = np.asarray(images, np.float32)
    return images - images.mean(axis=(1, 2), keepdims=True)


def central_slices(spec, mats: np.ndarray, plane: np.ndarray):
    """Central slices of a 3D spectrum (torch (1, 2, m, m, m)) at orientations: (2, len(mats), P)."""
    import torch

    m = spec.shape[-1]
    xyz = np.einsum("bji,jp->bpi", mats, plane)  # Aᵀ k as (x, y, z): grid_sample's order
    grid = torch.from_numpy(((xyz + m // 2) / (m - 1) * 2 - 1).astype(np.float32)).reshape(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(spec, grid, mode="bilinear", align_corners=True)
    return out.reshape(2, len(mats), -1)


def unit_norm(slices):
    """Slices (2, K, P) scaled to unit norm over (real, imaginary, points)."""
    import torch

    return slices / torch.sqrt((slices**2).sum(dim=(0, 2), keepdim=True) + 1e-12)


def local_pass(
    images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, candidates: np.ndarray, batch: int
) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Local projection matching (job): each orientation to the best of ``Δ A`` (Δ in candidates).

    ``candidates[0]`` is the identity: an orientation stays unless another scores strictly higher.
    """
    import torch

    out = mats.copy()
    moved = 0
    for start in range(0, len(mats), batch):
        cur = mats[start : start + batch]
        ft = torch.from_numpy(np.stack([images_ft[start : start + batch].real, images_ft[start : start + batch].imag]))
        cand = np.einsum("cij,bjk->bcik", candidates, cur).reshape(-1, 3, 3)  # Δ A
        slices = unit_norm(central_slices(spec, cand, plane)).reshape(2, len(cur), len(candidates), -1)
        score = (slices * ft[:, :, None, :]).sum(dim=(0, 3))
        best = score.argmax(dim=1).numpy()  # the first maximum: ties keep the identity
        moved += int(np.sum(best != 0))
        out[start : start + batch] = cand.reshape(len(cur), len(candidates), 3, 3)[np.arange(len(cur)), best]
        yield Progress(start + len(cur), len(mats), "local matching")
    return out, moved


def global_pass(
    images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, grid: np.ndarray, batch: int
) -> Generator[Progress, None, tuple[np.ndarray, int]]:
    """Global projection matching (job): an orientation moves to the best of ``grid`` if that scores higher."""
    import torch

    refs = []
    for i in range(0, len(grid), 2000):
        refs.append(unit_norm(central_slices(spec, grid[i : i + 2000], plane)))
        yield Progress(0, len(mats), "global matching: reference slices")
    refs = torch.cat(refs, dim=1).permute(0, 2, 1).reshape(-1, len(grid))  # (2P, K): real rows, then imaginary
    out = mats.copy()
    moved = 0
    for start in range(0, len(mats), batch):
        chunk = images_ft[start : start + batch]
        ft = torch.from_numpy(np.concatenate([chunk.real, chunk.imag], axis=1))  # (b, 2P), same layout
        current = unit_norm(central_slices(spec, mats[start : start + batch], plane))
        current_score = (current.permute(1, 0, 2).reshape(len(chunk), -1) * ft).sum(dim=1)
        score, best = (ft @ refs).max(dim=1)
        better = (score > current_score).numpy()
        out[np.flatnonzero(better) + start] = grid[best.numpy()[better]]
        moved += int(better.sum())
        yield Progress(start + len(chunk), len(mats), "global matching")
    return out, moved


def shift_pass(
    images_ft: np.ndarray, mats: np.ndarray, spec, plane: np.ndarray, offsets: np.ndarray, m: int, batch: int
) -> Generator[Progress, None, np.ndarray]:
    """Best in-plane shift offset (pixels, x y) of each image against its central slice (job).

    ``images_ft`` already has the current shifts undone; the offset ``o`` maximising
    ``Re Σ Î(k) S*(k) exp(2πi k·o / m)`` is returned per image, shape (N, 2).
    """
    import torch

    phase = np.conj(shift_phase(plane[0][:, None], plane[1][:, None], offsets[:, 0], offsets[:, 1], m))
    phase = torch.from_numpy(phase.astype(np.complex64))  # (P, G)
    out = np.zeros((len(mats), 2))
    for start in range(0, len(mats), batch):
        ref = unit_norm(central_slices(spec, mats[start : start + batch], plane))
        cross = torch.from_numpy(images_ft[start : start + batch]) * torch.complex(ref[0], -ref[1])
        out[start : start + batch] = offsets[(cross @ phase).real.argmax(dim=1).numpy()]
        yield Progress(start + len(cross), len(mats), "shift search")
    return out


def undo_shifts(images_ft: np.ndarray, plane: np.ndarray, shifts: np.ndarray, m: int) -> np.ndarray:
    """Image spectra on ``plane`` with in-plane shifts (N, 2) px (x, y) of their content undone."""
    if not np.any(shifts):
        return images_ft
    ramp = np.conj(shift_phase(plane[0], plane[1], shifts[:, :1], shifts[:, 1:], m))  # (N, P)
    return (images_ft * ramp).astype(np.complex64)
