"""argparse types that check command-line values before any work starts.

A bad value is reported by argparse as one line (``tomolens CMD: error: argument --x: …``)
with exit status 2, before a tomogram is read or a network runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tomolens.io.atomic import check_writable_target
from tomolens.io.checks import check_voxel_size


def _argument_error(err: Exception) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(" ".join(str(err).split()))


def length_A(text: str) -> float:
    """A voxel or pixel size in Å: a positive, finite number (``0``, ``-5``, ``nan``, ``inf`` refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of Å.") from None
    try:
        return check_voxel_size(value, "size")  # type: ignore[return-value]
    except ValueError as err:
        raise _argument_error(err) from None


def output_file(text: str) -> str:
    """An output file that can be written (existing folder, not read-only), checked up front."""
    try:
        check_writable_target(text)
    except OSError as err:
        raise _argument_error(err) from None
    return text


def output_stem(text: str) -> str:
    """An output stem (``STEM_labels.mrc`` …): its folder must exist and be writable."""
    folder = Path(text).expanduser().resolve().parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"The folder {str(folder)!r} does not exist; create it or choose another.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"Cannot write to {str(folder)!r}: permission denied.")
    return text


def output_folder(text: str) -> Path:
    """An output folder, created if missing: it must not be a file, and the nearest existing
    folder above it must be writable."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder; give a folder for the outputs.")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"Cannot write to {str(existing)!r}: permission denied.")
    return path
