"""The one widget helper that runs a :mod:`tomolens.jobs` generator in a worker thread.

:class:`JobRunner` is a small magicgui container (Run / Cancel buttons, a determinate
progress bar, a status line).  ``start`` runs a job generator in a thread through
superqt's ``create_worker`` (the engine behind ``napari.qt.threading``): the progress bar
follows every :class:`~tomolens.jobs.Progress`, Cancel stops the job at its next yield
(no result is delivered, so no partial layers appear), errors become napari error
notifications, warnings become warning notifications, and the Run button is disabled
while the job runs.  Result handlers run on the GUI thread; a handler that is a generator
function is run one step per event-loop turn (each ``yield`` hands the GUI back, for example
between two layers, so that adding a result never blocks napari for the sum of its layers),
and the job counts as running until its last step.  An optional ``prepare`` function runs in the
worker on the job's result before it is delivered, so that work such as building napari layer
objects (:mod:`tomolens._widgets._layers`) stays off the GUI thread.  ``start_latest`` runs work
that follows a setting (re-applying thresholds) in the worker too: now, or after the running
job, keeping only the latest request.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from superqt.utils import create_worker

from tomolens.jobs import Progress

log = logging.getLogger(__name__)


def status_text(progress: Progress, stage_seconds: float) -> str:
    """The status line of a running job: its message, the step, the time in this stage and the time left.

    Parameters
    ----------
    progress : Progress
        The job's last step.
    stage_seconds : float
        Seconds since the stage began (a stage is a run of steps with one total).

    Returns
    -------
    str
        For example ``"predicting patches (2/5) · 12 s, about 18 s left"``; the time left is
        extrapolated from the stage's rate once a step is done.
    """
    text = f"{progress.message} ({progress.done}/{progress.total})" if progress.total else progress.message
    if stage_seconds < 1:
        return text
    text += f" · {stage_seconds:.0f} s"
    if 0 < progress.fraction < 1:
        left = stage_seconds * (1 - progress.fraction) / progress.fraction
        text += f", about {left:.0f} s left"
    return text


#: Modules napari imports lazily when the first layer of a kind is created (pandas with pyarrow for layer
#: features, scikit-image's colour and exposure helpers, scipy.linalg).  Imported on the GUI thread they froze the
#: window for about 0.4 s when a first result layer was added (docs/file_safety.md); every job's worker imports
#: them first, off the GUI thread, so the result's layers find them loaded.
LAZY_LAYER_MODULES = ("pandas", "pyarrow", "skimage.color", "skimage.exposure", "scipy.linalg")


def warm_layer_imports() -> None:
    """Import :data:`LAZY_LAYER_MODULES` that are not loaded yet and fill vispy's dash-pattern cache.

    Runs in the calling thread (a job's worker); missing modules are skipped.  The first line visual of a
    session (the polygon overlay napari creates with the first Labels layer) computes vispy's 13 dash patterns
    in Python loops, 0.08-0.12 s on the development machine; they are cached per process (``lru_cache``), so
    building one ``DashAtlas`` here (numpy only, no OpenGL) takes that off the GUI thread.
    """
    for name in LAZY_LAYER_MODULES:
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                log.debug("%s is not installed: nothing to import ahead", name)
    try:
        from vispy.visuals.line.dash_atlas import DashAtlas
    except ImportError:  # another vispy layout: nothing to fill ahead
        log.debug("vispy has no DashAtlas here: no dash patterns to build ahead")
        return
    DashAtlas()


def computing(message: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Generator[Progress, None, Any]:
    """A one-step job: ``function(*args, **kwargs)`` run in the worker, with ``message`` as its progress text."""
    yield Progress(0, 1, message)
    result = function(*args, **kwargs)
    yield Progress(1, 1, message)
    return result


def _closing(
    job: Generator[Progress, None, Any], prepare: Callable[[Any], Any] | None = None
) -> Generator[Progress, None, Any]:
    """Delegate to ``job`` (after :func:`warm_layer_imports`), then ``prepare`` its result, in the worker.

    The job is closed when the worker stops early (Cancel)."""
    try:
        warm_layer_imports()
        result = yield from job
    finally:
        job.close()
    return result if prepare is None else prepare(result)


class JobRunner(Container):
    """Run / Cancel buttons, a progress bar and a status line for one task.

    Parameters
    ----------
    run_text : str
        Label of the Run button (for example "Detect particles").
    title : str
        Name used in notifications ("Detection failed: …").
    """

    def __init__(self, run_text: str = "Run", title: str | None = None) -> None:
        self.title = title or run_text
        self.run_button = PushButton(text=run_text, tooltip=f"Start: {run_text.lower()}")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="Stop after the current tile, batch or epoch"
        )
        self.progress = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="Ready")
        self.status.native.setWordWrap(True)  # the whole message, on two lines in a narrow dock
        # the status line moves every second while a step runs (time in the stage, time left)
        self._clock = QTimer()
        self._clock.setInterval(1000)
        self._clock.timeout.connect(self._tick)
        self._stage_start = time.monotonic()
        buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False)
        super().__init__(widgets=[buttons, self.progress, self.status], labels=False)
        self.worker = None
        self.last_progress: Progress | None = None
        self._queued: tuple | None = None
        self.cancel_button.changed.connect(self.cancel)

    def _tick(self) -> None:
        if self.worker is not None and self.last_progress is not None:
            self.status.value = status_text(self.last_progress, time.monotonic() - self._stage_start)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def cancel(self) -> None:
        """Ask the running job to stop at its next yield."""
        self._queued = None
        if self.worker is not None:
            self._clock.stop()
            self.status.value = "Cancelling…"
            self.worker.quit()

    def start_latest(
        self,
        make_job: Callable[[], Generator[Progress, None, Any]],
        on_result: Callable[[Any], Iterator[None] | None],
        prepare: Callable[[Any], Any] | None = None,
    ) -> None:
        """Start a job now or, if one is running, as soon as it ends; only the latest waiting request is kept.

        For work that follows a setting (re-applying thresholds to kept maps): dragging a value
        through many steps computes the one it ends on, in the worker, never on the GUI thread.
        ``make_job`` is called when the job starts, so it sees the state left by the job before it
        (for example a new result).  Cancel drops the waiting request.
        """
        self._queued = (make_job, on_result, prepare)
        if self.worker is None:
            self._start_queued()

    def _start_queued(self) -> None:
        if self._queued is None or self.worker is not None:
            return
        make_job, on_result, prepare = self._queued
        self._queued = None
        self.start(make_job(), on_result, prepare=prepare)

    def start(
        self,
        job: Generator[Progress, None, Any],
        on_result: Callable[[Any], Iterator[None] | None],
        on_progress: Callable[[Progress], None] | None = None,
        on_finish: Callable[[], None] | None = None,
        prepare: Callable[[Any], Any] | None = None,
    ):
        """Run ``job`` in a worker thread.

        Parameters
        ----------
        job : generator
            A job generator (already created; its body runs in the worker).  Snapshot
            any layer data on the GUI thread before creating it.
        on_result : callable
            Called on the GUI thread with the job's return value, only if it finished.  If it
            returns an iterator (a generator function), the iterator is advanced one step per
            event-loop turn, and the job ends after its last step.
        on_progress : callable, optional
            Called on the GUI thread with each Progress (live plots).
        on_finish : callable, optional
            Called on the GUI thread when the job ends in any way.
        prepare : callable, optional
            Called in the worker thread with the job's return value once the job has finished;
            what it returns is given to ``on_result`` instead (for example the result together
            with the napari layer objects built from it).  Its errors are reported like the job's.

        Returns
        -------
        superqt GeneratorWorker
        """
        if self.worker is not None:
            show_warning(f"{self.title} is already running; wait for it or press Cancel.")
            return None
        worker = create_worker(_closing, job, prepare, _start_thread=False, _ignore_errors=True)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = "Starting…"
        self.last_progress = None
        self._stage_start = time.monotonic()
        self._clock.start()

        def _yielded(progress: Progress) -> None:
            last = self.last_progress
            if last is not None and (last.total != progress.total or progress.done < last.done):
                self._stage_start = time.monotonic()  # a new stage: its own clock
            self.last_progress = progress
            self.progress.value = int(round(1000 * progress.fraction))
            self.status.value = status_text(progress, time.monotonic() - self._stage_start)
            if on_progress is not None:
                on_progress(progress)

        staged: dict[str, Any] = {"steps": None, "finished": False}

        def _show_failed(exc: Exception) -> None:
            log.exception("%s: showing the result failed", self.title)
            show_error(f"{self.title}: could not show the result: {exc}")
            self.status.value = f"Failed: {exc}"

        def _next_step() -> None:
            try:
                next(staged["steps"])
            except StopIteration:
                staged["steps"] = None
            except Exception as exc:  # shown to the user, logged with traceback
                staged["steps"] = None
                _show_failed(exc)
            if staged["steps"] is not None:  # a 1 ms timer, not 0: pending timers and paints run first
                QTimer.singleShot(1, _next_step)
            elif staged["finished"]:
                _finished()

        def _returned(result: Any) -> None:
            self._clock.stop()
            self.progress.value = 1000
            self.status.value = "Done"
            try:
                steps = on_result(result)
            except Exception as exc:  # shown to the user, logged with traceback
                _show_failed(exc)
                return
            if isinstance(steps, Iterator):
                staged["steps"] = steps
                QTimer.singleShot(1, _next_step)

        def _errored(exc: BaseException) -> None:
            self._clock.stop()
            log.warning("%s failed: %s", self.title, exc, exc_info=(type(exc), exc, exc.__traceback__))
            self.status.value = f"Failed: {exc}"
            show_error(f"{self.title} failed: {exc}")

        def _aborted() -> None:
            self._clock.stop()
            self.status.value = "Cancelled"
            show_info(f"{self.title} cancelled.")

        def _warned(args: tuple) -> None:
            show_warning(str(args[0]))

        def _finished() -> None:
            self._clock.stop()
            staged["finished"] = True
            if staged["steps"] is not None:
                return  # the result is still being shown; finish after its last step
            self.worker = None
            self.run_button.enabled = True
            self.cancel_button.enabled = False
            if on_finish is not None:
                on_finish()
            self._start_queued()  # a request made while this job ran

        worker.yielded.connect(_yielded)
        worker.returned.connect(_returned)
        worker.errored.connect(_errored)
        worker.aborted.connect(_aborted)
        worker.warned.connect(_warned)
        worker.finished.connect(_finished)
        worker.start()
        return worker
