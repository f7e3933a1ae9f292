"""`fnsft migrate-config` through Typer's runner: files written or not, exit codes, messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.recipe.load import load_recipe

GOLDEN = Path(__file__).parents[1] / "recipe" / "golden"


@pytest.fixture
def peft_recipe(tmp_path) -> Path:
    path = tmp_path / "peft-7b.yaml"
    shutil.copy(GOLDEN / "v1" / "peft-7b.yaml", path)
    return path


def run(*args: str):
    return CliRunner().invoke(app, ["migrate-config", *map(str, args)], env={"COLUMNS": "200"})


def test_to_full_writes_next_to_the_input_and_prints_a_summary(peft_recipe):
    before = peft_recipe.read_bytes()
    result = run(peft_recipe, "--to", "full")
    assert result.exit_code == 0, result.output
    written = peft_recipe.with_name("peft-7b-full.yaml")
    assert load_recipe(written).method.name == "full"
    assert peft_recipe.read_bytes() == before  # the input is never touched without --in-place
    assert "training.learning_rate" in result.output and "2.0e-5" in result.output
    assert f"wrote {written}" in result.output.replace("\n", "")


def test_output_path_and_refusal_to_overwrite(peft_recipe, tmp_path):
    out = tmp_path / "sub" / "full.yaml"
    assert run(peft_recipe, "--to", "full", "-o", out).exit_code == 0
    first = out.read_text()
    again = run(peft_recipe, "--to", "qlora", "-o", out)
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert out.read_text() == first
    forced = run(peft_recipe, "--to", "qlora", "-o", out, "--force")
    assert forced.exit_code == 0 and load_recipe(out).method.name == "qlora"
    same = run(peft_recipe, "--to", "full", "-o", peft_recipe, "--force")
    assert same.exit_code == 2 and "--in-place" in same.output


def test_in_place_overwrites_the_input(peft_recipe):
    result = run(peft_recipe, "--to", "full", "--in-place")
    assert result.exit_code == 0, result.output
    assert load_recipe(peft_recipe).method.name == "full"
    assert not list(peft_recipe.parent.glob(".*.tmp"))  # the atomic write left no temporary file


def test_diff_prints_and_writes_nothing(peft_recipe):
    before = sorted(peft_recipe.parent.iterdir())
    result = run(peft_recipe, "--to", "full", "--diff")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"--- {peft_recipe}")
    assert "-  learning_rate: 2.0e-4" in result.output and "+  learning_rate: 2.0e-5" in result.output
    assert sorted(peft_recipe.parent.iterdir()) == before


def test_same_mode_says_so_and_exits_0_without_writing(peft_recipe):
    result = run(peft_recipe, "--to", "peft")
    assert result.exit_code == 0
    assert "already uses method 'lora'" in result.output and "no file written" in result.output
    assert sorted(p.name for p in peft_recipe.parent.iterdir()) == ["peft-7b.yaml"]


def test_upgrade_writes_v1_and_reports_unmapped_keys(tmp_path):
    old = tmp_path / "old.yaml"
    shutil.copy(GOLDEN / "v0" / "cli_flags_qlora8.yaml", old)
    result = run(old, "--upgrade")
    assert result.exit_code == 0, result.output
    assert "learnig_rate" in result.output and "unknown" in result.output  # reported, not silently dropped
    assert load_recipe(tmp_path / "old-v1.yaml").method.quantization.bits == 8
    current = run(tmp_path / "old-v1.yaml", "--upgrade")
    assert current.exit_code == 0 and "nothing to upgrade" in current.output


def test_num_gpus_keeps_the_effective_batch(peft_recipe, tmp_path):
    out = tmp_path / "full4.yaml"
    result = run(peft_recipe, "--to", "full", "--num-gpus", "4", "-o", out)
    assert result.exit_code == 0, result.output
    recipe = load_recipe(out)
    assert recipe.distributed.num_processes == 4
    assert recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps * 4 == 16
    assert "--num-gpus 4" in out.read_text().splitlines()[1]  # the header has the full command
    odd = run(peft_recipe, "--to", "full", "--num-gpus", "3", "-o", tmp_path / "x.yaml")
    assert odd.exit_code == 2 and "cannot be split evenly over 3 GPUs" in odd.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--to full|peft|qlora, or --upgrade"),
        (["--to", "lora"], "Invalid value"),
        (["--to", "full", "--in-place", "-o", "x.yaml"], "drop -o"),
        (["--to", "full", "--diff", "--in-place"], "--diff only prints"),
        (["--upgrade", "--num-gpus", "2"], "need --to"),
        (["--to", "full", "--gpu", "A100-80GB", "--gpu-memory", "80GiB"], "not both"),
    ],
)
def test_bad_options_exit_2_with_a_message(peft_recipe, args, message):
    result = run(peft_recipe, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_recipes_exit_2_with_file_and_line(tmp_path):
    missing = run(tmp_path / "nope.yaml", "--to", "full")
    assert missing.exit_code == 2 and "recipe file not found" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel:\n  name_or_path: m\ndata:\n  path: d\ntraining:\n  warmup_ratio: 3\n")
    invalid = run(bad, "--to", "full")
    assert invalid.exit_code == 2 and f"{bad}:7: training.warmup_ratio" in invalid.output
    future = tmp_path / "future.yaml"
    future.write_text("version: 9\n")
    assert "recipe version 9 is not supported" in run(future, "--upgrade").output
