"""Checks shared by the readers, the writers and the command line: input paths and physical sizes.

Each check raises an error whose message names the file or the setting and says what to do,
so the reader of the message does not need the traceback.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from pathlib import Path

#: The largest voxel or pixel size accepted, Å (larger values are header garbage, not data).
MAX_VOXEL_SIZE_A = 1e5


def require_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path when it is an existing regular file; otherwise a clear error.

    Parameters
    ----------
    path : path-like
        The input file.
    what : str
        What the file should be ("tomogram", "coordinate file"…), for the message.

    Raises
    ------
    FileNotFoundError
        Nothing exists at ``path``.
    IsADirectoryError
        ``path`` is a folder.
    OSError
        ``path`` is a pipe, device or socket (``/dev/zero``, a FIFO…), which would block or
        never end.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"No such {what}: {str(path)!r}.") from None
    except OSError as err:
        raise OSError(f"Cannot open {str(path)!r}: {err.strerror or err}.") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{str(path)!r} is a folder, not a {what}; give a file inside it.")
    if not stat.S_ISREG(mode):
        kind = "pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise OSError(f"{str(path)!r} is a {kind}, not a regular {what}; copy the data to a file first.")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"Cannot read {str(path)!r}: permission denied.")
    return path


def is_valid_length(value: object, max_A: float = MAX_VOXEL_SIZE_A) -> bool:
    """True for a finite number in (0, ``max_A``] (a usable voxel size or pixel size, Å)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(number) and 0.0 < number <= max_A


def check_voxel_size(value: float | None, name: str = "voxel size") -> float | None:
    """``value`` as a float when it is a usable size in Å, None for None; else ValueError.

    Raises
    ------
    ValueError
        Zero, negative, NaN, infinite or above :data:`MAX_VOXEL_SIZE_A`.
    """
    if value is None:
        return None
    if not is_valid_length(value):
        raise ValueError(f"The {name} must be a positive number of Å up to {MAX_VOXEL_SIZE_A:g}; got {value!r}.")
    return float(value)  # type: ignore[arg-type]


def tomogram_voxel_size(given_A: float | None, header_A, path) -> float:
    """The voxel size a model command uses: the option's, else the header's x voxel size.

    Parameters
    ----------
    given_A : float or None
        ``--voxel-size-A``, Å.
    header_A : tuple of float or None
        The file's (z, y, x) voxel size in Å, None when its header has none (0 or 1).
    path : path-like
        The tomogram, named in the message.

    Raises
    ------
    ValueError
        When neither is known: a model run on a guessed voxel size gives plausible-looking nonsense (on the
        real microtubule with its header zeroed, 1421 picks instead of 74), so the command refuses.
    """
    if given_A:
        return float(given_A)
    if header_A:
        return float(header_A[-1])
    raise ValueError(
        f"{Path(path).name}: the voxel size is unknown (the header says 0 or 1 Å) and the models need it; "
        "pass --voxel-size-A (Å), or fix the header (check with 'tomolens info', set with IMOD's alterheader)."
    )


def warn_if_voxel_size_assumed(voxel_size_A: float | None, model_voxel_size_A: float | None) -> None:
    """Warn (UserWarning) that a model's voxel size is taken for a tomogram whose voxel size is unknown.

    Every model command says so alike (detect, segment, classify, subdivide) instead of assuming in silence.
    """
    if not voxel_size_A and model_voxel_size_A:
        warnings.warn(
            f"Unknown voxel size: using the model's {model_voxel_size_A:g} Å. Set the voxel size if it differs.",
            UserWarning,
            stacklevel=3,
        )


#: The most voxels a tomogram may have after rescaling to a model's voxel size.
MAX_RESCALED_VOXELS = 2**31


def check_rescaled_shape(shape: tuple[int, ...], voxel_size_A: float, target_A: float) -> tuple[int, ...]:
    """The shape of a volume of ``shape`` voxels of ``voxel_size_A`` resampled to ``target_A``.

    Raises
    ------
    ValueError
        When the resampled volume would have an axis under 2 voxels or more than
        :data:`MAX_RESCALED_VOXELS` voxels: almost always a wrong voxel size (nm for Å…).
    """
    zoom = float(voxel_size_A) / float(target_A)
    new = tuple(int(round(n * zoom)) for n in shape)
    total = math.prod(new)
    if min(new) < 2 or total > MAX_RESCALED_VOXELS:
        raise ValueError(
            f"At a voxel size of {voxel_size_A:g} Å the {'×'.join(map(str, shape))} volume becomes "
            f"{'×'.join(map(str, new))} voxels at the model's {target_A:g} Å, which cannot be analysed; "
            "check the voxel size (in Å, not nm)."
        )
    return new
