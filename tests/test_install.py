"""scripts/install.sh: which torch it asks for on which machine, and what it does when the PyTorch index is dead.

The fast tests stop pip before it resolves anything (no index, isolated configuration) and read the one line the
script prints about torch; the slow one resolves the whole install with `pip install --dry-run --report` against
an isolated configuration (no pip.conf, no PIP_* variables), the PyTorch index unreachable and a wheel directory.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
HAS_NVIDIA_DRIVER = Path("/proc/driver/nvidia").exists() or shutil.which("nvidia-smi") is not None


def isolated_pip_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No pip configuration file, no PIP_* variable, no torch choice inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "TORCH_", "WHEEL_DIR", "FNSFT_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PYTHON=sys.executable,
        FNSFT_INSTALL_REPORT=str(tmp_path / "report.json"),
        PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin",
    )
    (tmp_path / "bin").mkdir(exist_ok=True)
    env.update(extra)
    return env


def install(env: dict[str, str], timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts" / "install.sh"), "system", "tracking"],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def torch_line(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if line.startswith("install.sh: torch:")]
    return line


@pytest.fixture
def live_index(tmp_path):
    """A reachable (empty) wheel index: it answers 404 for torch, which is all the script's probe asks."""
    (tmp_path / "index").mkdir()

    def handler(*args, **kwargs):
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path / "index"), **kwargs)

    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/whl"
    server.shutdown()


def dead_url() -> str:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl"


@pytest.mark.skipif(HAS_NVIDIA_DRIVER, reason="this machine has an NVIDIA driver")
def test_without_an_nvidia_driver_it_asks_for_the_cpu_build_from_the_pytorch_index(tmp_path, live_index):
    result = install(isolated_pip_env(tmp_path, PIP_NO_INDEX="1", TORCH_INDEX_URL=live_index))
    line = torch_line(result.stderr)
    assert f"torch=={TORCH_PIN}+cpu from {live_index}/cpu (no NVIDIA driver found" in line, line


def test_with_an_nvidia_driver_it_asks_pypi_for_its_default_cuda_build(tmp_path, live_index):
    fake = tmp_path / "bin" / "nvidia-smi"
    env = isolated_pip_env(tmp_path, PIP_NO_INDEX="1", TORCH_INDEX_URL=live_index)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    line = torch_line(install(env).stderr)
    assert f"torch=={TORCH_PIN} from the default indexes" in line and "NVIDIA driver is present" in line, line


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"TORCH_VARIANT": "cu128"}, f"torch=={TORCH_PIN}+cu128 from {{index}}/cu128 (TORCH_VARIANT=cu128)"),
        ({"TORCH_VARIANT": "pypi"}, f"torch=={TORCH_PIN} from the default indexes"),
        ({"TORCH_VARIANT": "cpu", "TORCH_SPEC": "torch>=2.12"}, "torch>=2.12 from {index}/cpu"),
    ],
)
def test_the_environment_overrides_the_choice(tmp_path, live_index, settings, expected):
    env = isolated_pip_env(tmp_path, PIP_NO_INDEX="1", TORCH_INDEX_URL=live_index, **settings)
    assert expected.format(index=live_index) in torch_line(install(env).stderr)


def test_an_unreachable_pytorch_index_is_named_once_and_never_given_to_pip(tmp_path):
    dead = dead_url()
    result = install(isolated_pip_env(tmp_path, PIP_NO_INDEX="1", TORCH_VARIANT="cpu", TORCH_INDEX_URL=dead))
    line = torch_line(result.stderr)
    assert f"the PyTorch wheel index {dead}/cpu is unreachable" in line, line
    assert result.stderr.count(dead) == 1, result.stderr  # pip never looked there: no retries, no lookups
    assert result.returncode == 1 and "WHEEL_DIR=DIR" in result.stderr.splitlines()[-1]


def cpu_torch_wheel_dir() -> Path | None:
    candidates = os.environ.get("PIP_FIND_LINKS", "").split() + ["/opt/wheels"]
    for directory in map(Path, candidates):
        if any(directory.glob(f"torch-{TORCH_PIN}+cpu-*.whl")):
            return directory
    return None


def pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_dry_run_resolves_the_cpu_torch_and_no_nvidia_package_with_the_pytorch_index_dead(tmp_path):
    wheels = cpu_torch_wheel_dir()
    if wheels is None or not pypi_reachable():
        pytest.skip("needs PyPI and a directory holding the CPU torch wheel (PIP_FIND_LINKS or /opt/wheels)")
    env = isolated_pip_env(tmp_path, TORCH_INDEX_URL=dead_url(), WHEEL_DIR=str(wheels))
    if HAS_NVIDIA_DRIVER:
        env["TORCH_VARIANT"] = "cpu"
    result = install(env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    installed = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                 for item in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert installed["torch"] == f"{TORCH_PIN}+cpu"
    assert not [name for name in installed if name.startswith(("nvidia-", "cuda-"))], sorted(installed)
    assert {"fnsft", "transformers", "trl", "peft"} <= set(installed)
