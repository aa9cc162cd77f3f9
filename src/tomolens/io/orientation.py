"""Particle orientations: Euler-angle conventions of RELION, Dynamo and copick.

tomolens stores orientations as RELION Euler angles ``rot``, ``tilt``, ``psi`` (ZYZ,
degrees).  The particle's orientation — the rotation that takes the reference (template)
onto the particle in the tomogram, acting on (x, y, z) column vectors — is

    ``R = Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).inv()``

(:func:`tomolens.simulate.rotation_matrix_zyx` is the same matrix for z, y, x vectors).
Other conventions, each converted through ``R``:

- **Dynamo** ``tdrot``, ``tilt``, ``narot`` (ZXZ): ``R = Rotation.from_euler("zxz",
  [tdrot, tilt, narot], degrees=True).inv()`` (extrinsic z, x, z).  A published pair
  that gives identical averages in both programs: Dynamo (−47.273, 1.1777, −132.3) is
  RELION (137.7, 1.1777, 42.727).
- **copick** stores ``R`` itself as the 3×3 block of each point's 4×4 ``transformation``.
- **matrix**: ``R`` as a (N, 3, 3) array (x, y, z).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

#: Euler conventions that :func:`convert_angles` knows, with their angle names.
CONVENTIONS = {"relion": ("rot", "tilt", "psi"), "dynamo": ("tdrot", "tilt", "narot")}
RELION_ANGLES = CONVENTIONS["relion"]
_SCIPY_AXES = {"relion": "ZYZ", "dynamo": "zxz"}


class AngleConventionError(ValueError):
    """Euler angles in a convention tomolens does not know."""


def _check(convention: str) -> str:
    name = str(convention).lower()
    if name not in CONVENTIONS:
        raise AngleConventionError(
            f"Unknown Euler-angle convention {convention!r}; tomolens converts "
            f"{', '.join(CONVENTIONS)} (RELION ZYZ rot/tilt/psi, Dynamo ZXZ tdrot/tilt/narot)."
        )
    return name


def matrices_from_angles(angles_deg: np.ndarray, convention: str = "relion") -> np.ndarray:
    """Particle orientations ``R`` (reference → particle, on x, y, z vectors).

    Parameters
    ----------
    angles_deg : array, shape (N, 3)
        Euler angles in degrees, in the order of ``CONVENTIONS[convention]``.
    convention : {"relion", "dynamo"}

    Returns
    -------
    ndarray, shape (N, 3, 3), float64
    """
    name = _check(convention)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3)
    if not len(angles):
        return np.zeros((0, 3, 3))
    return Rotation.from_euler(_SCIPY_AXES[name], angles, degrees=True).inv().as_matrix()


def angles_from_matrices(matrices: np.ndarray, convention: str = "relion") -> np.ndarray:
    """Euler angles in degrees, shape (N, 3), of orientations ``R`` (N, 3, 3) (x, y, z)."""
    name = _check(convention)
    mats = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
    if not len(mats):
        return np.zeros((0, 3))
    with warnings.catch_warnings():
        # tilt 0 or 180: only rot + psi is defined; scipy sets the third angle to 0 (same matrix)
        warnings.filterwarnings("ignore", message="Gimbal lock detected")
        return Rotation.from_matrix(mats).inv().as_euler(_SCIPY_AXES[name], degrees=True)


def convert_angles(angles_deg: np.ndarray, source: str, target: str) -> np.ndarray:
    """Convert Euler angles (N, 3) in degrees between conventions (same orientation)."""
    return angles_from_matrices(matrices_from_angles(angles_deg, source), target)


def relion_angles(features) -> np.ndarray | None:
    """The (N, 3) ``rot, tilt, psi`` columns of a features table, or None if any is missing."""
    if not set(RELION_ANGLES) <= set(getattr(features, "columns", ())):
        return None
    return features[list(RELION_ANGLES)].to_numpy(dtype=np.float64)


def particle_axes_zyx(angles_deg: np.ndarray, convention: str = "relion") -> np.ndarray:
    """Each particle's own z axis in the tomogram, as unit vectors in z, y, x order.

    This is ``R @ (0, 0, 1)`` (x, y, z) reversed: the direction along which a napari
    Vectors layer draws each particle's orientation.

    Returns
    -------
    ndarray, shape (N, 3), float64
    """
    return matrices_from_angles(angles_deg, convention)[:, :, 2][:, ::-1].copy()
