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

# The packages the tests use beyond torch and pytest: transformers (the HF BERT sample and
# the HF advisor tests), scikit-learn (the ViT sample's digits data), filelock (torch.compile
# imports it; the offline torch wheel is installed without its dependencies), jsonschema (the
# report schema tests) and ruff (the Python linter). pip's configured index is used: a local
# mirror where the machine has one, PyPI elsewhere.
EXTRAS=(transformers scikit-learn filelock jsonschema ruff)
EXTRA_MODULES="transformers, sklearn, filelock, jsonschema"

py_ok() { "$1" -c 'import torch, pytest' >/dev/null 2>&1; }
extras_ok() { "$1" -c "import $EXTRA_MODULES" >/dev/null 2>&1 && [ -x "$(dirname "$1")/ruff" ]; }

install_extras() {
  local vpy="$1"
  extras_ok "$vpy" && return 0
  echo "setup-python: installing ${EXTRAS[*]}" >&2
  # --retries 0: where only a local mirror is reachable, an unreachable default index
  # costs one quick failure instead of minutes of retries.
  "$vpy" -m pip install -q --retries 0 --timeout 15 "${EXTRAS[@]}" >&2 2>/tmp/membit-pip-$$.log || true
  if ! extras_ok "$vpy"; then
    cat /tmp/membit-pip-$$.log >&2 || true
    echo "setup-python: could not install ${EXTRAS[*]} into $vpy (pip's index unreachable?)" >&2
    return 1
  fi
  rm -f /tmp/membit-pip-$$.log
}

if [ -x "$VENV/bin/python" ] && py_ok "$VENV/bin/python"; then
  install_extras "$PWD/$VENV/bin/python" || exit 1
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
install_extras "$VPY" || exit 1
echo "setup-python: torch $("$VPY" -c 'import torch; print(torch.__version__)') in $VPY" >&2
echo "$VPY"
