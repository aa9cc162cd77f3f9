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

from tomolens import __version__

#: Namespace attribute holding the argument list that :func:`main` parsed.
ARGV_ATTR = "_tomolens_argv"

#: Modules with a ``register(subparsers)`` function, one per capability.
COMMAND_MODULES = (
    "tomolens.io.cli",
    "tomolens.simulate.cli",
    "tomolens.models.cli",
    "tomolens.detect.cli",
    "tomolens.classify.cli",
    "tomolens.batch.cli",
    "tomolens.segment.cli",
    "tomolens.orient.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tomolens",
        description="Deep-learning analysis of cryo-electron tomograms (napari-tomolens), headless.",
    )
    parser.add_argument("--version", action="version", version=f"tomolens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
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
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, RuntimeError) as err:
        logging.getLogger("tomolens").error("%s", err)
        print(f"tomolens {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
