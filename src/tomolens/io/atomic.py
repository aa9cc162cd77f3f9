"""Atomic writes: write to a temporary file beside the target, fsync, then rename.

What a write guarantees:

- the target is either the old file or the complete new one, also after a crash or power
  loss (the data and the folder entry are flushed with ``fsync`` before and after the rename);
- a failed or interrupted write (an exception, Ctrl-C; SIGTERM where
  :func:`install_sigterm_cleanup` was called, as the ``tomolens`` command does) removes its
  temporary file;
- temporary files left by a process that was killed (SIGKILL) are removed by the next
  write beside the same target (they carry the writer's process id);
- a read-only target is refused, as ``cp`` would, instead of being replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Temporary files being written by this process (removed by the SIGTERM handler).
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


def _final_mode(target: Path) -> int:
    """The permission bits ``target`` should get: the old file's, else 0666 minus the umask."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised in a subprocess test
    """Remove the temporary files being written, then terminate as SIGTERM would."""
    with _ACTIVE_LOCK:
        for tmp in list(_ACTIVE):
            with contextlib.suppress(OSError):
                tmp.unlink()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_sigterm_cleanup() -> bool:
    """Make SIGTERM remove our temporary files before the process ends.

    The ``tomolens`` command installs it at start; scripts may call it too.  It is not
    installed inside napari: a Python signal handler runs only when the main thread runs
    Python code, which an idle Qt event loop may not do for a long time (a temporary file
    left by a killed napari is removed by the next write beside the same target).
    Installed only from the main thread and only over the default action, so a handler
    set by the application or a test runner is left alone.  Returns whether the handler
    is in place.
    """
    if threading.current_thread() is not threading.main_thread():
        return signal.getsignal(signal.SIGTERM) is _on_sigterm
    current = signal.getsignal(signal.SIGTERM)
    if current is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
        return True
    return current is _on_sigterm


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporary files of ours beside ``target`` whose writer process has died.

    Our temporary names are ``.NAME.PID.RANDOM.tmp``; files of live processes (including
    this one) are kept.
    """
    removed = []
    prefix = f".{target.name}."
    for candidate in target.parent.glob(f".{_glob_escape(target.name)}.*.tmp"):
        middle = candidate.name[len(prefix) : -len(".tmp")]
        pid_text, _, rest = middle.partition(".")
        if not pid_text.isdigit() or not rest or (pid := int(pid_text)) == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            candidate.unlink()
            removed.append(candidate)
            log.info("removed %s, left by an interrupted write", candidate)
    return removed


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot open or sync folders
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; fsync it and rename it onto ``path`` on success.

    If the body raises (or Ctrl-C / SIGTERM arrives), the temporary file is removed and
    ``path`` is left as it was, so a failed write never leaves a half-written file nor
    destroys a good one.

    Raises
    ------
    PermissionError, FileNotFoundError, IsADirectoryError
        With a message naming the folder or file when it cannot be written (a missing or
        read-only folder, a folder at ``path``, a read-only file at ``path``).
    """
    target = check_writable_target(path)
    folder = target.parent
    remove_stale_temporaries(target)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    except PermissionError as err:
        raise PermissionError(
            f"Cannot write to {str(folder)!r}: permission denied. Choose a folder you can write to."
        ) from err
    os.close(fd)
    tmp = Path(tmp_name)
    with _ACTIVE_LOCK:
        _ACTIVE.add(tmp)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the mode a plain open() would
        # (or the replaced file's), so exports stay readable by the group as usual.
        os.chmod(tmp, _final_mode(target))
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_folder(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)


def _may_write(target: Path) -> bool:
    """Whether ``target``'s permissions let us write it; the owner's write bit decides for its
    owner, as ``cp`` does, also for root (which ``os.access`` would always allow)."""
    info = target.stat()
    if info.st_uid == os.geteuid():
        return bool(info.st_mode & stat.S_IWUSR)
    return os.access(target, os.W_OK)


def check_writable_target(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` can be written: its folder exists and is
    writable, and ``path`` is not a folder nor a read-only file.

    Returns
    -------
    pathlib.Path
        The resolved path.

    Raises
    ------
    FileNotFoundError, PermissionError, IsADirectoryError
        With a message saying what to change.
    """
    target = Path(path).expanduser().resolve()
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot write {target.name!r}: the folder {str(folder)!r} does not exist. "
            "Create it or choose another location."
        )
    if target.is_dir():
        raise IsADirectoryError(f"Cannot write {str(target)!r}: a folder of that name exists.")
    if target.exists() and not _may_write(target):
        raise PermissionError(
            f"Cannot write {str(target)!r}: the file is read-only. Make it writable (chmod u+w) or choose another name."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write to {str(folder)!r}: permission denied. Choose a folder you can write to.")
    return target
