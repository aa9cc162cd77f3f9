"""Run a pipeline on one tomogram: resumable, logged, with a sidecar JSON written last.

Outputs of ``TOMO.mrc`` go to ``OUT/TOMO/``: each step's files, ``TOMO.log`` (this
tomogram's log, appended on every attempt) and ``TOMO.tomolens.json`` — the sidecar with
the tomolens version, the input file's size and time stamp, every step's settings, the
models' sha256 and the files written.  The sidecar is written last (atomically), so its
presence with a matching fingerprint means "finished": a rerun skips the tomogram.
A changed setting, model or input file changes the fingerprint and the tomogram runs again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tomolens import __version__
from tomolens.batch.pipeline import Pipeline
from tomolens.batch.registry import get_task
from tomolens.batch.steps import TomogramContext, model_identity
from tomolens.io.atomic import atomic_path
from tomolens.jobs import Progress, run_job

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".tomolens.json"


def output_folder(tomogram: str | os.PathLike, out_root: str | os.PathLike) -> Path:
    """``out_root / <tomogram stem>``."""
    return Path(out_root) / Path(tomogram).stem


def sidecar_path(tomogram: str | os.PathLike, out_root: str | os.PathLike) -> Path:
    """The done-marker of one tomogram: ``OUT/STEM/STEM.tomolens.json``."""
    stem = Path(tomogram).stem
    return output_folder(tomogram, out_root) / f"{stem}{SIDECAR_SUFFIX}"


def step_models(pipeline: Pipeline) -> list[dict[str, str]]:
    """Model name, sha256 and path per step (empty for steps without a model)."""
    out = []
    for step in pipeline.steps:
        names = {p.name: p for p in get_task(step.task).params()}
        if "model" in names:
            out.append(model_identity(str(step.params.get("model", names["model"].default))))
        else:
            out.append({})
    return out


def fingerprint(tomogram: str | os.PathLike, pipeline: Pipeline, models: list[dict[str, str]]) -> str:
    """sha256 of the settings, the models' sha256 and the input file's size and time stamp."""
    stat = Path(tomogram).stat()
    payload = {
        "pipeline": pipeline.fingerprint(),
        "models": [m.get("model_sha256", "") for m in models],
        "input": [stat.st_size, stat.st_mtime_ns],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def finished_record(tomogram: str | os.PathLike, out_root: str | os.PathLike, expected: str) -> dict | None:
    """The sidecar of a finished tomogram whose fingerprint is ``expected`` and files exist, else None."""
    path = sidecar_path(tomogram, out_root)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is unreadable; the tomogram runs again", path)
        return None
    if record.get("fingerprint") != expected:
        log.info("%s: settings, model or input changed since the last run; running again", Path(tomogram).name)
        return None
    files = [Path(f) for step in record.get("steps", []) for f in step.get("files", [])]
    missing = [f.name for f in files if not (path.parent / f).is_file()]
    if missing:
        log.info("%s: outputs %s are missing; running again", Path(tomogram).name, missing)
        return None
    return record


class _ThreadFilter(logging.Filter):
    """Pass only records logged by one thread (dask may run several tomograms per process)."""

    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.thread_id


@contextmanager
def tomogram_log(path: Path) -> Iterator[None]:
    """Append this thread's ``tomolens`` log records to ``path`` while the block runs."""
    logger = logging.getLogger("tomolens")
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThreadFilter(threading.get_ident()))
    handler.setLevel(logging.INFO)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        handler.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process_tomogram(
    tomogram: str | os.PathLike,
    pipeline: Pipeline,
    out_root: str | os.PathLike,
    force: bool = False,
    on_progress: Callable[[Progress], Any] | None = None,
) -> dict[str, Any]:
    """Run every step of ``pipeline`` on one tomogram (or skip it if already finished).

    Parameters
    ----------
    tomogram : path-like
        MRC tomogram.
    pipeline : Pipeline
    out_root : path-like
        Batch output folder; this tomogram's files go to ``out_root/<stem>/``.
    force : bool
        Run even if a matching sidecar says it is finished.
    on_progress : callable, optional
        Receives every step's :class:`~tomolens.jobs.Progress`.

    Returns
    -------
    dict
        The sidecar record; ``"status"`` is ``"done"`` or ``"skipped"``.

    Raises
    ------
    Exception
        Whatever a step raised (logged to the tomogram's log first); no sidecar is
        written, so the tomogram runs again next time.
    """
    tomogram = Path(tomogram).resolve()
    if not tomogram.is_file():
        raise FileNotFoundError(f"No such tomogram: {str(tomogram)!r}.")
    models = step_models(pipeline)
    expected = fingerprint(tomogram, pipeline, models)
    if not force:
        record = finished_record(tomogram, out_root, expected)
        if record is not None:
            return {**record, "status": "skipped"}
    folder = output_folder(tomogram, out_root)
    folder.mkdir(parents=True, exist_ok=True)
    stem = tomogram.stem
    started = time.perf_counter()
    with tomogram_log(folder / f"{stem}.log"):
        log.info(
            "=== %s: %d steps (%s), tomolens %s on %s",
            tomogram.name,
            len(pipeline.steps),
            " > ".join(s.task for s in pipeline.steps),
            __version__,
            platform.node(),
        )
        ctx = TomogramContext(tomogram, folder, stem, voxel_size_A=pipeline.voxel_size_A)
        ctx.provenance = {"tomolens_version": __version__, "input": str(tomogram), "steps": []}
        steps_done: list[dict[str, Any]] = []
        try:
            for step, model in zip(pipeline.steps, models):
                t0 = time.perf_counter()
                ctx.provenance["steps"].append({"task": step.task, "params": step.to_dict()["params"], **model})
                log.info("%s: %s %s", step.task, json.dumps(step.to_dict()["params"]), model.get("model_sha256", ""))
                output = run_job(get_task(step.task).runner()(ctx, step.params), on_progress=on_progress)
                steps_done.append(
                    {
                        **ctx.provenance["steps"][-1],
                        "files": [f.name for f in output.files],
                        "figures": output.figures,
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                )
                log.info("%s done in %.1f s: %s", step.task, time.perf_counter() - t0, output.figures)
        except Exception:
            log.exception("%s failed", tomogram.name)
            raise
        record = {
            "status": "done",
            "tomolens_version": __version__,
            "fingerprint": expected,
            "input": {"path": str(tomogram), "size": tomogram.stat().st_size},
            "voxel_size_A": ctx.voxel(),
            "pipeline": pipeline.to_dict(),
            "steps": steps_done,
            "finished": _now(),
            "seconds": round(time.perf_counter() - started, 3),
            "host": platform.node(),
        }
        with atomic_path(sidecar_path(tomogram, out_root)) as tmp:
            tmp.write_text(json.dumps(record, indent=2, default=str))
        log.info("finished %s in %.1f s", tomogram.name, record["seconds"])
    return record
