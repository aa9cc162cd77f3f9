"""How the ``tomolens`` commands show a job's progress: one place for every command.

:func:`run_cli_job` drains a :mod:`tomolens.jobs` generator like :func:`~tomolens.jobs.run_job`
and shows its :class:`~tomolens.jobs.Progress`

- on a terminal (stderr is a TTY): a tqdm progress bar on stderr with the step's message, the
  rate and the time left; a new bar starts when a stage with another total begins (for
  example "polarity" then "predicting patches"); epoch lines of trainings are printed above
  the bar;
- otherwise (a log file, a pipe, a batch system): one plain log line per step, no control
  characters;
- with ``tomolens --quiet`` (the ``tomolens`` logger above INFO): nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Generator
from typing import IO, TypeVar

from tomolens.jobs import Progress, log_progress, run_job

log = logging.getLogger("tomolens")

T = TypeVar("T")

#: Longest step message shown left of the bar (the bar keeps the rest of the line).
MESSAGE_CHARS = 40


def progress_is_quiet() -> bool:
    """True when ``tomolens --quiet`` (or a caller) raised the ``tomolens`` logger above INFO."""
    return not log.isEnabledFor(logging.INFO)


class ProgressDisplay:
    """An ``on_progress`` callback that draws a bar on a terminal and logs lines elsewhere.

    Parameters
    ----------
    line : callable, optional
        Turns a Progress into an extra text line (an epoch's loss), or None for no line.
    stream : file, optional
        Where the bar goes (default ``sys.stderr``); its ``isatty()`` chooses bar or log lines.
    """

    def __init__(self, line: Callable[[Progress], str | None] | None = None, stream: IO[str] | None = None) -> None:
        self.line = line
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = progress_is_quiet()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None

    def __call__(self, progress: Progress) -> None:
        if self.quiet:
            return
        text = self.line(progress) if self.line is not None else None
        if not self.tty:
            if text:
                print(text, flush=True)
            else:
                log_progress(progress)
            return
        self._draw(progress, text)

    def _draw(self, progress: Progress, text: str | None) -> None:
        from tqdm import tqdm

        total = progress.total if progress.total > 0 else None
        message = progress.message
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 1] + "…"
        if self._bar is None or self._bar.total != total or progress.done < self._bar.n:
            self.close()
            self._bar = tqdm(
                total=total,
                desc=message,
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate_fmt}]"
                if total
                else None,
            )
        self._bar.set_description_str(message, refresh=False)
        if text:
            self._bar.write(text, file=sys.stdout)  # above the bar, where the lines go without a terminal
        self._bar.update(progress.done - self._bar.n)
        if total and progress.done >= total:
            self._bar.refresh()  # the last step of a stage, even within tqdm's refresh interval

    def close(self) -> None:
        """Remove the bar from the terminal (the next stage starts a new one)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def run_cli_job(
    job: Generator[Progress, None, T],
    line: Callable[[Progress], str | None] | None = None,
    stream: IO[str] | None = None,
) -> T:
    """Run ``job`` for a command, showing its progress as described in the module docstring.

    Parameters
    ----------
    job : generator
        A job generator (yields Progress, returns the result).
    line : callable, optional
        Extra text per step (for example an epoch's losses from ``Progress.info``); None for none.
    stream : file, optional
        Where the bar goes (default ``sys.stderr``); text lines go to stdout.

    Returns
    -------
    object
        What the job returned.
    """
    display = ProgressDisplay(line, stream)
    if display.quiet or not display.tty:
        return run_job(job, on_progress=display)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():  # log lines above the bar, not through it
            return run_job(job, on_progress=display)
    finally:
        display.close()
