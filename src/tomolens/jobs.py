"""The one job protocol for long work.

A long core function is a *generator*: it yields :class:`Progress` after every tile,
batch or epoch and ``return``\\ s its result.  Scripts and tests drain it with
:func:`run_job`; widgets run it through ``tomolens._widgets._runner.JobRunner``, which
stops it at the next yield when the user presses Cancel.

Example
-------
>>> def count(n):
...     for i in range(n):
...         yield Progress(i + 1, n, "counting")
...     return n
>>> run_job(count(3))
3
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    Attributes
    ----------
    done : int
        Steps finished so far (0 ≤ done ≤ total).
    total : int
        Steps in all; 0 when unknown.
    message : str
        What is being done, for a status line.
    info : dict or None
        Optional extra numbers (for example ``{"loss": 0.12}``) for live plots.
    """

    done: int
    total: int
    message: str = ""
    info: dict | None = None

    @property
    def fraction(self) -> float:
        """Fraction done in [0, 1]; 0 when the total is unknown."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


Job = Generator[Progress, None, T]


class JobCancelled(RuntimeError):
    """Raised by :func:`run_job` when its ``should_stop`` callback asks to stop."""


def run_job(
    job: Generator[Progress, None, T],
    on_progress: Callable[[Progress], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> T:
    """Drain a job generator and return its result.

    Parameters
    ----------
    job : generator
        A generator that yields :class:`Progress` and returns the result.
    on_progress : callable, optional
        Called with every :class:`Progress`.
    should_stop : callable, optional
        Checked after every yield; when it returns True the generator is closed
        (its ``finally`` blocks run) and :class:`JobCancelled` is raised.

    Returns
    -------
    object
        Whatever the generator returned.
    """
    try:
        while True:
            progress = next(job)
            if on_progress is not None:
                on_progress(progress)
            if should_stop is not None and should_stop():
                job.close()
                raise JobCancelled("The job was cancelled.")
    except StopIteration as stop:
        return stop.value


def log_progress(progress: Progress) -> None:
    """An ``on_progress`` callback for scripts and the CLI: log one line per step."""
    log.info("[%d/%d] %s", progress.done, progress.total, progress.message)


def relay(job: Generator[Progress, None, T], transform: Callable[[Progress], Progress]) -> Generator[Progress, None, T]:
    """Re-yield a sub-job's progress mapped by ``transform`` and return the sub-job's result.

    For a job made of sub-jobs: ``result = yield from relay(sub, lambda p: Progress(...))``
    puts the sub-job's steps on the outer job's scale or prefixes its messages.
    """
    try:
        while True:
            yield transform(next(job))
    except StopIteration as stop:
        return stop.value
