"""Run a pipeline over many tomograms: in-process, or on a dask.distributed cluster.

``scheduler`` chooses where the tomograms run:

- ``None`` / ``""``: one after the other in this process;
- ``"local:N"``: a ``distributed.LocalCluster(n_workers=N, threads_per_worker=1)``
  started for this batch (one process per worker);
- ``"tcp://host:port"`` (or any address a ``distributed.Client`` accepts): an existing
  scheduler, e.g. one started by dask-jobqueue on SLURM;
- a ``distributed.Client``: used as is (tests pass one with ``processes=False``).

A tomogram that fails is logged, reported and tried again once (``retries``) — unless the
error is the input's fault (:func:`is_input_error`: a ``ValueError`` such as a constant volume,
NaNs, a bad coordinate file), which would fail again the same way; the summary says which were
not retried and why.  The batch carries on with the others.  Finished tomograms are skipped
(:func:`tomolens.batch.process.process_tomogram`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tomolens.batch.pipeline import Pipeline
from tomolens.batch.process import finished_record, fingerprint, process_tomogram, step_models
from tomolens.io.atomic import atomic_path
from tomolens.io.checks import tomogram_voxel_size

log = logging.getLogger(__name__)

TOMOGRAM_EXTENSIONS = (".mrc", ".rec", ".map")


class BatchInterrupted(RuntimeError):
    """Raised when ``should_stop`` asks a sequential batch to stop between tomograms."""


@dataclass
class TomogramResult:
    """One row of the batch summary."""

    tomogram: str
    status: str  # "done", "skipped" or "failed"
    attempts: int = 0
    seconds: float = 0.0
    particles: int | None = None
    error: str = ""
    not_retried: str = ""  # why a failure was not tried again (empty: retried, or no retry left)


@dataclass
class BatchSummary:
    """Every tomogram's result, in input order."""

    results: list[TomogramResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[TomogramResult]:
        return [r for r in self.results if r.status == "failed"]

    def table(self) -> str:
        """A plain-text table: tomogram, status, attempts, seconds, particles, error."""
        rows = [("tomogram", "status", "tries", "seconds", "particles", "error")]
        for r in self.results:
            rows.append(
                (
                    r.tomogram,
                    r.status,
                    str(r.attempts),
                    f"{r.seconds:.1f}",
                    "" if r.particles is None else str(r.particles),
                    r.error[:60],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(
            f"{self.count('done')} done, {self.count('skipped')} skipped (already finished), "
            f"{self.count('failed')} failed"
        )
        for r in self.results:
            if r.not_retried:
                lines.append(f"{r.tomogram}: not retried: {r.not_retried}")
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the summary as JSON, atomically."""
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps([asdict(r) for r in self.results], indent=2))
        return Path(path)


def find_tomograms(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (their ``.mrc/.rec/.map`` files) and glob patterns, in order, once each.

    Raises
    ------
    ValueError
        If an input matches nothing, or two tomograms share a name stem (their outputs
        would collide).
    """
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in TOMOGRAM_EXTENSIONS and p.is_file())
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)) if Path(p).is_file())
        else:
            raise ValueError(f"No such tomogram, folder or pattern: {text!r}.")
        if not matches:
            raise ValueError(f"{text!r} holds no tomograms ({', '.join(TOMOGRAM_EXTENSIONS)}).")
        found.extend(m.resolve() for m in matches)
    unique = list(dict.fromkeys(found))
    stems: dict[str, Path] = {}
    for p in unique:
        if p.stem in stems:
            raise ValueError(
                f"Two tomograms are named {p.stem!r} ({stems[p.stem]} and {p}); their outputs would "
                "collide. Rename one or run them in separate batches."
            )
        stems[p.stem] = p
    return unique


def check_voxel_sizes(paths: Sequence[Path], pipeline: Pipeline) -> None:
    """Refuse, before any work, a batch in which a tomogram's voxel size is unknown.

    Every pipeline step with a model needs it; neither the preset's ``voxel_size_A`` nor the
    header (0 or 1 Å) gives it.  Only headers are read; files that cannot be read are left to
    the run, which reports them per tomogram.

    Raises
    ------
    ValueError
        Naming the first such tomogram (and how many more) and saying to pass ``--voxel-size-A``.
    """
    from tomolens.io.mrc import read_mrc

    if pipeline.voxel_size_A or not any(step_models(pipeline)):
        return
    unknown: list[tuple[Path, ValueError]] = []
    for path in paths:
        try:
            with warnings.catch_warnings():  # the refusal below says it once, for every file
                warnings.simplefilter("ignore", UserWarning)
                header_A = read_mrc(path, check_finite=False).voxel_size_A
        except (OSError, ValueError):
            continue
        try:
            tomogram_voxel_size(None, header_A, path)
        except ValueError as err:
            unknown.append((path, err))
    if unknown:
        more = f" Also {', '.join(p.name for p, _ in unknown[1:])}." if len(unknown) > 1 else ""
        raise ValueError(f"{unknown[0][1]}{more} Nothing was run.")


def _result(path: Path, record: dict[str, Any], attempts: int) -> TomogramResult:
    particles = None
    for step in record.get("steps", []):
        figures = step.get("figures", {})
        for key in ("exported", "particles"):
            if key in figures:
                particles = int(figures[key])
    tries = 0 if record["status"] == "skipped" else attempts
    return TomogramResult(path.name, record["status"], tries, float(record.get("seconds", 0.0)), particles)


