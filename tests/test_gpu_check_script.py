"""bench/gpu_check.py only runs on the rare task lent a GPU; its --smoke mode runs the same code on CPU with a tiny
model so that it still works when that task comes (slow: ~30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_stage(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["rows"]
    assert [row for row in rows if row["kind"] == "error"] == []
    memory = [row for row in rows if row["kind"] == "memory"]
    assert {(row["method"], row["checkpointing"]) for row in memory} == {
        (method, ckpt) for method in ("lora", "full", "qlora") for ckpt in (False, True)}
    assert all(row["peak_rss"] > 0 and row["predicted_total"] > 0 for row in memory)
    assert {row["variant"] for row in rows if row["kind"] == "throughput"} >= {"trl-defaults", "fnsft"}
    (trained,) = [row for row in rows if row["kind"] == "qlora-fnsft-train"]
    assert trained["predicted_total"] > 0 and trained["train_loss"] > 0
    assert report["environment"]["torch"] and (tmp_path / "gpu_check.png").is_file()
