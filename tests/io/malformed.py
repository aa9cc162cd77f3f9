"""Helpers building malformed MRC and coordinate files (for the file-safety and fuzz tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from tomolens.io.mrc import write_mrc


def valid_mrc(path: Path, shape=(4, 6, 8), dtype=np.float32, voxel=10.0, is_labels=False, seed=0) -> Path:
    """A small valid MRC file written by tomolens."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 5, shape) if is_labels else rng.normal(size=shape).astype(dtype)
    return write_mrc(path, data, voxel, is_labels=is_labels)


def patch_header(path: Path, **fields) -> Path:
    """Overwrite header fields of an MRC file in place (``cella`` takes (x, y, z))."""
    raw = bytearray(path.read_bytes())
    header = np.frombuffer(bytes(raw[:1024]), dtype=HEADER_DTYPE).copy()
    for name, value in fields.items():
        if name == "cella":
            header["cella"]["x"], header["cella"]["y"], header["cella"]["z"] = value
        else:
            header[name] = value
    raw[:1024] = header.tobytes()
    path.write_bytes(bytes(raw))
    return path


def patch_data(path: Path, offset_voxel: int, value: float, dtype=np.float32) -> Path:
    """Set one voxel (flat index) of a float32 MRC file without an extended header."""
    data = np.memmap(path, dtype=dtype, mode="r+", offset=1024)
    data[offset_voxel] = value
    data.flush()
    del data
    return path
