"""CLI ↔ widget parity: one PARAMS definition per capability; --help on every command."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from magicgui.widgets import Container

from tomolens._widgets._params import ParamPanel
from tomolens.batch.registry import PARITY, TASKS, import_object
from tomolens.cli import build_parser, main


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


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
            main([name, "--help"])
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


@pytest.mark.parametrize("action", list(_actions(mark_gaps=False)))
def test_widget_controls_are_the_shared_params(action, make_napari_viewer):
    params = action_params(action)
    try:
        widget_cls = import_object(action.widget_ref)
    except ImportError as err:
        pytest.skip(f"the {action.name} widget has not landed yet ({err})")
    widget = widget_cls(make_napari_viewer())
    panel = getattr(widget, action.panel_attr)
    assert isinstance(panel, ParamPanel), f"{action.widget_ref}.{action.panel_attr} is not a ParamPanel"
    assert any(panel is p for p in find_panels(widget)), "the panel is not shown in the widget"
    in_panel = {p.name: p for p in panel.params}
    expected = {p.name: p for p in params}
    outside = action.outside_panel
    assert set(in_panel) | set(outside) == set(expected), "widget controls and PARAMS differ"
    assert not set(in_panel) & set(outside)
    for name, p in in_panel.items():
        assert p == expected[name], f"{name}: the widget's Param differs from the shared one"
    for name in outside:
        assert hasattr(widget, outside[name]), f"{action.widget_ref} has no control {outside[name]!r} for {name}"
    # what the widget shows at start is what the CLI uses when no option is typed
    for p in panel.params:
        assert p.check(panel.controls[p.name].value) == p.default, (
            f"{action.name} widget starts {p.name} at {panel.controls[p.name].value!r}, the CLI at {p.default!r}")
    if action.name in TASKS:
        assert panel.task == action.name, "presets saved from this panel would name the wrong task"
