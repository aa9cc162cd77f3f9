"""Clean-up of semantic segmentations: small components, small holes, instances.

All functions work on class-index volumes (int, 0 = background, k = ``class_names[k]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

#: Face connectivity in 3D (6 neighbours).
_STRUCTURE = ndimage.generate_binary_structure(3, 1)


def _structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, 1)


def remove_small_components(mask: np.ndarray, min_size_voxels: int) -> np.ndarray:
    """``mask`` without connected components (face-connected) smaller than ``min_size_voxels``."""
    mask = np.asarray(mask, bool)
    if min_size_voxels <= 1 or not mask.any():
        return mask.copy()
    labelled, n = ndimage.label(mask, structure=_structure(mask.ndim))
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    keep = sizes >= min_size_voxels
    keep[0] = False
    return keep[labelled]


def fill_small_holes(mask: np.ndarray, max_hole_voxels: int) -> np.ndarray:
    """``mask`` with enclosed holes of at most ``max_hole_voxels`` voxels filled.

    Only holes up to the size limit are filled, so the lumen of a closed vesicle (a large
    enclosed region) stays empty.
    """
    mask = np.asarray(mask, bool)
    if max_hole_voxels <= 0 or not mask.any():
        return mask.copy()
    holes = ndimage.binary_fill_holes(mask, structure=_structure(mask.ndim)) & ~mask
    labelled, n = ndimage.label(holes, structure=_structure(mask.ndim))
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    fill = sizes <= max_hole_voxels
    fill[0] = False
    return mask | fill[labelled]


def clean_classes(
    classes: np.ndarray, n_classes: int, min_size_voxels: int = 0, max_hole_voxels: int = 0
) -> np.ndarray:
    """Per structure class: drop small components (→ background), fill small holes.

    Parameters
    ----------
    classes : ndarray of int, shape (z, y, x)
        Class indices (0 = background).
    n_classes : int
        Number of classes including the background.
    min_size_voxels : int
        Components smaller than this become background (0 = keep all).
    max_hole_voxels : int
        Background holes enclosed by one class and at most this large join that class.

    Returns
    -------
    ndarray, same dtype and shape
    """
    out = np.array(classes, copy=True)
    for k in range(1, n_classes):
        mask = out == k
        if not mask.any():
            continue
        if min_size_voxels > 1:
            kept = remove_small_components(mask, min_size_voxels)
            out[mask & ~kept] = 0
            mask = kept
        if max_hole_voxels > 0:
            filled = fill_small_holes(mask, max_hole_voxels)
            out[filled & ~mask & (out == 0)] = k
    return out


def instances_from_classes(
    classes: np.ndarray, class_names: Sequence[str], min_size_voxels: int = 0, voxel_size_A: float | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Connected components of every structure class as instances.

    Parameters
    ----------
    classes : ndarray of int, shape (z, y, x)
        Class indices (0 = background).
    class_names : sequence of str
        Names by class index.
    min_size_voxels : int
        Components smaller than this are left out.
    voxel_size_A : float, optional
        Adds ``volume_A3`` to the table.

    Returns
    -------
    instances : ndarray uint32, shape (z, y, x)
        0 = background, 1..N instance ids (numbered class by class).
    table : DataFrame
        One row per instance: ``instance_id``, ``class``, ``class_name``, ``voxels``,
        centroid ``z``, ``y``, ``x`` (voxels) and optionally ``volume_A3``.
    """
    classes = np.asarray(classes)
    instances = np.zeros(classes.shape, np.uint32)
    rows = []
    next_id = 1
    for k in range(1, len(class_names)):
        mask = classes == k
        if not mask.any():
            continue
        labelled, n = ndimage.label(mask, structure=_structure(classes.ndim))
        sizes = np.bincount(labelled.ravel(), minlength=n + 1)
        keep = np.flatnonzero(sizes >= max(1, min_size_voxels))
        keep = keep[keep > 0]
        if not len(keep):
            continue
        lut = np.zeros(n + 1, np.uint32)
        lut[keep] = np.arange(next_id, next_id + len(keep), dtype=np.uint32)
        sel = lut[labelled]
        instances[sel > 0] = sel[sel > 0]
        centroids = ndimage.center_of_mass(mask, labelled, keep)
        for lab, c in zip(keep, centroids):
            rows.append(
                {
                    "instance_id": int(lut[lab]),
                    "class": k,
                    "class_name": class_names[k],
                    "voxels": int(sizes[lab]),
                    "z": c[0],
                    "y": c[1],
                    "x": c[2],
                }
            )
        next_id += len(keep)
    table = pd.DataFrame(rows, columns=["instance_id", "class", "class_name", "voxels", "z", "y", "x"])
    if voxel_size_A:
        table["volume_A3"] = table["voxels"] * float(voxel_size_A) ** 3
    return instances, table
