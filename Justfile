# fnsft tasks. `just --list` shows them; every recipe is a one-liner you can also paste into a shell.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The image tag, from the lock: fnsft:<version>-cu<cuda>-torch<torch> (docker/tags.sh)
image := "fnsft:" + `docker/tags.sh`

# List these recipes (plain `just` does this, so it never installs anything by surprise)
default:
    @{{just_executable()}} --list --unsorted

# Install into .venv, then LoRA-tune the real SmolLM2-135M on the bundled exact-answer tasks (CPU, ~4 min)
quickstart:
    scripts/install.sh && .venv/bin/fnsft train recipes/quickstart.yaml

# Install into .venv, then run the fast test suite (the README's and CI's test command)
test:
    scripts/install.sh && .venv/bin/python -m pytest

# Run only the slow tests (real 135M model, fresh-venv install, long fuzzing)
test-slow:
    .venv/bin/python -m pytest -m slow

# Slow: fnsft's GGUF files against llama.cpp itself (llama-cpp-python in its own venv, never a dependency of fnsft)
test-llamacpp python="/work/llamacpp-venv/bin/python":
    FNSFT_LLAMA_CPP_PYTHON={{python}} .venv/bin/python -m pytest -m slow tests/export/test_llamacpp.py

# Lint Python (ruff, mypy), the Dockerfile (hadolint) and the GitHub workflows (actionlint)
lint:
    .venv/bin/ruff check . && .venv/bin/mypy && .venv/bin/hadolint docker/Dockerfile && .venv/bin/actionlint

# Run every benchmark in bench/ (each writes JSON + PNG into bench/results/)
bench:
    shopt -s nullglob; for script in bench/*.py; do echo "== $script"; .venv/bin/python "$script"; done

# Build the CUDA image, tagged from the lock (needs a Docker engine)
docker-build:
    docker build -f docker/Dockerfile $(docker/tags.sh --build-args) -t {{image}} .

# Build the image with no registry and no PyTorch index: a Debian base made here, CPU torch (podman or docker)
docker-build-local:
    docker/build-local.sh

# Slow (~10 min): run the built image through --help, env, estimate, quickstart as any UID, kill/resume, stop
docker-test image="":
    docker/test.sh {{image}}

# Run fnsft in the image as you, with ./runs and the HF cache mounted: just docker-run train recipes/full-7b.yaml
docker-run *args:
    mkdir -p runs && docker run --rm --gpus all --ipc=host --user "$(id -u):$(id -g)" -e HF_TOKEN -v "$PWD/runs:/workspace/runs" -v fnsft-cache:/cache {{image}} {{args}}
