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


def import_params(refs: tuple[str, ...]) -> tuple[Param, ...]:
    """Concatenate the ``PARAMS`` tuples named by ``refs`` (imports the capabilities)."""
    return tuple(p for ref in refs for p in import_object(ref))


@dataclass(frozen=True)
class TaskSpec:
    """One pipeline task.

    Attributes
    ----------
    name : str
        Task name used in presets (``{"task": name, "params": {...}}``); also the
        ``tomolens`` sub-command with the same settings, where there is one.
    params_refs : tuple of str
        Import paths of the ``PARAMS`` tuples whose concatenation is the task's settings.
    run_ref : str
        Import path of the batch step ``run(context, params) -> job``.
    summary : str
        One line for ``tomolens batch --help`` and the README.
    needs_particles : bool
        The step works on particles found by an earlier step.
    """

    name: str
    params_refs: tuple[str, ...]
    run_ref: str
    summary: str
    needs_particles: bool = False

    def params(self) -> tuple[Param, ...]:
        """The task's parameters (imports the capability)."""
        return import_params(self.params_refs)

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


_CLASSIFY = "tomolens.classify.predict:CLASSIFY_PARAMS"

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "detect",
            ("tomolens.detect.detector:DETECT_PARAMS",),
            "tomolens.batch.steps:run_detect",
            "detect particles: STEM_instances.mrc + STEM_detected.star",
        ),
        TaskSpec(
            "segment",
            ("tomolens.segment.predict:PREDICT_PARAMS",),
            "tomolens.batch.steps:run_segment",
            "semantic segmentation: STEM_labels.mrc (0 background, class k as k + 1)",
        ),
        TaskSpec(
            "classify",
            (_CLASSIFY,),
            "tomolens.batch.steps:run_classify",
            "classify the particles: class, prob_<class>, confidence columns → STEM_classified.star",
            needs_particles=True,
        ),
        TaskSpec(
            "subdivide",
            (_CLASSIFY, "tomolens.cluster.subdivide:SUBDIVIDE_PARAMS"),
            "tomolens.batch.steps:run_subdivide",
            "cluster the particles by the classifier's features: cluster column → STEM_subdivided.star",
            needs_particles=True,
        ),
        TaskSpec(
            "export",
            ("tomolens.batch.steps:EXPORT_PARAMS",),
            "tomolens.batch.steps:run_export",
            "write the particles with all their columns: STEM_particles.star/.csv/.txt",
            needs_particles=True,
        ),
    )
}


@dataclass(frozen=True)
class WidgetAction:
    """A widget action and the CLI command that must offer the same settings (parity test).

    Attributes
    ----------
    name : str
        Label of the action.
    params_refs : tuple of str
        The shared ``PARAMS`` tuples of the action.
    cli_command : str
        ``tomolens`` sub-command built from them (nested ones space-separated: ``"orient recover"``).
    widget_ref : str
        Import path of the dock widget.
    panel_attr : str
        Attribute of the widget holding the action's ``ParamPanel``.
    outside_panel : dict
        Parameters the widget shows with its own control instead (name → attribute).
    known_gap : str
        Why the CLI and widget do not share one definition yet (the test is expected to
        fail until the owner fixes it); empty when they do.
    card_defaults : str
        Shipped model whose card's ``extra["postprocess"]`` the widget loads into its
        controls at start (tuned thresholds); those are then the expected start values.
    start_values : str
        Import path of a dict of the values the widget deliberately starts from instead of
        the shared defaults (e.g. a time limit for training from the GUI); empty: none.
    """

    name: str
    params_refs: tuple[str, ...]
    cli_command: str
    widget_ref: str
    panel_attr: str = "params"
    outside_panel: dict[str, str] = field(default_factory=dict)
    known_gap: str = ""
    card_defaults: str = ""
    start_values: str = ""

    def params(self) -> tuple[Param, ...]:
        return import_params(self.params_refs)


PARITY: tuple[WidgetAction, ...] = (
    WidgetAction(
        "simulate",
        ("tomolens.simulate.cli:PARAMS",),
        "simulate",
        "tomolens._widgets.simulate:SimulateWidget",
        panel_attr="panel",
    ),
    WidgetAction(
        "orient-train",
        ("tomolens.orient.pipeline:TRAIN_PARAMS",),
        "orient train",
        "tomolens._widgets.orient:OrientationWidget",
        panel_attr="train_panel",
    ),
    WidgetAction(
        "orient-recover",
        ("tomolens.orient.pipeline:RECOVER_PARAMS",),
        "orient recover",
        "tomolens._widgets.orient:OrientationWidget",
        panel_attr="panel",
        outside_panel={"model": "model_choice"},
    ),
    WidgetAction(
        "detect",
        ("tomolens.detect.detector:DETECT_PARAMS",),
        "detect",
        "tomolens._widgets.detect:DetectWidget",
        outside_panel={"model": "model_choice"},
        card_defaults="detect_default",
    ),
    WidgetAction(
        "detect-train",
        ("tomolens.detect.train:TRAIN_PARAMS",),
        "train",
        "tomolens._widgets.detect:DetectWidget",
        panel_attr="train_params",
    ),
    WidgetAction(
        "segment",
        ("tomolens.segment.predict:PREDICT_PARAMS",),
        "segment",
        "tomolens._widgets.segment:SegmentWidget",
        panel_attr="predict_params",
        outside_panel={"model": "model_choice"},
    ),
    WidgetAction(
        "segment-train",
        ("tomolens.segment.settings:TRAIN_PARAMS",),
        "train",
        "tomolens._widgets.segment:SegmentWidget",
        panel_attr="train_params",
        start_values="tomolens.segment.settings:WIDGET_START_VALUES",
    ),
    WidgetAction("classify", (_CLASSIFY,), "classify", "tomolens._widgets.classify:ClassifyWidget"),
    WidgetAction(
        "subdivide",
        (_CLASSIFY, "tomolens.cluster.subdivide:SUBDIVIDE_PARAMS"),
        "subdivide",
        "tomolens._widgets.classify:SubdivideWidget",
    ),
    WidgetAction(
        "classify-train",
        ("tomolens.classify.train:TRAIN_PARAMS",),
        "train",
        "tomolens._widgets.classify:ClassifyWidget",
        panel_attr="train_params",
    ),
)


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
