"""Build magicgui controls from :class:`tomolens.params.Param` definitions."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import Container, create_widget

from tomolens.params import Param


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
    if kind is Path:
        options["mode"] = "r"
    widget = create_widget(
        value=p.default, annotation=kind, name=p.name, label=p.label, options=options,
    )
    widget.tooltip = p.help
    return widget


class ParamPanel(Container):
    """Controls for a tuple of parameters; advanced ones in a collapsed section."""

    def __init__(self, params: Iterable[Param]) -> None:
        self.params = tuple(params)
        self.controls = {p.name: build_control(p) for p in self.params}
        basic = [self.controls[p.name] for p in self.params if not p.advanced]
        super().__init__(widgets=basic)
        advanced = [self.controls[p.name] for p in self.params if p.advanced]
        self.advanced = None
        if advanced:
            from superqt import QCollapsible

            self.advanced = Container(widgets=advanced)
            box = QCollapsible("Advanced")
            box.addWidget(self.advanced.native)
            self.native.layout().addWidget(box)

    def values(self) -> dict[str, Any]:
        """Current values, checked against each parameter's limits."""
        return {p.name: p.check(self.controls[p.name].value) for p in self.params}

    def set_values(self, values: dict[str, Any]) -> None:
        """Set controls from a preset dictionary (unknown names are ignored by the caller)."""
        for name, value in values.items():
            if name in self.controls:
                self.controls[name].value = value
