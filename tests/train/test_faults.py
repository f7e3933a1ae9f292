"""Faults injected into real `fnsft train` processes: kill -9, SIGTERM/SIGINT, torn checkpoints, a concurrent
second run, unwritable or full disks, a planted token. Resumed runs must end bitwise identical to uninterrupted ones.

Kill points are FNSFT_TEST_KILL_AT values, armed in the child process by tests/train/faults/ (put on its
PYTHONPATH here: fnsft has no hook for them); the kill itself is a real SIGKILL/SIGTERM/SIGINT delivered by the OS
to a real training process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.errors import TrainError
from fnsft.rundir import RunDir
from fnsft.train.outdir import COMPLETION_MARKER, RunLock, _start_time, checkpoint_problem

FAKE_TOKEN = "hf_secretFAKE0123456789abcdefTOKEN"
SUBPROCESS_TIMEOUT = 600
#: Its sitecustomize arms the kill point in every Python process started with it on PYTHONPATH (ranks included).
FAULTS = Path(__file__).resolve().parent / "faults"


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def child_env(kill_at: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("FNSFT_TEST_KILL_AT", None)
    if "HOME" in extra:  # a private home: every default cache location then lies under it
        for name in ("HF_HOME", "HF_DATASETS_CACHE", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR"):
            env.pop(name, None)
    if kill_at:
        env["FNSFT_TEST_KILL_AT"] = kill_at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAULTS), env.get("PYTHONPATH")]))
    return env


def start_train(recipe: Path, *args: str, kill_at: str | None = None, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fnsft.cli", "train", str(recipe), *args],
        env=child_env(kill_at, **extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen) -> Finished:
    stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    return Finished(process.returncode, stdout, stderr)


def train(recipe: Path, *args: str, kill_at: str | None = None, **extra_env: str) -> Finished:
    return finish(start_train(recipe, *args, kill_at=kill_at, **extra_env))


def write_recipe(directory: Path, model_dir: Path, data: Path, name: str, *, method: str = "lora", extra: str = "") -> Path:
    """Six optimizer steps, a checkpoint every 2 steps, an evaluation every 3: room for every kill point."""
    path = directory / f"{name}.yaml"
    path.write_text(
        f"""version: 1
model:
  name_or_path: {model_dir}
data:
  path: {data}
  validation_fraction: 0.25
  max_length: 64
method:
  name: {method}
training:
  max_steps: 6
  per_device_train_batch_size: 4
  learning_rate: 1.0e-2
  logging_steps: 1
  save_steps: 2
  eval_steps: 3
  gradient_checkpointing: false
