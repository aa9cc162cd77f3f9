"""Training targets for detection, computed from instance labels.

Seed 002 trains two outputs: a binary particle *mask* and a *centre map* holding, for
every particle voxel, its distance to the particle's own boundary normalised to 1 at
the particle's deepest voxel (its centre) and falling to 0 at the boundary and in the
background.  Distances are taken per instance, so touching particles keep separate
peaks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def centre_map(instances: np.ndarray) -> np.ndarray:
    """Normalised distance-to-boundary map of every instance.

    Parameters
    ----------
    instances : ndarray of int, shape (z, y, x)
        Instance labels, 0 = background.

    Returns
    -------
    ndarray, float32, shape (z, y, x)
        ``d / max(d)`` per instance where ``d`` is the Euclidean distance
        (``scipy.ndimage.distance_transform_edt``) from a voxel to the nearest voxel
        outside its instance; 1 at each instance's centre, → 0 at its boundary, 0 outside.
    """
    if instances.ndim != 3:
        raise ValueError(f"Instance labels must be 3D (z, y, x); got shape {instances.shape}.")
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"Instance labels must be integers; got dtype {instances.dtype}.")
    out = np.zeros(instances.shape, np.float32)
    for label, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        padded = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, instances.shape))
        inside = instances[padded] == label
        dist = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1, 1:-1]
        dist = (dist - 0.5).clip(min=0) * inside  # boundary voxels → 0.5/…, background 0
        peak = dist.max()
        if peak > 0:
            region = out[padded]
            region[inside] = (dist[inside] / peak).astype(np.float32)
    return out


def detection_targets(instances: np.ndarray) -> np.ndarray:
    """Stack of the two targets: (2, z, y, x) float32 — mask (0/1) and centre map."""
    instances = np.asarray(instances)
    return np.stack([(instances > 0).astype(np.float32), centre_map(instances)])
