#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (ruff, configured in pyproject.toml) and run the whole test suite headless
# under Xvfb. A lint finding fails the run before any test starts.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# napari on PyQt6 (qtpy would pick PyQt5 first if an older .venv still has it)
export QT_API=${QT_API:-pyqt6}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
.venv/bin/python -m ruff check .
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -q "$@"
