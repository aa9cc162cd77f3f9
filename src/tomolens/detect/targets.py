"""Training targets for detection, computed from instance labels.

Seed 002 trains two outputs: a binary particle *mask* and a *centre map* holding, for
every particle voxel, its distance to the particle's boundary normalised to 1 at the
particle's centre and falling to 0 at the boundary.  Distances are taken per instance,
so touching particles keep separate peaks.

Seed 002 dealt with compact particles.  Rings, barrels, shells and other non-convex
particles have many local maxima of their own distance map (one per bead, a ridge
along a shell), which would split them into fragments.  tomolens therefore measures
the distance to the boundary of each instance's *convex hull*
(``skimage.morphology.convex_hull_image``): identical to seed 002 for convex
particles, one peak at the centre for hollow or ring-shaped ones.  The centre map is
defined over the hull (it can be non-zero in a ring's hole); the mask is the instance.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image


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
        outside the instance's convex hull; 1 at each instance's centre, → 0 at the
        hull's boundary, 0 outside (overlapping hulls take the larger value).
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
        hull = _hull(inside)
        dist = ndimage.distance_transform_edt(np.pad(hull, 1))[1:-1, 1:-1, 1:-1]
        dist = (dist - 0.5).clip(min=0) * hull  # boundary voxels → 0.5/max, outside 0
        dist *= _centre_weight(hull)
        peak = dist.max()
        if peak > 0:
            region = out[padded]
            np.maximum(region, (dist / peak).astype(np.float32), out=region)
    return out


def _centre_weight(hull: np.ndarray) -> np.ndarray:
    """Gaussian of the distance to the hull's centroid (σ = its equivalent radius).

    Elongated hulls have a *ridge* of maximal boundary distance; weighting by this
    Gaussian leaves one peak, at the centre, and keeps 0 at the boundary.
    """
    coords = np.indices(hull.shape, dtype=np.float32)
    centre = [float(c[hull].mean()) for c in coords]
    sigma2 = max((3 * hull.sum() / (4 * np.pi)) ** (2 / 3), 1.0)
    r2 = sum((c - m) ** 2 for c, m in zip(coords, centre))
    return np.exp(-0.5 * r2 / sigma2)


def _hull(inside: np.ndarray) -> np.ndarray:
    """Convex hull of a boolean 3D object; the object itself when it is flat or tiny."""
    extent = np.ptp(np.argwhere(inside), axis=0) if inside.any() else np.zeros(3)
    if inside.sum() < 8 or np.any(extent < 2):
        return inside
    return convex_hull_image(inside, offset_coordinates=False) | inside


def detection_targets(instances: np.ndarray) -> np.ndarray:
    """Stack of the two targets: (2, z, y, x) float32 — mask (0/1) and centre map."""
    instances = np.asarray(instances)
    return np.stack([(instances > 0).astype(np.float32), centre_map(instances)])
