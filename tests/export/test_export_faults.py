"""A killed export leaves staging behind; the next export removes it, and push never lists hidden files."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fnsft.cli import app

FAULTS = Path(__file__).resolve().parents[1] / "train" / "faults"


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".")) if directory.is_dir() else []


def test_kill_9_mid_merge_then_export_again_cleans_up(small_run_factory, tmp_path):
    import os
    import shutil

    source, _base = small_run_factory("llama")
    run = tmp_path / "run"
    shutil.copytree(source.root, run, ignore=shutil.ignore_patterns("exports"))
    env = {**os.environ, "FNSFT_TEST_KILL_AT": "export:0", "PYTHONPATH": os.pathsep.join([str(FAULTS), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-m", "fnsft.cli", "export", str(run), "--merge", "--no-verify"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = _hidden(run / "exports")
    assert leftovers and all(name.startswith(".merged.tmp-") for name in leftovers)
    assert not (run / "exports" / "merged").exists()

    (run / "exports" / ".run-q8_0.gguf.abc.tmp").write_bytes(b"half a gguf")  # a killed GGUF write
    again = CliRunner().invoke(app, ["export", str(run), "--merge", "--no-verify"])
    assert again.exit_code == 0, again.output
    assert "left by an interrupted export" in again.output
    assert _hidden(run / "exports") == [] and (run / "exports" / "merged" / "config.json").is_file()


def test_push_lists_no_hidden_or_temporary_gguf(small_run_factory, tmp_path):
    import shutil

    source, _base = small_run_factory("llama")
    run = tmp_path / "run"
    shutil.copytree(source.root, run, ignore=shutil.ignore_patterns("exports"))
    (run / "exports").mkdir()
    (run / "exports" / "run-q8_0.gguf").write_bytes(b"GGUF")
    (run / "exports" / ".run-q4_k_m.x1.f16.gguf").write_bytes(b"intermediate")
    result = CliRunner().invoke(app, ["push", str(run), "--repo-id", "me/x", "--gguf", "--dry-run",
                                      "--base-model-id", "me/base"])
    assert result.exit_code == 0, result.output
    assert "run-q8_0.gguf" in result.output and "f16.gguf" not in result.output
