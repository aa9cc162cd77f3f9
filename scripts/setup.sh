#!/usr/bin/env bash
# Set up napari-tomolens from a fresh clone: system packages for headless Qt (Xvfb, Mesa, xcb),
# a virtual environment in .venv, the tested torch==2.13.0 (whatever build pip resolves for this machine: the
# CPU wheel where only that one is available, the default CUDA wheel on an ordinary Linux machine with
# internet access) and napari, and the package with its test and docs extras (Qt binding: PyQt6).
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
# The tested napari (with PyQt6, the binding napari supports going forward): the two commands pin the
# version they were tested with; pyproject.toml does not.
NAPARI_VERSION=${NAPARI_VERSION:-0.9.2}
SYS_PACKAGES=(xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 libxkbcommon-x11-0
  libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0
  libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 x11-utils)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${SYS_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if ! "$PYTHON" -c "import venv, ensurepip" >/dev/null 2>&1; then
  missing+=("${PYTHON}-venv")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
$PY -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null \
  || $PY -m pip install -q "torch==$TORCH_VERSION"
$PY -m pip install -q -e ".[testing,docs]" "torch==$TORCH_VERSION" "napari==$NAPARI_VERSION"
echo "setup: done ($($PY -c 'import napari, torch, tomolens; print("napari", napari.__version__, "torch", torch.__version__, "tomolens", tomolens.__version__)'))"
