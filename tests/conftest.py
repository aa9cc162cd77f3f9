"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if not os.environ.get("DISPLAY"):
    # No X server: Qt offscreen (OpenGL canvases may fail; scripts/test.sh runs under Xvfb).
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
#: Entries of the checkout that tests and tools may create (caches), not test output.
_CACHES = {".pytest_cache", "__pycache__", ".ruff_cache", ".venv"}


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_the_checkout():
    """Tests write under pytest's ``tmp_path`` only: fail the session if the checkout's top level gains files."""
    before = {p.name for p in ROOT.iterdir()}
    yield
    new = sorted({p.name for p in ROOT.iterdir()} - before - _CACHES)
    assert not new, f"tests left {new} in {ROOT}; write under tmp_path instead"


@pytest.fixture
def shared_data() -> Path:
    """The reference data folder ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone with ../shared beside it)")
    return SHARED_DATA


def make_blobs(shape=(64, 96, 96), n=60, radius=3.0, contrast=1.0, noise=1.0, seed=0):
    """Bright Gaussian-edged spheres (a sparse sample) in white noise, float32 (z, y, x)."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    vol = np.zeros(shape, np.float32)
    vol[tuple(rng.integers(0, s, n) for s in shape)] = 1.0
    vol = ndimage.gaussian_filter(vol, radius) * (2 * np.pi * radius**2) ** 1.5 * contrast
    return vol + rng.normal(0, noise, shape).astype(np.float32)


@pytest.fixture
def blobs():
    """:func:`make_blobs`: a bright sparse test volume; negate it for raw (dark) contrast."""
    return make_blobs
