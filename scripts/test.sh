#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite headless under Xvfb.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-xcb}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -q "$@"
