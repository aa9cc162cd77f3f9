"""The ``tomolens`` command line.

Each capability registers its sub-commands from its own ``cli`` module (a function
``register(subparsers)``), and each command calls the same core function as the
matching dock widget.  Run ``tomolens --help`` for the list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings

from tomolens import __version__
from tomolens.io.atomic import install_sigterm_cleanup

#: Namespace attribute holding the argument list that :func:`main` parsed.
ARGV_ATTR = "_tomolens_argv"

#: Modules with a ``register(subparsers)`` function, one per capability.
COMMAND_MODULES = (
    "tomolens.io.cli",
    "tomolens.simulate.cli",
    "tomolens.models.cli",
    "tomolens.detect.cli",
    "tomolens.detect.calibrate_cli",
    "tomolens.classify.cli",
    "tomolens.batch.cli",
    "tomolens.segment.cli",
    "tomolens.orient.cli",
    "tomolens.embed.cli",
)


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr (exit status 2), like every
    other tomolens error; sub-command parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="tomolens",
        description="Deep-learning analysis of cryo-electron tomograms (napari-tomolens), headless.",
    )
    parser.add_argument("--version", action="version", version=f"tomolens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or progress lines, only warnings, errors and results",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tomolens`` command; returns the exit status."""
    parser = build_parser()
    typed = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(typed)
    # the argv actually parsed, for model cards (``tomolens.models.cli.command_line``)
    setattr(args, ARGV_ATTR, typed)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    install_sigterm_cleanup()  # a killed command leaves no temporary file behind
    warnings.showwarning = _warning_as_one_line
    package_log = logging.getLogger("tomolens")
    level_before = package_log.level
    # for this command only; tomolens.cli_progress reads it (--quiet: no bars, no progress lines)
    package_log.setLevel(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"tomolens {args.command}: interrupted; nothing more was written.", file=sys.stderr)
        return 130
    except Exception as err:  # one line for every failure; the traceback only with -v
        if args.verbose:
            traceback.print_exc()
        print(f"tomolens {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 2
    finally:
        package_log.setLevel(level_before)


def _warning_as_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one log line (not the file, line and source line Python prints by default)."""
    logging.getLogger("tomolens").warning("%s", " ".join(str(message).split()))


def describe_error(err: BaseException) -> str:
    """One line for an exception: its message, prefixed by its type when that is not a plain
    user-facing error (ValueError, OSError…), so an unexpected failure is still recognisable."""
    text = " ".join(str(err).split()) or "no details"
    if isinstance(err, (ValueError, OSError, RuntimeError)):
        return text
    return f"{type(err).__name__}: {text} (unexpected; run with -v for details)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
