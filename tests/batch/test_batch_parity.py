"""CLI ↔ widget parity: one PARAMS definition per capability; --help on every command."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from magicgui.widgets import Container

from tomolens._widgets._params import ParamPanel
from tomolens.batch.registry import PARITY, TASKS, import_object
from tomolens.detect.postprocess import card_postprocess_defaults
from tomolens.cli import build_parser, main
from tomolens.models.card import read_card, shipped_models


def _children(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every sub-command of ``tomolens``, nested ones as "orient recover"."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser, prefix):
        for name, child in _children(parser).items():
            found[f"{prefix}{name}"] = child
            walk(child, f"{prefix}{name} ")

    walk(build_parser(), "")
    return found


def task_params(spec):
    try:
        return spec.params()
    except ImportError as err:
        pytest.skip(f"{spec.name} has not landed yet ({err})")


def find_panels(widget) -> list[ParamPanel]:
    """Every ParamPanel inside a widget: nested containers and attributes."""
    found: list[ParamPanel] = []

    def walk(obj):
        if isinstance(obj, ParamPanel):
            if all(obj is not f for f in found):
                found.append(obj)
            return
        if isinstance(obj, Container):
            for child in obj:
                walk(child)

    walk(widget)
    for value in vars(widget).values():
        walk(value)
    return found


def test_every_command_has_help():
    commands = subcommands()
    assert {"detect", "batch", "batch-example", "info"} <= set(commands)
    for name in commands:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
            main([*name.split(), "--help"])
        assert stop.value.code == 0, name
        text = out.getvalue()
        assert text.startswith(f"usage: tomolens {name}") and "-h, --help" in text, name


def _actions(mark_gaps: bool):
    for action in PARITY:
        marks = [pytest.mark.xfail(reason=action.known_gap, strict=False)] if action.known_gap and mark_gaps else []
        yield pytest.param(action, id=action.name, marks=marks)


def action_params(action):
    try:
        return action.params()
    except ImportError as err:
        pytest.skip(f"{action.name} has not landed yet ({err})")


@pytest.mark.parametrize("action", list(_actions(mark_gaps=True)))
def test_cli_options_are_the_shared_params(action):
    params = action_params(action)
    commands = subcommands()
    if action.cli_command not in commands:
        pytest.skip(f"'tomolens {action.cli_command}' is not registered yet")
    parser = commands[action.cli_command]
    actions = {a.dest: a for a in parser._actions}
    for p in params:
        assert p.name in actions, f"tomolens {action.cli_command} lacks {p.option}"
        assert p.option in actions[p.name].option_strings
        assert actions[p.name].default == p.default, f"{p.option}: CLI default differs from PARAMS"
        if p.choices:
            with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args([p.option, "__not_a_choice__"])
    assert "--preset" in {o for a in actions.values() for o in a.option_strings}


def _same(shown, expected) -> bool:
    """Equal; numbers within the widget's display rounding (e.g. 54.2558 shown as 54.26)."""
    if isinstance(expected, float) and isinstance(shown, (int, float)):
        return shown == pytest.approx(expected, rel=1e-3)
    return shown == expected


def widget_problems(action, widget) -> list[str]:
    """What differs between one widget action's controls and its shared PARAMS (empty = parity)."""
    params = action.params()
    panel = getattr(widget, action.panel_attr, None)
    if not isinstance(panel, ParamPanel):
        return [f"{action.widget_ref}.{action.panel_attr} is not a ParamPanel"]
    problems = []
    if not any(panel is p for p in find_panels(widget)):
        problems.append("the panel is not shown in the widget")
    in_panel = {p.name: p for p in panel.params}
    expected = {p.name: p for p in params}
    outside = action.outside_panel
    if set(in_panel) | set(outside) != set(expected) or set(in_panel) & set(outside):
        problems.append(f"controls {sorted(set(in_panel) | set(outside))} != PARAMS {sorted(expected)}")
    problems += [
        f"{n}: the widget's Param differs from the shared one"
        for n, p in in_panel.items()
        if n in expected and p != expected[n]
    ]
    problems += [f"no control {attr!r} for {n}" for n, attr in outside.items() if not hasattr(widget, attr)]
    # what the widget shows at start: the shared defaults, or the shipped model card's tuned values
    start = {p.name: p.default for p in panel.params}
    if action.card_defaults and action.card_defaults in shipped_models():
        card = read_card(shipped_models()[action.card_defaults])
        start.update({k: v for k, v in card_postprocess_defaults(card).items() if k in start})
    if action.start_values:
        declared = import_object(action.start_values)
        problems += [
            f"declares a start value for {k!r}, which is not one of its controls" for k in declared if k not in start
        ]
        start.update({k: v for k, v in declared.items() if k in start})
    problems += [
        f"starts {p.name} at {panel.controls[p.name].value!r}, expected {start[p.name]!r}"
        for p in panel.params
        if not _same(p.check(panel.controls[p.name].value), start[p.name])
    ]
    if action.name in TASKS and panel.task != action.name:
        problems.append(f"presets from this panel would name task {panel.task!r}")
    return problems


def test_widget_controls_are_the_shared_params(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets, checked, problems, missing = {}, [], {}, []
    for action in PARITY:
        try:
            action.params()
            widget_cls = import_object(action.widget_ref)
        except ImportError as err:
            missing.append(f"{action.name} ({err})")
            continue
        if action.widget_ref not in widgets:
            widgets[action.widget_ref] = widget_cls(viewer)
        checked.append(action.name)
        found = widget_problems(action, widgets[action.widget_ref])
        if found:
            problems[action.name] = found
    if not checked:
        pytest.skip(f"no widget has landed yet: {missing}")
    assert "detect" in checked
    assert not problems, problems
