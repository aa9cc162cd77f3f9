"""A small synthetic tomogram with a membrane-like sheet and filament-like rods (no simulator)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TOY_CLASSES = ["background", "membrane", "filament"]


def make_toy(seed: int = 0, shape=(16, 48, 48), noise: float = 0.3):
    """(tomogram float32, dense class indices int16): a tilted sheet (1) and two rods along x (2)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    classes = np.zeros(shape, np.int16)
    offset = rng.uniform(-6, 6)
    classes[np.abs(y - 0.6 * x - 8 - offset) < 1.6] = 1
    for cy in rng.uniform(26, 44, 2):
        classes[(y - cy) ** 2 + (z - shape[0] / 2) ** 2 < 5] = 2
    clean = ndimage.gaussian_filter(np.where(classes == 2, 1.6, (classes == 1) * 1.0).astype(np.float32), 0.6)
    tomo = clean / clean.std() + rng.normal(0, noise * 3, shape)
    return tomo.astype(np.float32), classes
