#!/usr/bin/env bash
# Set up (scripts/setup.sh) and open napari with every tomolens widget docked and a simulated sample tomogram.
# Without a display (no $DISPLAY), napari runs on a virtual Xvfb screen and a screenshot is saved instead
# (${TMPDIR:-/tmp}/demo_screenshot.png, outside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# napari on PyQt6 (qtpy would pick PyQt5 first if an older .venv still has it)
export QT_API=${QT_API:-pyqt6}
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/python -m tomolens._widgets.launch "$@"
fi
SHOT="${TMPDIR:-/tmp}/demo_screenshot.png"  # outside the checkout
echo "demo: no display found; running on a virtual screen and saving $SHOT"
exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m tomolens._widgets.launch --screenshot "$SHOT" "$@"