output:
  dir: {directory / name}
{extra}"""
    )
    return path


def weights_hash(run: Path) -> str:
    return json.loads((run / "manifest.json").read_text())["weights_sha256"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llama_dir) -> dict:
    root = tmp_path_factory.mktemp("faults")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"What comes after {i}?", "output": str(i + 1)}) + "\n" for i in range(32)))
    return {"root": root, "model": tiny_llama_dir, "data": data}


def recipe_for(workdir: dict, name: str, method: str = "lora", extra: str = "") -> Path:
    return write_recipe(workdir["root"], workdir["model"], workdir["data"], name, method=method, extra=extra)


@pytest.fixture(scope="module")
def lora_reference(workdir) -> dict:
    """An uninterrupted LoRA run with a token in its environment, and a second run started on the same directory."""
    recipe = recipe_for(workdir, "lora-reference")
    run = workdir["root"] / "lora-reference"
    home, scratch = workdir["root"] / "home", workdir["root"] / "tmp"
    home.mkdir()
    scratch.mkdir()
    first = start_train(
        recipe, HF_TOKEN=FAKE_TOKEN, HUGGING_FACE_HUB_TOKEN=FAKE_TOKEN, HOME=str(home), TMPDIR=str(scratch)
    )
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not (run / ".lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = train(recipe)
    return {"recipe": recipe, "run": run, "first": finish(first), "second": second, "home": home, "tmp": scratch}


@pytest.fixture(scope="module")
def full_reference(workdir) -> dict:
    recipe = recipe_for(workdir, "full-reference", method="full")
    result = train(recipe)
    assert result.returncode == 0, result.output
    return {"run": workdir["root"] / "full-reference", "sha": weights_hash(workdir["root"] / "full-reference")}


def test_second_concurrent_run_refuses_and_first_is_intact(lora_reference):
    first, second = lora_reference["first"], lora_reference["second"]
    assert second.returncode == 2, second.output
    assert "another fnsft train (pid" in second.output and "Traceback" not in second.output
    assert first.returncode == 0, first.output
    run = lora_reference["run"]
    assert not (run / ".lock").exists()
    assert all(checkpoint_problem(c) is None for c in (run / "checkpoints").glob("checkpoint-*"))
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6


def test_token_in_environment_is_written_nowhere(lora_reference):
    first = lora_reference["first"]
    assert first.returncode == 0, first.output
    assert FAKE_TOKEN not in first.output
    assert "trust_remote_code" not in first.output  # off by default, so no warning
    leaks = [p for p in lora_reference["run"].rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert leaks == []
    assert len(list(lora_reference["run"].rglob("*"))) > 10  # the search did look at a whole run


def test_nothing_is_written_outside_the_run_dir_and_documented_caches(lora_reference):
    assert lora_reference["first"].returncode == 0
    outside_caches = [
        p for p in lora_reference["home"].rglob("*") if p.is_file() and ".cache/huggingface" not in p.as_posix()
    ]
    assert outside_caches == []  # FNSFT_CACHE is the repo's .cache here; HF's own cache is the other documented one
    assert [p for p in lora_reference["tmp"].rglob("*") if p.is_file()] == []


def test_lora_kill_mid_save_then_sigterm_then_resume_is_exact(workdir, lora_reference):
    recipe = recipe_for(workdir, "lora-faults")
    run = workdir["root"] / "lora-faults"

    killed = train(recipe, kill_at="save:4")  # SIGKILL while checkpoint-4 is half written
    assert killed.returncode == -signal.SIGKILL, killed.output
    assert (run / "checkpoints" / "checkpoint-4").is_dir()
    assert not (run / "checkpoints" / "checkpoint-4" / COMPLETION_MARKER).exists()
    assert (run / ".lock").exists()  # left by the killed process; the next run takes it over

    refused = train(recipe)
    assert refused.returncode == 2 and "--resume" in refused.output

    preempted = train(recipe, "--resume", kill_at="sigterm:5")
    assert "skipping checkpoint-4: its save did not finish" in preempted.stderr
    assert "resuming from checkpoint-2" in preempted.stderr
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.output
    resume_command = f"fnsft train {run / 'recipe.yaml'} --resume"
    assert resume_command in " ".join(preempted.stderr.split()), preempted.stderr
    assert checkpoint_problem(run / "checkpoints" / "checkpoint-5") is None
    assert not (run / "manifest.json").exists()

    resumed = train(run / "recipe.yaml", "--resume")
    assert resumed.returncode == 0, resumed.output
    assert "resuming from checkpoint-5" in resumed.stderr
    assert weights_hash(run) == weights_hash(lora_reference["run"])


def test_sigterm_saves_once_skipping_the_epoch_end_evaluation_and_says_how_long(workdir):
    recipe = recipe_for(workdir, "sigterm-fast")
    run = workdir["root"] / "sigterm-fast"
    # no eval_steps: the epoch-end evaluation, which a stop mid-epoch used to run and then save a second time after
    preempted = train(recipe, "--set", "training.eval_steps=null", kill_at="sigterm:3")
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.output
    log = " ".join(preempted.stderr.split())
    # checkpoint-2 was written before the signal: the expectation uses its measured speed and the step time
    assert re.search(r"expected within about \d+ s \(the rest of a [\d.]+ s step, then [\d.]+ MiB at the last "
                     r"checkpoint's speed\)", log), log
    assert len(re.findall(r"checkpoint-3 written in [\d.]+ s", log)) == 1, log
    assert not [line for line in preempted.stderr.splitlines() if line.startswith("step 3/") and "eval" in line]
    state = json.loads((run / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    assert [entry for entry in state["log_history"] if "eval_loss" in entry and entry["step"] == 3] == []
    assert checkpoint_problem(run / "checkpoints" / "checkpoint-3") is None


def test_disk_full_at_a_save_then_sigterm_in_the_final_save_then_resume_is_exact(workdir, lora_reference):
    recipe = recipe_for(workdir, "lora-disk-full")
    run = workdir["root"] / "lora-disk-full"

    full = train(recipe, kill_at="enospc:4")  # checkpoint-4's optimizer state hits ENOSPC
    assert full.returncode == 2, full.output
    text = " ".join(full.stderr.split())
    assert "the disk is full" in text and f"the last complete checkpoint is {run / 'checkpoints' / 'checkpoint-2'}" in text
    assert f"fnsft train {run / 'recipe.yaml'} --resume" in text and "Traceback" not in full.output
    assert not (run / ".lock").exists()

    (run / ".adapter.tmp-leftover").mkdir()  # as a save killed by kill -9 leaves it
    final = train(recipe, "--resume", kill_at="finalsave:0")
    assert "removed .adapter.tmp-leftover, left by an interrupted save" in " ".join(final.stderr.split())
    assert "skipping checkpoint-4" in final.stderr and "resuming from checkpoint-2" in final.stderr
    assert final.returncode == 128 + signal.SIGTERM, final.output
    assert "interrupted by SIGTERM during the final evaluation or save" in " ".join(final.stderr.split())
    assert "Traceback" not in final.output
    assert not (run / "adapter").exists() and not (run / "manifest.json").exists() and not (run / ".lock").exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # the staging was rolled back

    resumed = train(recipe, "--resume")
    assert resumed.returncode == 0, resumed.output
    assert weights_hash(run) == weights_hash(lora_reference["run"])


def test_same_size_corruption_of_the_newest_checkpoint_falls_back_and_resumes_exactly(workdir, lora_reference):
    recipe = recipe_for(workdir, "lora-bitflip")
    run = workdir["root"] / "lora-bitflip"
    killed = train(recipe, kill_at="step:5")
    assert killed.returncode == -signal.SIGKILL, killed.output
    optimizer = run / "checkpoints" / "checkpoint-4" / "optimizer.pt"
    assert checkpoint_problem(optimizer.parent) is None
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the content digest can tell
    optimizer.write_bytes(bytes(data))

    resumed = train(recipe, "--resume")
    assert resumed.returncode == 0, resumed.output
    text = " ".join(resumed.stderr.split())
    assert "skipping checkpoint-4: optimizer.pt changed since it was saved" in text
    assert "resuming from checkpoint-2" in text
    assert weights_hash(run) == weights_hash(lora_reference["run"])


def test_full_kill_mid_step_with_torn_newest_checkpoint_resumes_exactly(workdir, full_reference):
    recipe = recipe_for(workdir, "full-faults", method="full")
    run = workdir["root"] / "full-faults"
    killed = train(recipe, kill_at="step:5")
    assert killed.returncode == -signal.SIGKILL, killed.output
    newest = run / "checkpoints" / "checkpoint-4"
    assert checkpoint_problem(newest) is None
    weights = newest / "model.safetensors"
    with weights.open("r+b") as handle:  # tear it: as if the disk lost the tail of the file
        handle.truncate(weights.stat().st_size // 2)

    resumed = train(recipe, "--resume")
    assert resumed.returncode == 0, resumed.output
    assert "skipping checkpoint-4: model.safetensors has" in " ".join(resumed.stderr.split())
    assert "resuming from checkpoint-2" in resumed.stderr
    assert weights_hash(run) == full_reference["sha"]


def test_lock_of_a_live_process_refuses_and_a_reused_pid_is_taken_over(tmp_path):
    run = RunDir.at(tmp_path)
    parent = os.getppid()  # alive for as long as this test runs
    run.lock.write_text(f"{parent} {_start_time(parent)}")
    with pytest.raises(TrainError, match=f"another fnsft train \\(pid {parent}\\)"):
        RunLock(run).__enter__()
    run.lock.write_text(f"{parent} 1")  # same pid, another start time: the pid was reused after a crash
    with RunLock(run):
        assert run.lock.read_text().split()[0] == str(os.getpid())
    assert not run.lock.exists()


def test_lock_with_my_pid_but_another_start_time_is_stale(tmp_path):
    # a container killed mid-run leaves a lock naming the pid the next container's fnsft gets again
    run = RunDir.at(tmp_path)
    run.lock.write_text(f"{os.getpid()} 1")
    with RunLock(run):
        assert run.lock.read_text() == f"{os.getpid()} {_start_time(os.getpid())}"
    run.lock.write_text(f"{os.getpid()} {_start_time(os.getpid())}")  # truly mine: still refused
    with pytest.raises(TrainError, match="another fnsft train"):
        RunLock(run).__enter__()


def test_unwritable_output_dir_is_a_clear_error(tiny_recipe, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(app, ["train", str(tiny_recipe()), "--output_dir", str(blocker / "run")])
    assert result.exit_code == 2 and "output directory is not writable" in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_read_only_output_dir_is_a_clear_error(tiny_recipe, tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        result = CliRunner().invoke(app, ["train", str(tiny_recipe()), "--output_dir", str(parent / "run")])
    finally:
        parent.chmod(0o700)
    assert result.exit_code == 2 and "not writable" in result.output


def test_too_little_disk_is_refused_before_training(tiny_recipe, tmp_path, monkeypatch):
    real_disk_usage = shutil.disk_usage

    def nearly_full(path):
        return real_disk_usage(path)._replace(free=1 << 20)  # 1 MiB free

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe(extra="method:\n  name: full\n"))])
    assert result.exit_code == 2, result.output
    assert "1.0 MiB free, but this run writes about" in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_trust_remote_code_warning_names_the_repository(tiny_recipe, tiny_llama_dir):
    result = CliRunner().invoke(app, ["train", str(tiny_recipe()), "--trust_remote_code", "--max_steps", "1"])
    assert result.exit_code == 0, result.output
    assert f"trust_remote_code is on: code from {tiny_llama_dir}" in " ".join(result.output.split())


@pytest.mark.slow
def test_sigint_before_training_exits_130_and_leaves_nothing(workdir):
    recipe = recipe_for(workdir, "interrupted-early")
    result = train(recipe, kill_at="sigint:0")
    assert result.returncode == 130, result.output
    assert "interrupted by SIGINT before training started" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not (workdir["root"] / "interrupted-early").exists()


KILL_POINTS = ["step:3", "save:4", "eval:3", "eval:0", "sigint:4", "sigterm:2"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_kill_matrix_resume_is_exact(workdir, lora_reference, full_reference, method, kill_at):
    name = f"matrix-{method}-{kill_at.replace(':', '-')}"
    recipe = recipe_for(workdir, name, method=method)
    run = workdir["root"] / name
    interrupted = train(recipe, kill_at=kill_at)
    point = kill_at.split(":")[0]
    expected = {"sigint": 128 + signal.SIGINT, "sigterm": 128 + signal.SIGTERM}.get(point, -signal.SIGKILL)
    assert interrupted.returncode == expected, interrupted.output
    resumed = train(recipe, "--resume")
    assert resumed.returncode == 0, resumed.output
    reference = weights_hash(lora_reference["run"]) if method == "lora" else full_reference["sha"]
    assert weights_hash(run) == reference


@pytest.mark.slow
def test_sigterm_to_one_rank_of_two_stops_both_at_the_same_step(workdir):
    """`--nproc 2` (gloo DDP): SIGTERM reaching rank 1 only must stop both ranks after the same step with one
    checkpoint, not leave rank 0 waiting in its next all-reduce; resuming then ends where an uninterrupted
    two-process run ends."""
    extra = "distributed:\n  num_processes: 2\n"
    reference = train(recipe_for(workdir, "ddp-reference", extra=extra))
    assert reference.returncode == 0, reference.output
    recipe = recipe_for(workdir, "ddp-preempted", extra=extra)
    run = workdir["root"] / "ddp-preempted"

    preempted = train(recipe, kill_at="sigterm:3@1")
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.output[-3000:]
    assert checkpoint_problem(run / "checkpoints" / "checkpoint-3") is None
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]

    resumed = train(run / "recipe.yaml", "--resume")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert "resuming from checkpoint-3" in resumed.stderr
    assert weights_hash(run) == weights_hash(workdir["root"] / "ddp-reference")


def test_fault_injection_lives_in_the_tests_only():
    """fnsft's code carries no test hook: the kill points are armed by tests/train/faults/ alone."""
    package = Path(__file__).resolve().parents[2] / "fnsft"
    assert not [path for path in package.rglob("*.py") if "FNSFT_TEST_KILL_AT" in path.read_text(encoding="utf-8")]
    assert "FNSFT_TEST_KILL_AT" in (FAULTS / "kill_points.py").read_text(encoding="utf-8")


def test_disk_filling_up_during_the_run_stops_before_the_next_save(tiny_recipe, tmp_path, monkeypatch):
    """Free space is re-checked before each save against the size of the checkpoint last written."""
    real_disk_usage = shutil.disk_usage
    run = tmp_path / "run"

    def filling_up(path):
        usage = real_disk_usage(path)
        return usage._replace(free=1 << 20) if (run / "checkpoints" / "checkpoint-2").is_dir() else usage

    monkeypatch.setattr(shutil, "disk_usage", filling_up)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe())])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "stopped before saving checkpoint-4: 1.0 MiB free" in text
    assert f"the last complete checkpoint is {run / 'checkpoints' / 'checkpoint-2'}" in text
    assert not (run / "checkpoints" / "checkpoint-4").exists() and not (run / "adapter").exists()
