"""Headless batch processing: one pipeline preset, many tomograms, resumable, on dask if wanted.

- :func:`load_pipeline` reads a batch preset (JSON/YAML) or a widget's single-task preset;
- :func:`run_batch` runs it on files, folders or glob patterns, in-process or on a
  dask.distributed cluster, skipping finished tomograms and retrying failed ones once;
- :func:`process_tomogram` runs it on one tomogram (what each dask task does).

The CLI is ``tomolens batch PRESET TOMOGRAMS… --out DIR [--scheduler local:N|tcp://…]``.
"""

from tomolens.batch.pipeline import Pipeline, Step, load_pipeline, make_step, pipeline_from_dict, save_pipeline
from tomolens.batch.process import process_tomogram, sidecar_path
from tomolens.batch.registry import TASKS, TaskSpec, get_task
from tomolens.batch.run import BatchInterrupted, BatchSummary, TomogramResult, find_tomograms, run_batch

__all__ = [
    "TASKS",
    "BatchInterrupted",
    "BatchSummary",
    "Pipeline",
    "Step",
    "TaskSpec",
    "TomogramResult",
    "find_tomograms",
    "get_task",
    "load_pipeline",
    "make_step",
    "pipeline_from_dict",
    "process_tomogram",
    "run_batch",
    "save_pipeline",
    "sidecar_path",
]
