"""The tasks a batch pipeline can run, and where each one's shared settings live.

Every task names the capability's ``PARAMS`` tuple (the one definition that its CLI
command and its dock widget are built from), the function that runs it on one
tomogram inside a batch, and — for the parity test — its ``tomolens`` sub-command and
dock widget.  Everything is referenced by import path and imported lazily, so this
module is light and a capability that has not landed yet simply reports itself as
unavailable.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tomolens.params import Param


def import_object(ref: str) -> Any:
    """Import ``"package.module:attribute"``.

    Raises
    ------
    ImportError
        If the module or the attribute does not exist (yet).
    """
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ImportError(f"{module_name} has no {attr!r}") from err


@dataclass(frozen=True)
class TaskSpec:
    """One pipeline task.

    Attributes
    ----------
    name : str
        Task name used in presets (``{"task": name, "params": {...}}``).
    params_ref : str
        Import path of the capability's ``PARAMS`` tuple.
    run_ref : str
        Import path of the batch step ``run(context, params) -> job``.
    summary : str
        One line for ``tomolens batch --help`` and the README.
    cli_command : str or None
        ``tomolens`` sub-command built from the same ``PARAMS``.
    widget_ref : str or None
        Import path of the dock widget built from the same ``PARAMS``.
    widget_outside_panel : dict
        Parameters the widget shows with its own control instead of a ``ParamPanel``
        control, mapped to that control's attribute name (for example the detection
        widget's model chooser).
    needs_particles : bool
        The step works on particles found by an earlier step.
    """

    name: str
    params_ref: str
    run_ref: str
    summary: str
    cli_command: str | None = None
    widget_ref: str | None = None
    widget_outside_panel: dict[str, str] = field(default_factory=dict)
    needs_particles: bool = False

    def params(self) -> tuple[Param, ...]:
        """The task's parameters (imports the capability)."""
        return tuple(import_object(self.params_ref))

    def runner(self):
        """The batch step function (imports the capability)."""
        return import_object(self.run_ref)

    def available(self) -> tuple[bool, str]:
        """(True, "") when the capability has landed, else (False, why not)."""
        try:
            self.params()
            self.runner()
        except ImportError as err:
            return False, f"{self.name}: not available ({err})"
        return True, ""


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "detect", "tomolens.detect.detector:DETECT_PARAMS", "tomolens.batch.steps:run_detect",
            "detect particles: STEM_instances.mrc + STEM_detected.star",
            cli_command="detect", widget_ref="tomolens._widgets.detect:DetectWidget",
            widget_outside_panel={"model": "model_choice"},
        ),
        TaskSpec(
            "classify", "tomolens.classify.predict:CLASSIFY_PARAMS", "tomolens.batch.steps:run_classify",
            "classify the particles: class, prob_<class>, confidence columns → STEM_classified.star",
            cli_command="classify", widget_ref="tomolens._widgets.classify:ClassifyWidget",
            needs_particles=True,
        ),
        TaskSpec(
            "export", "tomolens.batch.steps:EXPORT_PARAMS", "tomolens.batch.steps:run_export",
            "write the particles with all their columns: STEM_particles.star/.csv/.txt",
            needs_particles=True,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The task called ``name``.

    Raises
    ------
    ValueError
        Naming the known tasks.
    """
    if name not in TASKS:
        raise ValueError(f"Unknown batch task {name!r}; known tasks: {', '.join(TASKS)}.")
    spec = TASKS[name]
    ok, why = spec.available()
    if not ok:
        raise ValueError(f"The task {name!r} cannot run here: {why}.")
    return spec


def task_for_params(names: Iterable[str]) -> str | None:
    """The available task whose parameters include all of ``names`` (None if none does)."""
    names = set(names)
    for spec in TASKS.values():
        try:
            known = {p.name for p in spec.params()}
        except ImportError:
            continue
        if names and names <= known:
            return spec.name
    return None
