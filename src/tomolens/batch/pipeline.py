"""Batch presets: the pipeline run on every tomogram.

A batch preset is a JSON (or YAML) file::

    {
      "task": "batch",
      "voxel_size_A": null,
      "pipeline": [
        {"task": "detect", "preset": "detect_preset.json", "params": {"mask_threshold": 0.6}},
        {"task": "classify", "params": {"model": "classify_phantoms_resnet"}},
        {"task": "export", "params": {"format": "star", "star_form": "centred"}}
      ]
    }

Each step names a task (:data:`tomolens.batch.registry.TASKS`), optionally a widget
preset file (``"preset"``, relative to the batch preset's folder) and settings that
override it (``"params"``).  A single-task preset saved from a widget
(``{"task": "detect", "params": {...}}``) is also accepted: it becomes a one-step
pipeline.  Settings are checked against the capability's ``PARAMS`` when the preset is
loaded, so a typo fails before any tomogram is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomolens.batch.registry import get_task
from tomolens.io.atomic import atomic_path
from tomolens.params import load_preset, validate_values


@dataclass(frozen=True)
class Step:
    """One pipeline step: a task and the settings the preset gives (only those)."""

    task: str
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in self.params.items()},
        }


@dataclass(frozen=True)
class Pipeline:
    """The steps run on every tomogram, and batch-wide settings."""

    steps: tuple[Step, ...]
    voxel_size_A: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": "batch", "voxel_size_A": self.voxel_size_A, "pipeline": [s.to_dict() for s in self.steps]}

    def fingerprint(self) -> str:
        """sha256 of the canonical settings (a changed setting means "run again")."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def _read_mapping(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        payload = yaml.safe_load(text)
    else:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path.name} is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path.name} is not a tomolens preset (expected a mapping with 'task').")
    return payload


def make_step(task: str, params: dict[str, Any] | None = None) -> Step:
    """A checked :class:`Step`: unknown setting names and bad values raise ValueError."""
    spec = get_task(task)
    params = dict(params or {})
    checked = validate_values(params, spec.params())
    return Step(task, {k: checked[k] for k in params})


def pipeline_from_dict(payload: dict[str, Any], base_dir: str | os.PathLike = ".") -> Pipeline:
    """Build a :class:`Pipeline` from a batch preset's contents (see the module docstring).

    Raises
    ------
    ValueError
        Naming the step and what is wrong with it.
    """
    base_dir = Path(base_dir)
    task = payload.get("task", "batch")
    if task != "batch":
        if "pipeline" in payload:
            raise ValueError(f"A preset with a 'pipeline' must have task 'batch', not {task!r}.")
        return Pipeline((make_step(task, payload.get("params", {})),), payload.get("voxel_size_A"))
    raw_steps = payload.get("pipeline")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ValueError(
            'A batch preset needs a non-empty \'pipeline\' list of steps ({"task": "detect", "params": {...}}).'
        )
    steps: list[Step] = []
    has_particles = False
    for i, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or "task" not in raw:
            raise ValueError(f"Pipeline step {i} must be a mapping with a 'task'; got {raw!r}.")
        unknown = sorted(set(raw) - {"task", "params", "preset"})
        if unknown:
            raise ValueError(f"Pipeline step {i} ({raw['task']}): unknown keys {unknown}; use task, preset, params.")
        params: dict[str, Any] = {}
        if raw.get("preset"):
            preset_path = Path(raw["preset"])
            preset_path = preset_path if preset_path.is_absolute() else base_dir / preset_path
            preset_task, params = load_preset(preset_path)
            if preset_task not in ("", "custom", raw["task"]):
                raise ValueError(
                    f"Pipeline step {i}: {preset_path.name} is a {preset_task!r} preset, not {raw['task']!r}."
                )
        params.update(raw.get("params") or {})
        try:
            step = make_step(str(raw["task"]), params)
        except ValueError as err:
            raise ValueError(f"Pipeline step {i} ({raw['task']}): {err}") from err
        if get_task(step.task).needs_particles and not has_particles:
            raise ValueError(f"Pipeline step {i} ({step.task}) needs particles: put a 'detect' step before it.")
        has_particles = has_particles or step.task == "detect"
        steps.append(step)
    vs = payload.get("voxel_size_A")
    if vs is not None and not float(vs) > 0:
        raise ValueError(f"voxel_size_A must be positive (or null to use the headers); got {vs}.")
    return Pipeline(tuple(steps), float(vs) if vs is not None else None)


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Read a batch preset (or a single-task widget preset) from JSON/YAML."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"No such preset file: {str(path)!r}.")
    return pipeline_from_dict(_read_mapping(path), path.parent)


def save_pipeline(path: str | os.PathLike, pipeline: Pipeline) -> Path:
    """Write a batch preset as JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(pipeline.to_dict(), indent=2))
    return Path(path)
