#!/usr/bin/env bash
# Makes .venv with PyTorch and pytest for Membit's harness and kernels.
# Order of preference for torch:
#   1. a python3 that already imports torch (system or pyenv): the venv sees it via --system-site-packages
#   2. a CPU wheel in $MEMBIT_TORCH_WHEEL_DIR (default /opt/wheels), installed offline
#   3. pip from the package index (normal machines with internet)
#   4. Debian's python3-torch (torch 1.13) with /usr/bin/python3
# Prints the interpreter path on the last line. Exits non-zero if torch cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
WHEEL_DIR="${MEMBIT_TORCH_WHEEL_DIR:-/opt/wheels}"

py_ok() { "$1" -c 'import torch, pytest' >/dev/null 2>&1; }

if [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python"; then
  echo "setup-python: $VENV already has torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" >&2
  echo "$PWD/$VENV/bin/python"; exit 0
fi

BASE_PY="${MEMBIT_BASE_PYTHON:-python3}"
rm -rf "$VENV"
"$BASE_PY" -m venv --system-site-packages "$VENV"
VPY="$PWD/$VENV/bin/python"

if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  tag="cp$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  wheel="$(ls "$WHEEL_DIR"/torch-*-"$tag"-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$wheel" ]; then
    echo "setup-python: installing $wheel (offline)" >&2
    "$VPY" -m pip install -q --no-index --no-deps "$wheel" >&2
  elif "$VPY" -m pip install -q torch >&2 2>/dev/null; then
    echo "setup-python: installed torch from the package index" >&2
  else
    echo "setup-python: no torch wheel for $tag and no package index; falling back to Debian's python3-torch" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-torch python3-pytest python3-numpy python3-venv >/dev/null
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  fi
fi
if ! "$VPY" -c 'import pytest' >/dev/null 2>&1; then
  "$VPY" -m pip install -q pytest >&2 || { echo "setup-python: pytest missing and not installable" >&2; exit 1; }
fi
if ! py_ok "$VPY"; then
  echo "setup-python: torch or pytest still missing in $VPY" >&2; exit 1
fi
echo "setup-python: torch $("$VPY" -c 'import torch; print(torch.__version__)') in $VPY" >&2
echo "$VPY"
