"""Build magicgui controls from :class:`tomolens.params.Param` definitions.

:class:`ParamPanel` also gives every widget built on it "Save preset…" and "Load
preset…" buttons: the panel's values are written as a preset file
(:func:`tomolens.params.save_preset`, JSON; YAML is read too) that the CLI loads with
``tomolens <command> --preset FILE`` and ``tomolens batch``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, PushButton, create_widget

from tomolens.params import Param, load_preset, save_preset

log = logging.getLogger(__name__)

PRESET_FILTER = "Presets (*.json *.yaml *.yml)"


def build_control(p: Param):
    """One magicgui value widget for ``p``, with its default, limits and tooltip."""
    options: dict[str, Any] = {}
    kind = p.value_type
    if p.choices is not None:
        options["choices"] = list(p.choices)
    if kind in (int, float):
        options["min"] = p.min if p.min is not None else (-1e9 if kind is float else -(2**31))
        options["max"] = p.max if p.max is not None else (1e9 if kind is float else 2**31 - 1)
        if p.step is not None:
            options["step"] = p.step
        elif kind is float:
            options["step"] = float_step(p)
    if kind is Path:
        options["mode"] = "r"
    widget = create_widget(
        value=p.default,
        annotation=kind,
        name=p.name,
        label=p.label,
        options=options,
    )
    widget.tooltip = p.help
    return widget


def float_step(p: Param) -> float:
    """A spin-box step fine enough to show the default (magicgui shows as many decimals as the step has).

    0.01 unless the default (or, for a zero default, the minimum) is smaller: then one
    tenth of its order of magnitude, so that e.g. a learning rate of 2e-3 is not shown
    (and returned) as 0.0.
    """
    for value in (p.default, p.min):
        if value:
            return min(0.01, 10.0 ** (math.floor(math.log10(abs(float(value)))) - 1))
    return 0.01


def infer_task(names: Iterable[str]) -> str:
    """The batch task whose parameters hold all of ``names`` ("custom" if none does)."""
    from tomolens.batch.registry import task_for_params

    return task_for_params(names) or "custom"


class ParamPanel(Container):
    """Controls for a tuple of parameters; advanced ones in a collapsed section.

    Parameters
    ----------
    params : iterable of Param
        The settings to show (a capability's ``PARAMS``, or a subset of it).
    task : str, optional
        Task name written into saved presets (a ``tomolens`` command / batch task such
        as ``"detect"``); inferred from the parameter names when not given.
    presets : bool
        Show the "Save preset…" / "Load preset…" buttons.
    """

    def __init__(self, params: Iterable[Param], task: str | None = None, presets: bool = True) -> None:
        self.params = tuple(params)
        self._task = task
        self._extra_fields: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self.controls = {p.name: build_control(p) for p in self.params}
        basic = [self.controls[p.name] for p in self.params if not p.advanced]
        self.save_button = PushButton(
            text="Save preset…",
            tooltip=(
                "Save these settings as a preset file (JSON) for 'tomolens <command> --preset FILE' and 'tomolens batch'."
            ),
        )
        self.load_button = PushButton(text="Load preset…", tooltip="Set these controls from a preset file.")
        self.preset_row = Container(
            widgets=[self.save_button, self.load_button], layout="horizontal", labels=False, visible=presets
        )
        self.preset_row.margins = (0, 0, 0, 0)
        super().__init__(widgets=[*basic, self.preset_row])
        advanced = [self.controls[p.name] for p in self.params if p.advanced]
        self.advanced = None
        if advanced:
            from superqt import QCollapsible

            self.advanced = Container(widgets=advanced)
            box = QCollapsible("Advanced")
            box.addWidget(self.advanced.native)
            self.native.layout().insertWidget(self.native.layout().count() - 1, box)
        self.save_button.changed.connect(self._ask_save)
        self.load_button.changed.connect(self._ask_load)

    @property
    def task(self) -> str:
        """Task name written into presets."""
        if self._task is None:
            self._task = infer_task([p.name for p in self.params] + list(self._extra_fields))
        return self._task

    def values(self) -> dict[str, Any]:
        """Current values, checked against each parameter's limits."""
        return {p.name: p.check(self.controls[p.name].value) for p in self.params}

    def set_values(self, values: dict[str, Any]) -> None:
        """Set controls from a preset dictionary (unknown names are ignored by the caller)."""
        for name, value in values.items():
            if name in self.controls:
                self.controls[name].value = value

    # ------------------------------------------------------------- presets
    def add_preset_field(self, name: str, getter: Callable[[], Any], setter: Callable[[Any], None]) -> None:
        """Save/load a setting that lives outside the panel (e.g. a model chooser) with the presets.

        ``name`` must be a parameter of the task (for example ``"model"`` of detection) so
        that the CLI accepts the preset.
        """
        self._extra_fields[name] = (getter, setter)

    def preset_values(self) -> dict[str, Any]:
        """The values a preset saves: the panel's plus the extra fields'."""
        values = self.values()
        for name, (getter, _) in self._extra_fields.items():
            values[name] = getter()
        return values

    def save_preset(self, path: str | os.PathLike) -> Path:
        """Write the current values as a preset file ``{"task": ..., "params": {...}}``."""
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            raise ValueError("Presets are saved as JSON; choose a name ending in .json (YAML is read only).")
        if not path.suffix:
            path = path.with_suffix(".json")
        save_preset(path, self.task, self.preset_values())
        log.info("saved %s preset to %s", self.task, path)
        return path

    def load_preset(self, path: str | os.PathLike) -> dict[str, Any]:
        """Set the controls from a preset file; returns the values applied.

        Raises
        ------
        ValueError
            If the preset is for another task, names settings this panel does not have,
            or holds values outside their limits.
        """
        task, values = load_preset(path)
        if task not in ("", "custom", self.task):
            raise ValueError(f"{Path(path).name} is a preset for {task!r}; this panel is for {self.task!r}.")
        known = {p.name: p for p in self.params}
        unknown = sorted(set(values) - set(known) - set(self._extra_fields))
        if unknown:
            raise ValueError(f"{Path(path).name} has settings this panel does not know: {unknown}.")
        checked = {name: known[name].check(v) for name, v in values.items() if name in known}
        self.set_values(checked)
        for name, (_, setter) in self._extra_fields.items():
            if name in values:
                setter(values[name])
        return {**checked, **{k: values[k] for k in self._extra_fields if k in values}}

    def _ask_save(self, *_) -> None:
        from magicgui.application import use_app

        path = use_app().get_obj("show_file_dialog")(mode="w", caption="Save preset", filter=PRESET_FILTER)
        if path:
            self._report(self.save_preset, path, "Saved preset to {}.")

    def _ask_load(self, *_) -> None:
        from magicgui.application import use_app

        path = use_app().get_obj("show_file_dialog")(mode="r", caption="Load preset", filter=PRESET_FILTER)
        if path:
            self._report(self.load_preset, path, "Loaded preset {}.")

    @staticmethod
    def _report(action: Callable[[str], Any], path: str, message: str) -> None:
        from napari.utils.notifications import show_error, show_info

        try:
            action(path)
        except (OSError, ValueError) as err:
            show_error(str(err))
            return
        show_info(message.format(path))
