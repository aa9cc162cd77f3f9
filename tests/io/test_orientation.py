"""Euler-angle conventions: RELION ZYZ, Dynamo ZXZ, rotation matrices."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tomolens.io.orientation import (
    AngleConventionError,
    angles_from_matrices,
    convert_angles,
    matrices_from_angles,
    particle_axes_zyx,
)
from tomolens.simulate import rotation_matrix_zyx

#: A published pair of equivalent angles (identical averages in Dynamo and RELION).
DYNAMO_PAIR = [-47.2730, 1.1777, -132.3000]
RELION_PAIR = [137.7000, 1.1777, 42.7270]


def test_relion_matrix_is_the_simulators_template_to_particle_rotation():
    angles = [30.0, 60.0, 75.0]
    np.testing.assert_allclose(matrices_from_angles(angles)[0][::-1, ::-1], rotation_matrix_zyx(angles), atol=1e-12)


def test_dynamo_to_relion_published_pair():
    np.testing.assert_allclose(convert_angles(DYNAMO_PAIR, "dynamo", "relion")[0], RELION_PAIR, atol=1e-3)
    np.testing.assert_allclose(convert_angles(RELION_PAIR, "relion", "dynamo")[0], DYNAMO_PAIR, atol=1e-3)


def test_dynamo_matrix_of_a_known_rotation():
    # Dynamo's matrix of (tdrot, tilt, narot) maps the particle onto the reference; the
    # particle's orientation R is its transpose: tilt 90 about x gives R = Rx(90)^T.
    r = matrices_from_angles([0.0, 90.0, 0.0], "dynamo")[0]
    np.testing.assert_allclose(r, Rotation.from_euler("x", -90, degrees=True).as_matrix(), atol=1e-12)
    # a pure in-plane tdrot of 40 degrees is RELION rot + psi = 40 (both about z)
    np.testing.assert_allclose(convert_angles([40.0, 0.0, 0.0], "dynamo", "relion")[0][[0, 2]].sum(), 40.0, atol=1e-9)


def test_round_trip_through_every_convention_keeps_the_matrix():
    rng = np.random.default_rng(3)
    mats = Rotation.random(20, random_state=rng).as_matrix()
    for conv in ("relion", "dynamo"):
        back = matrices_from_angles(angles_from_matrices(mats, conv), conv)
        np.testing.assert_allclose(back, mats, atol=1e-9)


def test_particle_axis_is_the_rotated_z_axis():
    axes = particle_axes_zyx([[0.0, 0.0, 0.0], [0.0, 90.0, 0.0]])
    np.testing.assert_allclose(axes[0], [1.0, 0.0, 0.0], atol=1e-12)  # z axis, z first
    r = matrices_from_angles([0.0, 90.0, 0.0])[0]
    np.testing.assert_allclose(axes[1], (r @ [0, 0, 1])[::-1], atol=1e-12)
    assert abs(axes[1][0]) < 1e-12  # tilted 90 degrees: lies in the x-y plane


def test_unknown_convention_is_named():
    with pytest.raises(AngleConventionError, match="'eman'.*relion, dynamo"):
        convert_angles([0, 0, 0], "eman", "relion")
