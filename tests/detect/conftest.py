"""Fixtures of the detection tests."""

from __future__ import annotations

import pytest
from detect_helpers import make_spheres


@pytest.fixture
def spheres():
    return make_spheres()
