"""`fnsft estimate` from the command line: recipes, flags, JSON, errors, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from fnsft.cli import app

runner = CliRunner()


def _recipe(tmp_path, model: str, extra: str = "") -> str:
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "hi", "completion": "hello"}\n')
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""version: 1
model:
  name_or_path: {model}
data:
  path: {data}
  max_length: 2048
method:
  name: qlora
  lora:
    r: 32
training:
  per_device_train_batch_size: 2
  gradient_accumulation_steps: 8
{extra}""")
    return str(path)


def test_recipe_estimate_json_has_stable_keys(tmp_path):
    result = runner.invoke(app, ["estimate", _recipe(tmp_path, "meta-llama/Llama-3.1-8B"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == "fnsft-estimate/1"
    assert set(report) == {"schema", "model", "input", "bytes", "meters", "peak_phase", "warnings", "fit", "suggestions",
                           "recommendation", "accuracy"}
    meters = report["meters"]
    assert meters["allocated"] < meters["reserved"] < meters["device_used"] == report["bytes"]["total"]
    assert meters["fit_meter"] == "device_used"
    assert report["input"]["method"] == "qlora" and report["input"]["lora_r"] == 32
    assert report["input"]["seq_len"] == 2048 and report["input"]["gradient_accumulation_steps"] == 8
    assert report["bytes"]["quantization_constants"] > 0
    assert {row["gpu"] for row in report["fit"]} >= {"RTX4090", "A100-80GB"}


def test_flags_override_the_recipe(tmp_path):
    result = runner.invoke(app, ["estimate", _recipe(tmp_path, "meta-llama/Llama-3.1-8B"), "--method", "full",
                                 "--batch-size", "1", "--optimizer", "adamw_8bit", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"]["method"] == "full" and report["input"]["batch_size"] == 1


def test_recipe_with_a_local_model_dir(tmp_path, tiny_model_factory):
    result = runner.invoke(app, ["estimate", _recipe(tmp_path, str(tiny_model_factory("llama"))), "--device", "cpu",
                                 "--seq-len", "256"])
    assert result.exit_code == 0, result.output
    assert "device used" in result.stdout


def test_does_not_fit_lists_changes(tmp_path):
    result = runner.invoke(app, ["estimate", "--model", "meta-llama/Llama-2-7b-hf", "--method", "full",
                                 "--gpu-memory", "40GiB", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fit"][0]["fits"] is False
    assert report["suggestions"] and all(s["total_bytes"] <= 40 << 30 for s in report["suggestions"])


def test_table_output_mentions_every_component():
    result = runner.invoke(app, ["estimate", "--model", "Qwen/Qwen2.5-7B", "--method", "qlora", "--gpu", "RTX4090"])
    assert result.exit_code == 0, result.output
    for word in ("weights", "gradients", "optimizer states", "activations", "logits", "allocated", "reserved", "device used",
                 "RTX4090"):
        assert word in result.stdout


def test_bad_input_exits_2_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unknown = runner.invoke(app, ["estimate", "--model", "nobody/nothing-here"])
    assert unknown.exit_code == 2 and "--model path/config.json" in unknown.output
    gpu = runner.invoke(app, ["estimate", "--model", "gpt2", "--gpu", "Z80"])
    assert gpu.exit_code == 2 and "RTX4090" in gpu.output
    zero = runner.invoke(app, ["estimate", "--model", "gpt2", "--batch-size", "0"])
    assert zero.exit_code == 2 and "batch_size" in zero.output
    nothing = runner.invoke(app, ["estimate"])
    assert nothing.exit_code == 2 and "--model" in nothing.output


def test_seq_len_beyond_max_positions_is_a_warning_not_a_refusal():
    result = runner.invoke(app, ["estimate", "--model", "gpt2", "--seq-len", "4096", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert any("max_position_embeddings 1024" in warning for warning in report["warnings"])
    table = runner.invoke(app, ["estimate", "--model", "gpt2", "--seq-len", "4096"])
    assert table.exit_code == 0 and "warning: seq_len 4096" in table.stdout


def test_list_models():
    result = runner.invoke(app, ["estimate", "--list-models"])
    assert result.exit_code == 0 and "meta-llama/Llama-3.1-8B" in result.stdout


def test_estimate_imports_no_torch():
    code = ("import sys; from typer.testing import CliRunner; from fnsft.cli import app; "
            "r = CliRunner().invoke(app, ['estimate', '--model', 'meta-llama/Llama-3.1-8B', '--json']); "
            "assert r.exit_code == 0, r.output; "
            "assert not {'torch', 'transformers', 'peft', 'trl'} & set(sys.modules), 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_flag_reads_any_config_json(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 512, "num_hidden_layers": 6,
                                  "num_attention_heads": 8, "intermediate_size": 2048, "vocab_size": 50304}))
    result = runner.invoke(app, ["estimate", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"]["source"] == "config" and report["model"]["total_params"] == 70_426_624  # = pythia-70m
    both = runner.invoke(app, ["estimate", "--config", str(config), "--model", "gpt2"])
    assert both.exit_code == 2 and "not both" in both.output


def test_memory_saver_flags_reach_the_estimate():
    base = ["estimate", "--model", "meta-llama/Llama-3.1-8B", "--method", "full", "--batch-size", "1", "--json"]
    plain = json.loads(runner.invoke(app, [*base, "--loss", "plain"]).stdout)
    saver = runner.invoke(app, [*base, "--optimizer-in-backward", "--loss", "liger", "--activation-offload",
                                "--compile", "--eval-batch-size", "2"])
    assert saver.exit_code == 0, saver.output
    saved = json.loads(saver.stdout)
    assert plain["input"]["loss"] == "full_logits"
    assert saved["input"]["optimizer_in_backward"] and saved["input"]["loss"] == "liger"
    assert saved["bytes"]["gradients"] == 2 * 128256 * 4096  # the largest gradient: the embedding (bf16)
    assert saved["bytes"]["activations_offloaded"] > 0 and saved["bytes"]["evaluation"] > 0
    assert saved["meters"]["device_used"] < plain["meters"]["device_used"]
    accumulate = runner.invoke(app, [*base, "--optimizer-in-backward", "--gradient-accumulation-steps", "4"])
    assert accumulate.exit_code == 2 and "gradient_accumulation_steps 1" in accumulate.output


def test_estimate_prints_the_measured_error_band_and_where_the_table_is():
    import math
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    bench = json.loads((root / "bench" / "results" / "estimate_accuracy.json").read_text())
    runs = [abs(row["rel_error"]) for row in bench["rows"] if row["section"] in ("cpu_rss", "probe")]  # whole runs
    result = runner.invoke(app, ["estimate", "--model", "gpt2", "--json"])
    band = json.loads(result.stdout)["accuracy"]
    assert band["cpu"]["runs"] == len(runs) and math.isclose(band["cpu"]["max_abs_rel_error"], max(runs))
    assert (root / band["table"]).is_file()  # the table the line points to is in the repository
    table = runner.invoke(app, ["estimate", "--model", "gpt2"])
    assert f"within ±{100 * max(runs):.1f} %" in table.stdout and "estimate_accuracy.md" in table.stdout
