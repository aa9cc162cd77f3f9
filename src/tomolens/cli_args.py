"""argparse types that check command-line values before any work starts.

A bad value is reported by argparse as one line (``tomolens CMD: error: argument --x: …``)
with exit status 2, before a tomogram is read or a network runs.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

from tomolens.io.atomic import check_writable_target
from tomolens.io.checks import check_voxel_size, tomogram_voxel_size


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


#: Help of ``--voxel-size-A`` (alias ``--voxel-size``) on the commands that run a model on a tomogram.
VOXEL_SIZE_HELP = "voxel size of the tomogram in Å (overrides the header's); required when its header has none (0 or 1)"


def add_voxel_size_option(parser: argparse.ArgumentParser, help: str = VOXEL_SIZE_HELP) -> None:
    """``--voxel-size-A`` (alias ``--voxel-size``, stored as ``args.voxel_size``), in Å."""
    parser.add_argument("--voxel-size-A", "--voxel-size", dest="voxel_size", type=length_A, default=None, help=help)


def read_tomogram(path: str, voxel_size_A: float | None):
    """The tomogram (:class:`~tomolens.io.mrc.MrcVolume`) and the voxel size (Å) a model command uses.

    The reader's "voxel size unknown" warning is not repeated: either ``voxel_size_A`` (the option) gives it, or
    :func:`~tomolens.io.checks.tomogram_voxel_size` refuses with one line saying what to do.
    """
    from tomolens.io.mrc import UnknownVoxelSizeWarning, read_mrc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownVoxelSizeWarning)
        vol = read_mrc(path)
    return vol, tomogram_voxel_size(voxel_size_A, vol.voxel_size_A, path)


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
