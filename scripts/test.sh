#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (ruff, configured in pyproject.toml), build the documentation site
# (mkdocs build --strict: a broken link or page fails) and run the whole test suite headless under Xvfb.
# A lint or docs failure fails the run before any test starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# napari on PyQt6 (qtpy would pick PyQt5 first if an older .venv still has it)
export QT_API=${QT_API:-pyqt6}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
SITE=$(mktemp -d)  # the built site is thrown away: only its errors matter here
export NO_MKDOCS_2_WARNING=1  # mkdocs-material prints a notice about its successor on every build
.venv/bin/python -m mkdocs build --strict --quiet -d "$SITE"
rm -rf "$SITE"
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -q "$@"
