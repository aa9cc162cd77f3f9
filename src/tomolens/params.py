"""One parameter definition shared by the CLI, the dock widgets and preset files.

A capability lists its settings once as a tuple of :class:`Param`; the CLI builds its
``argparse`` options from it (:func:`add_arguments`), a widget builds its magicgui
controls from it (``tomolens._widgets._params.build_controls``) and presets are plain
JSON/YAML dictionaries of ``{name: value}`` checked by :func:`validate_values`.  GUI and
CLI therefore cannot drift: same names, same defaults, same limits, same help.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomolens.io.atomic import atomic_path


@dataclass(frozen=True)
class Param:
    """One user-facing setting.

    Attributes
    ----------
    name : str
        Python identifier; the CLI option is ``--name-with-dashes``.
    default : object
        Default value; its type gives the parameter's type unless ``type`` is set.
    help : str
        One sentence shown as CLI help and widget tooltip; units in the text.
    type : type, optional
        ``int``, ``float``, ``str``, ``bool`` or ``pathlib.Path``.
    choices : tuple, optional
        Allowed values.
    min, max : float, optional
        Inclusive limits for numbers.
    step : float, optional
        Widget step for numbers.
    advanced : bool
        Shown in the widget's collapsed "Advanced" section.
    """

    name: str
    default: Any
    help: str
    type: type | None = None
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    advanced: bool = False

    @property
    def value_type(self) -> type:
        if self.type is not None:
            return self.type
        return type(self.default) if self.default is not None else str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.name.replace("_A3", " (Å³)").replace("_A", " (Å)").replace("_", " ")

    def check(self, value: Any) -> Any:
        """Convert ``value`` to this parameter's type and check its limits.

        Raises
        ------
        ValueError
            With the parameter's name, the value and the allowed range.
        """
        kind = self.value_type
        if value is None:
            return None
        try:
            if kind is bool and isinstance(value, str):
                value = value.strip().lower() in ("1", "true", "yes", "on")
            elif kind is Path:
                value = Path(value)
            else:
                value = kind(value)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{self.name}: {value!r} is not a valid {kind.__name__}.") from err
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{self.name}: {value} is not a finite number.")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}: {value!r} is not one of {list(self.choices)}.")
        allowed = f" (allowed:{_range_text(self).lstrip(';')})"
        if self.min is not None and value < self.min:
            raise ValueError(f"{self.name}: {value} is below the minimum {self.min}{allowed}.")
        if self.max is not None and value > self.max:
            raise ValueError(f"{self.name}: {value} is above the maximum {self.max}{allowed}.")
        return value

    def parse(self, text: str) -> Any:
        """:meth:`check` as an argparse ``type``: a bad value becomes argparse's one-line error with
        the parameter's allowed range (instead of "invalid check value")."""
        try:
            return self.check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


#: Namespace attribute holding the names of options typed on the command line.
EXPLICIT_ATTR = "_tomolens_explicit"
#: Namespace attribute holding the names of options set by ``--preset``.
PRESET_ATTR = "_tomolens_from_preset"


def _mark_explicit(namespace: argparse.Namespace, name: str) -> None:
    explicit = set(getattr(namespace, EXPLICIT_ATTR, set()))
    explicit.add(name)
    setattr(namespace, EXPLICIT_ATTR, explicit)


class _StoreParam(argparse._StoreAction):
    """Store a value and remember it was typed, so a ``--preset`` never overrides it."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark_explicit(namespace, self.dest)


class _BoolParam(argparse.BooleanOptionalAction):
    """``--name/--no-name`` that remembers it was typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _mark_explicit(namespace, self.dest)


class _PresetAction(argparse.Action):
    """``--preset FILE``: set every parameter the file names, except those typed explicitly.

    Options typed after ``--preset`` override it as usual; options typed before it are
    remembered and kept.
    """

    def __init__(self, option_strings, dest, params=(), task="", **kwargs):
        self.params: list[Param] = list(params)
        self.task = task
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            chosen = preset_values(values, self.params, task=self.task, fill_defaults=False)
        except (OSError, ValueError) as err:
            parser.error(f"--preset {values}: {err}")
        explicit = getattr(namespace, EXPLICIT_ATTR, set())
        from_preset = set(getattr(namespace, PRESET_ATTR, set()))
        for name, value in chosen.items():
            if name not in explicit:
                setattr(namespace, name, value)
                from_preset.add(name)
        setattr(namespace, PRESET_ATTR, from_preset)
        setattr(namespace, self.dest, values)


def _escape(text: str) -> str:
    """Escape ``%`` for argparse, which %-formats help texts."""
    return text.replace("%", "%%")


