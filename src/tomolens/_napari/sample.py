"""File ▸ Open Sample: small tomograms generated offline in a few seconds."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def phantom_tomogram():
    """A 64×128×128 phantom: 12 spheres of 40 Å radius in Gaussian noise, 10 Å voxels.

    Returns the tomogram (Image) and its instance Labels, both at 10 Å.
    """
    rng = np.random.default_rng(0)
    shape = (64, 128, 128)
    labels = np.zeros(shape, np.uint16)
    zz, yy, xx = np.indices(shape)
    centres = []
    while len(centres) < 12:
        c = rng.uniform([12, 12, 12], np.array(shape) - 12)
        if all(np.linalg.norm(c - o) > 12 for o in centres):
            centres.append(c)
    for i, c in enumerate(centres, start=1):
        inside = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 16
        labels[inside] = i
    clean = ndimage.gaussian_filter((labels > 0).astype(np.float32), 1.0)
    tomo = (clean + rng.normal(0, 0.3, shape)).astype(np.float32)
    scale = {"scale": (10.0, 10.0, 10.0), "units": ("angstrom",) * 3, "axis_labels": ("z", "y", "x")}
    return [
        (tomo, {"name": "phantom tomogram", **scale}, "image"),
        (labels, {"name": "phantom instances", "visible": False, **scale}, "labels"),
    ]
