"""Plain helpers of the batch tests (imported by name; conftest modules are not importable reliably)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

VOXEL_A = 10.0
SHAPE = (32, 48, 48)


def read_centres(path: Path) -> np.ndarray:
    """Particle centres (voxels, z, y, x) of a coordinates file, sorted for comparison."""
    from tomolens.io.coords import read_coordinates

    coords = read_coordinates(path).coords_zyx
    return coords[np.lexsort(coords.T[::-1])] if len(coords) else coords