def _range_text(p: Param) -> str:
    if p.min is not None and p.max is not None:
        return f"; {p.min}..{p.max}"
    if p.min is not None:
        return f"; at least {p.min}"
    if p.max is not None:
        return f"; at most {p.max}"
    return ""


def add_arguments(parser: argparse.ArgumentParser, params: Iterable[Param]) -> None:
    """Add one ``--option`` per parameter to an argparse parser, and ``--preset FILE``.

    ``--preset`` loads a preset file (:func:`save_preset`, JSON or YAML) whose values
    replace the defaults; options typed on the command line win over the preset.  Calling
    this twice on one parser extends the same ``--preset`` option.
    """
    params = list(params)
    for p in params:
        kind = p.value_type
        if kind is bool:
            parser.add_argument(
                p.option,
                dest=p.name,
                default=p.default,
                action=_BoolParam,
                help=f"{_escape(p.help)} (default: {_escape(str(p.default))})",
            )
            continue
        parser.add_argument(
            p.option,
            dest=p.name,
            default=p.default,
            type=p.parse,
            metavar=kind.__name__.upper(),
            action=_StoreParam,
            help=f"{_escape(p.help)} (default: {_escape(str(p.default))}"
            + _range_text(p)
            + (f"; one of {list(p.choices)}" if p.choices else "")
            + ")",
        )
    existing = parser._option_string_actions.get("--preset")
    if isinstance(existing, _PresetAction):
        existing.params.extend(params)
    elif existing is None:
        task = parser.prog.split()[-1] if " " in parser.prog else ""
        parser.add_argument(
            "--preset",
            metavar="FILE",
            action=_PresetAction,
            params=params,
            task=task,
            default=None,
            help="preset file (JSON/YAML, e.g. saved from the widget's 'Save preset…'); its values replace "
            "the defaults, options typed on the command line win",
        )


def values_from_args(args: argparse.Namespace, params: Iterable[Param]) -> dict[str, Any]:
    """Collect the parameters' values from parsed CLI arguments."""
    return {p.name: getattr(args, p.name) for p in params}


def explicit_values(args: argparse.Namespace, params: Iterable[Param]) -> dict[str, Any]:
    """Only the values typed on the command line or set by ``--preset`` (not the defaults).

    Lets a command leave the rest to a capability's own defaults (e.g. thresholds tuned
    on a model card), exactly like a widget that shows those defaults in its controls.
    """
    chosen = set(getattr(args, EXPLICIT_ATTR, set())) | set(getattr(args, PRESET_ATTR, set()))
    return {p.name: getattr(args, p.name) for p in params if p.name in chosen}


def validate_values(values: Mapping[str, Any], params: Iterable[Param]) -> dict[str, Any]:
    """Fill defaults, convert types and check limits; unknown names are an error."""
    params = list(params)
    known = {p.name: p for p in params}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"Unknown settings {unknown}; known: {sorted(known)}.")
    return {p.name: p.check(values.get(p.name, p.default)) for p in params}


def save_preset(path: str | os.PathLike, task: str, values: Mapping[str, Any]) -> Path:
    """Write a preset file ``{"task": ..., "params": {...}}`` as JSON, atomically."""
    payload = {"task": task, "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items()}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return Path(path)


def load_preset(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Read a preset written by :func:`save_preset` (JSON, or YAML if the name says so)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        payload = yaml.safe_load(text)
    else:
        payload = json.loads(text)
    if not isinstance(payload, dict) or "task" not in payload:
        raise ValueError(f"{path.name} is not a tomolens preset (no 'task' key).")
    return str(payload["task"]), dict(payload.get("params", {}))


def preset_values(
    path: str | os.PathLike, params: Iterable[Param], task: str = "", fill_defaults: bool = True
) -> dict[str, Any]:
    """Load a preset file and check it against ``params``.

    Parameters
    ----------
    path : path-like
        Preset file (JSON, or YAML by extension).
    params : iterable of Param
        The settings the preset may hold.
    task : str, optional
        Expected task; a preset naming another task is an error.  Presets with an empty
        task or ``"custom"`` are accepted anywhere.
    fill_defaults : bool
        Return every parameter (defaults for those the file omits) instead of only the
        ones it names.

    Raises
    ------
    ValueError
        For another task's preset, unknown setting names or bad values.
    """
    preset_task, values = load_preset(path)
    if task and preset_task not in ("", "custom", task):
        raise ValueError(f"{Path(path).name} is a preset for {preset_task!r}, not for {task!r}.")
    params = list(params)
    checked = validate_values(values, params)
    return checked if fill_defaults else {k: checked[k] for k in values}
