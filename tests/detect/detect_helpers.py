"""Synthetic crowded spheres for detection tests (independent of the simulator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def make_spheres(shape=(32, 64, 64), radius=4.0, n=18, noise=0.3, seed=0, min_sep=None):
    """Bright spheres (touching allowed down to ``min_sep`` voxels apart) in Gaussian noise.

    Returns (tomogram float32, instances int32, centres (N, 3) voxels).
    """
    rng = np.random.default_rng(seed)
    min_sep = 2 * radius if min_sep is None else min_sep
    centres: list[np.ndarray] = []
    tries = 0
    while len(centres) < n and tries < 20000:
        tries += 1
        c = rng.uniform(radius + 1, np.array(shape) - radius - 1)
        if all(np.linalg.norm(c - o) >= min_sep for o in centres):
            centres.append(c)
    grid = np.indices(shape, dtype=np.float32)
    dist2 = np.full(shape, np.inf, np.float32)
    instances = np.zeros(shape, np.int32)
    for i, c in enumerate(centres, start=1):
        d2 = sum((g - v) ** 2 for g, v in zip(grid, c))
        inside = (d2 <= radius**2) & (d2 < dist2)
        instances[inside] = i
        dist2 = np.minimum(dist2, np.where(d2 <= radius**2, d2, np.inf))
    clean = ndimage.gaussian_filter((instances > 0).astype(np.float32), 0.8)
    tomo = (clean + rng.normal(0, noise, shape)).astype(np.float32)
    return tomo, instances, np.array(centres)


def save_small_detector(path, base_channels: int = 8):
    """An untrained mask + centre U-Net (seed 0) at 20 Å with 16-voxel patches, saved with its card; the path."""
    import torch

    from tomolens.models.card import ModelCard, save_model
    from tomolens.models.unet import UNet3D

    torch.set_num_threads(1)
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "out_channels": 2, "base_channels": base_channels, "depth": 2}
    card = ModelCard(
        name=Path(path).stem,
        task="detect",
        architecture="tomolens.models.unet:UNet3D",
        arch_kwargs=kwargs,
        classes=["mask", "centre"],
        voxel_size_A=20.0,
        patch_size=[16, 16, 16],
        polarity="bright",
    )
    return str(save_model(UNet3D(**kwargs), card, path)[0])
