"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if not os.environ.get("DISPLAY"):
    # No X server: Qt offscreen (OpenGL canvases may fail; scripts/test.sh runs under Xvfb).
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The reference data folder ``../shared/data``; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (clone with ../shared beside it)")
    return SHARED_DATA