def is_input_error(err: BaseException) -> bool:
    """Whether a failure is the input's (or the settings') fault, so that a retry would fail the same way.

    tomolens raises ``ValueError`` — and its subclasses :class:`~tomolens.io.mrc.MrcReadError`,
    :class:`~tomolens.io.coords.CoordinateFileError`, :class:`~tomolens.models.card.ModelFileError` … — for bad
    input: a constant volume, NaN voxels, a box larger than the tomogram, a malformed file.  Anything else (an
    ``OSError`` of a network file system, memory, a lost dask worker) may pass on a second try.
    """
    return isinstance(err, ValueError)


def _failure(path: Path, err: BaseException, attempts: int, retries: int = 0) -> TomogramResult:
    skipped = is_input_error(err) and attempts <= retries
    why = f"{type(err).__name__} is the input's fault (fix it and run again)" if skipped else ""
    return TomogramResult(path.name, "failed", attempts, 0.0, None, f"{type(err).__name__}: {err}", why)


def _open_client(scheduler: Any, stack: ExitStack):
    """A ``distributed.Client`` for ``scheduler`` (closed with ``stack``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as err:
        raise ValueError("--scheduler needs dask.distributed: pip install 'napari-tomolens[dask]'.") from err
    if isinstance(scheduler, Client):
        return scheduler
    text = str(scheduler)
    if text.startswith("local:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError as err:
            raise ValueError(f"--scheduler {text!r}: write local:N with N workers, e.g. local:2.") from err
        if n < 1:
            raise ValueError(f"--scheduler {text!r}: N must be at least 1.")
        cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, dashboard_address=None))
        return stack.enter_context(Client(cluster))
    return stack.enter_context(Client(text))


def run_batch(
    pipeline: Pipeline,
    tomograms: Sequence[str | os.PathLike],
    out_root: str | os.PathLike,
    scheduler: Any = None,
    retries: int = 1,
    force: bool = False,
    progress: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> BatchSummary:
    """Run ``pipeline`` on every tomogram; never stops for one tomogram's failure.

    Parameters
    ----------
    pipeline : Pipeline
    tomograms : sequence of path-like
        Files, folders or glob patterns (:func:`find_tomograms`).
    out_root : path-like
        Output folder (created); one sub-folder per tomogram, plus ``batch_summary.json``.
    scheduler : None, str or distributed.Client
        See the module docstring.
    retries : int
        Extra attempts for a tomogram that failed.
    force : bool
        Re-run tomograms already finished with the same settings.
    progress : bool
        Show a tqdm progress bar (on stderr, when it is a terminal).
    should_stop : callable, optional
        Checked between tomograms (in-process runs): True raises :class:`BatchInterrupted`.

    Returns
    -------
    BatchSummary
    """
    from tqdm.auto import tqdm

    paths = find_tomograms(tomograms)
    check_voxel_sizes(paths, pipeline)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    results: dict[Path, TomogramResult] = {}
    # disable=None: no bar when stderr is not a terminal (a log file gets the log lines only)
    bar = tqdm(total=len(paths), unit="tomo", desc="tomolens batch", disable=None if progress else True)

    def finish(path: Path, result: TomogramResult) -> None:
        results[path] = result
        if result.status == "failed":
            tries = f"{result.attempts} attempt{'s' if result.attempts != 1 else ''}"
            log.error("%s failed after %s: %s", path.name, tries, result.error)
        bar.set_postfix_str(f"{path.name}: {result.status}")
        bar.update(1)

    todo = list(paths)
    if not force:
        models = step_models(pipeline)
        todo = []
        for path in paths:
            record = finished_record(path, out_root, fingerprint(path, pipeline, models))
            if record is None:
                todo.append(path)
            else:
                finish(path, _result(path, {**record, "status": "skipped"}, 0))
        log.info("%d tomograms finished earlier (skipped), %d to run", len(paths) - len(todo), len(todo))
    with ExitStack() as stack:
        stack.callback(bar.close)
        if not todo:
            pass
        elif not scheduler:
            for path in todo:
                if should_stop is not None and should_stop():
                    raise BatchInterrupted(f"Stopped after {len(results)} of {len(paths)} tomograms.")
                for attempt in range(1, retries + 2):
                    try:
                        record = process_tomogram(path, pipeline, out_root, force=force)
                    except Exception as err:  # reported in the summary; the batch goes on
                        log.warning("%s: attempt %d failed: %s", path.name, attempt, err)
                        if attempt == retries + 1 or is_input_error(err):
                            finish(path, _failure(path, err, attempt, retries))
                            break
                    else:
                        finish(path, _result(path, record, attempt))
                        break
        else:
            _run_distributed(_open_client(scheduler, stack), todo, pipeline, out_root, retries, force, finish)
    summary = BatchSummary([results[p] for p in paths])
    summary.save(out_root / "batch_summary.json")
    return summary


def _run_distributed(client, paths, pipeline, out_root, retries, force, finish) -> None:
    from distributed import as_completed

    log.info("running %d tomograms on %s", len(paths), client)
    attempts: dict[Path, int] = {}
    owner: dict[str, Path] = {}

    def submit(path: Path):
        attempts[path] = attempts.get(path, 0) + 1
        future = client.submit(
            process_tomogram,
            str(path),
            pipeline,
            str(out_root),
            force,
            pure=False,
            key=f"tomolens-{path.stem}-try{attempts[path]}",
        )
        owner[future.key] = path
        return future

    queue = as_completed([submit(p) for p in paths])
    for future in queue:
        path = owner[future.key]
        if future.status == "finished":
            finish(path, _result(path, future.result(), attempts[path]))
            continue
        err = future.exception() if future.status == "error" else RuntimeError(f"dask task {future.status}")
        log.warning("%s: attempt %d failed: %s", path.name, attempts[path], err)
        if attempts[path] <= retries and not is_input_error(err):
            queue.add(submit(path))
        else:
            finish(path, _failure(path, err, attempts[path], retries))
