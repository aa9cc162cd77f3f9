"""Atomic writes: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _final_mode(target: Path) -> int:
    """The permission bits ``target`` should get: the old file's, else 0666 minus the umask."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    If the body raises, the temporary file is removed and ``path`` is left as it
    was, so a failed write never leaves a half-written file nor destroys a good one.

    Raises
    ------
    PermissionError, FileNotFoundError
        With a message naming the folder when it cannot be written.
    """
    target = Path(path).expanduser().resolve()
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot write {target.name!r}: the folder {str(folder)!r} does not exist. "
            "Create it or choose another location."
        )
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except PermissionError as err:
        raise PermissionError(
            f"Cannot write to {str(folder)!r}: permission denied. "
            "Choose a folder you can write to."
        ) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the mode a plain open() would
        # (or the replaced file's), so exports stay readable by the group as usual.
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
