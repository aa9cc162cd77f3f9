"""Provenance files: what produced an output (model, settings, polarity decision), as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tomolens import __version__
from tomolens.io.atomic import atomic_path


def jsonable(value):
    """JSON-safe copy of ``value`` (numpy scalars and arrays become Python values)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_provenance(output: str | os.PathLike, record: dict) -> Path:
    """Write ``record`` beside ``output`` as ``<output stem>.provenance.json`` (atomic); return its path."""
    out = Path(output)
    path = (
        out.with_name(out.name.split(".")[0] + ".provenance.json")
        if out.suffix
        else out.with_name(out.name + ".provenance.json")
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps({"tomolens_version": __version__, **jsonable(record)}, indent=2))
    return path
