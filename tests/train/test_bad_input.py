"""Bad input found by `fnsft train` (and the commands that read its run directory): exit 2 with one line naming
the file, and a run directory left as it was, or removed when this run created it and trained nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.errors import ExitStatus
from fnsft.train.outdir import COMPLETION_MARKER, checkpoint_problem, write_completion_marker


def _explode(*args, **kwargs):
    raise RuntimeError("boom")


def test_unexpected_exception_in_train_leaves_no_run_dir(monkeypatch, tiny_recipe, tmp_path):
    monkeypatch.setattr("fnsft.data.prepare.prepare_datasets", _explode)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe())])
    assert result.exit_code == ExitStatus.UNEXPECTED, result.output
    assert "unexpected RuntimeError: boom" in result.output
    assert not (tmp_path / "run").exists()


def _corrupt_model(source: Path, target: Path, how: str) -> Path:
    import shutil

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "random": bytes(range(256)) * 64}[how])
    return target


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_damaged_model_weights_are_named(tiny_recipe, tiny_llama_dir, tmp_path, how):
    model = _corrupt_model(tiny_llama_dir, tmp_path / f"model-{how}", how)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe()), "--set", f"model.name_or_path={model}"])
    assert result.exit_code == 2, result.output
    assert f"{model / 'model.safetensors'}:" in " ".join(result.output.split()).replace("\n", "")
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_damaged_model_weights_in_mask_eval(tiny_llama_dir, tmp_path, alpaca_file):
    model = _corrupt_model(tiny_llama_dir, tmp_path / "model", "truncated")
    mask = tmp_path / "mask.json"
    mask.write_text("{}")
    result = CliRunner().invoke(app, ["mask", "eval", str(mask), "--model", str(model), "--data", str(alpaca_file)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def _checkpoint(tmp_path: Path, trainer_state: str) -> Path:
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    for name in ("optimizer.pt", "scheduler.pt"):
        (checkpoint / name).write_bytes(b"x" * 64)
    (checkpoint / "trainer_state.json").write_text(trainer_state)
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (checkpoint / "adapter_model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    write_completion_marker(checkpoint)
    assert (checkpoint / COMPLETION_MARKER).is_file()
    return checkpoint


def test_trainer_state_without_state_is_not_resumed_from(tmp_path):
    assert "trainer_state.json holds no training state" in checkpoint_problem(_checkpoint(tmp_path, "{}"))


@pytest.mark.parametrize("name", ["optimizer.pt", "adapter_model.safetensors"])
def test_same_size_byte_flip_is_found_by_the_content_digest(tmp_path, name):
    checkpoint = _checkpoint(tmp_path, json.dumps({"global_step": 2, "log_history": []}))
    assert checkpoint_problem(checkpoint, verify_contents=True) is None
    data = bytearray((checkpoint / name).read_bytes())
    data[-1] ^= 0x01
    (checkpoint / name).write_bytes(bytes(data))
    assert checkpoint_problem(checkpoint) is None  # same size: the cheap check cannot see it
    assert checkpoint_problem(checkpoint, verify_contents=True) == (
        f"{name} changed since it was saved (its SHA-256 differs from the one recorded)")


@pytest.mark.parametrize("content", ["{", "[1, 2]", ""])
def test_damaged_manifest_is_named_by_export_and_push(tiny_recipe, tmp_path, content):
    from fnsft.recipe.load import dump_recipe, load_recipe

    run = tmp_path / "done"
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text(dump_recipe(load_recipe(tiny_recipe()).resolved()))
    (run / "manifest.json").write_text(content)
    for args in (["export", str(run), "--merge"], ["push", str(run), "--repo-id", "me/x", "--dry-run"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "manifest.json" in result.output and "Traceback" not in result.output


def test_diverging_run_stops_at_the_first_non_finite_step(tiny_recipe, tmp_path):
    """lr 1e30 is finite (the schema takes it); the update makes the next gradients NaN. The run must stop there,
    name the step and the last good checkpoint, and never say done or write an adapter."""
    result = CliRunner().invoke(app, ["train", str(tiny_recipe()), "--set", "training.learning_rate=1e30",
                                      "--set", "training.save_steps=1"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "training stopped at step 3: the gradient norm is nan" in text
    assert f"the last good checkpoint is {tmp_path / 'run' / 'checkpoints' / 'checkpoint-2'}" in text
    assert "done" not in result.output and not (tmp_path / "run" / "adapter").exists()
    assert not (tmp_path / "run" / "checkpoints" / "checkpoint-3").exists()


def test_lora_dropout_on_moe_experts_is_a_recipe_error_and_dropout_0_trains(tiny_recipe, tiny_model_factory,
                                                                             tiny_llama_dir, tmp_path):
    recipe = tiny_recipe()
    recipe.write_text(recipe.read_text().replace(str(tiny_llama_dir), str(tiny_model_factory("mixtral"))))
    refused = CliRunner().invoke(app, ["train", str(recipe)])
    assert refused.exit_code == ExitStatus.BAD_INPUT, refused.output
    assert "method.lora.dropout: 0.05 cannot be used here: LoRA on mixtral's MoE" in refused.output
    assert "PEFT said" not in refused.output  # caught from the shapes, before the weights load
    assert not (tmp_path / "run").exists()
    trained = CliRunner().invoke(app, ["train", str(recipe), "--lora_dropout", "0"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
