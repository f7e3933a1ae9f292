"""`fnsft migrate-config --from`: real configs of axolotl, LLaMA-Factory, torchtune and TRL become fnsft recipes.

The fixtures under tests/recipe/foreign/ are those tools' own example configs, copied verbatim with their source
URL and commit on the first line. The golden table below was written by reading each file and the tool's
documented defaults, not by running the converter: it is what that tool would have launched.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.errors import FnsftError, RecipeError
from fnsft.recipe import foreign
from fnsft.recipe.foreign import Status, convert_file, detect_tool
from fnsft.recipe.load import load_recipe

FIXTURES = Path(__file__).parent / "foreign"
TOOL_DIRS = {"axolotl": "axolotl", "llama-factory": "llama_factory", "torchtune": "torchtune", "trl": "trl"}
REPO = Path(__file__).resolve().parents[2]

# file: (model, method, quantization bits or None, lr, epochs, micro-batch, accumulation, max_length, r, alpha)
GOLDEN = {
    "axolotl/lora-1b.yml": ("NousResearch/Llama-3.2-1B", "lora", None, 2e-4, 1, 2, 2, 2048, 16, 32),
    "axolotl/qlora-1b.yml": ("NousResearch/Llama-3.2-1B", "qlora", 4, 2e-4, 1, 2, 4, 2048, 32, 16),
    "axolotl/fft-8b.yaml": ("meta-llama/Meta-Llama-3-8B", "full", None, 2e-5, 1, 1, 8, 8192, None, None),
    "axolotl/qlora-fsdp-70b.yaml": ("casperhansen/llama-3-70b-fp16", "qlora", 4, 1e-5, 4, 1, 4, 512, 8, 16),
    "axolotl/instruct-lora-8b.yml": ("NousResearch/Meta-Llama-3-8B-Instruct", "qlora", 8, 2e-4, 4, 2, 4, 4096, 32, 16),
    "axolotl/qwen3-32b-qlora.yaml": ("Qwen/Qwen3-32B", "qlora", 4, 2e-4, 1, 1, 2, 2048, 16, 32),
    "axolotl/bigstral-ds-zero3.yaml": ("mistral-community/Mixtral-8x22B-v0.1", "full", None, 1e-4, 3, 1, 1, 2048,
                                       None, None),
    "axolotl/mistral-lora.yml": ("mistralai/Mistral-7B-v0.1", "qlora", 8, 2e-4, 1, 2, 4, 8192, 32, 16),
    # LLaMA-Factory: lora_rank 8 and lora_alpha = 2 × rank when absent; HF TrainingArguments underneath
    "llama_factory/llama3_lora_sft.yaml": ("meta-llama/Meta-Llama-3-8B-Instruct", "lora", None, 1e-4, 3, 1, 8, 2048,
                                           8, 16),
    "llama_factory/llama3_lora_sft_ds3.yaml": ("meta-llama/Meta-Llama-3-8B-Instruct", "lora", None, 1e-4, 3, 1, 2,
                                               2048, 8, 16),
    "llama_factory/qwen3_lora_sft.yaml": ("Qwen/Qwen3-4B-Instruct-2507", "lora", None, 1e-4, 3, 1, 8, 2048, 8, 16),
    "llama_factory/llama3_full_sft_multi_gpu.yaml": ("meta-llama/Meta-Llama-3-8B-Instruct", "full", None, 1e-4, 3, 1,
                                                     2, 1024, None, None),
    "llama_factory/llama3_lora_sft_otfq.yaml": ("meta-llama/Meta-Llama-3-8B-Instruct", "qlora", 4, 1e-4, 3, 1, 8,
                                                2048, 8, 16),
    "llama_factory/llama3.2_lora_sft.yaml": ("meta-llama/Llama-3.2-1B-Instruct", "lora", None, 1e-4, 3, 1, 8, 1024,
                                             8, 16),
    "llama_factory/qwen3_full_sft.yaml": ("Qwen/Qwen3-8B", "full", None, 2e-5, 5, 1, 2, 131072, None, None),
    "llama_factory/qwen2_5_full_sft_fsdp.yaml": ("Qwen/Qwen2.5-7B-Instruct", "full", None, 2e-5, 5, 1, 2, 32768,
                                                 None, None),
    # torchtune: the model is the checkpoint `tune download` fetched; torch.optim.AdamW's lr when absent
    "torchtune/llama3_1-8B_qlora_single_device.yaml": ("meta-llama/Meta-Llama-3.1-8B-Instruct", "qlora", 4, 3e-4, 1,
                                                       2, 16, 2048, 8, 16),
    "torchtune/llama3_1-8B_full.yaml": ("meta-llama/Meta-Llama-3.1-8B-Instruct", "full", None, 2e-5, 3, 2, 1, 2048,
                                        None, None),
    "torchtune/llama3_1-8B_lora.yaml": ("meta-llama/Meta-Llama-3.1-8B-Instruct", "lora", None, 3e-4, 1, 2, 32, 2048,
                                        8, 16),
    "torchtune/llama3_1-8B_full_single_device.yaml": ("meta-llama/Meta-Llama-3.1-8B-Instruct", "full", None, 2e-5, 1,
                                                      2, 1, 2048, None, None),
    "torchtune/llama3_2-1B_lora_single_device.yaml": ("meta-llama/Llama-3.2-1B-Instruct", "lora", None, 3e-4, 1, 4,
                                                      8, 2048, 64, 128),
    "torchtune/qwen2_5-7B_lora_single_device.yaml": ("Qwen/Qwen2.5-7B-Instruct", "lora", None, 3e-4, 1, 2, 8, 2048,
                                                     8, 16),
    "torchtune/gemma-2B_qlora_single_device.yaml": ("google/gemma-2b", "qlora", 4, 2e-5, 3, 4, 4, 2048, 64, 128),
    "torchtune/llama3_1-70B_lora.yaml": ("meta-llama/Meta-Llama-3.1-70B-Instruct", "lora", None, 3e-4, 1, 2, 1, 2048,
                                         16, 32),
    # TRL: SFTConfig/ModelConfig defaults (lr 2e-5, 3 epochs, batch 8, max_length 1024, lora 16/32)
    "trl/example_config.yaml": ("Qwen/Qwen2.5-0.5B", "full", None, 1e-4, 3, 8, 1, 1024, None, None),
    "trl/gpt-oss-sft_lora.yaml": ("openai/gpt-oss-20b", "lora", None, 2e-4, 1, 4, 4, 4096, 32, 64),
    "trl/zephyr-7b-beta-sft-config_full.yaml": ("mistralai/Mistral-7B-v0.1", "full", None, 2e-5, 1, 16, 1, 2048,
                                                None, None),
    "trl/zephyr-7b-beta-sft-config_qlora.yaml": ("mistralai/Mistral-7B-v0.1", "qlora", 4, 2e-4, 1, 4, 2, 2048, 16, 16),
    "trl/smollm2-sft-config.yaml": ("HuggingFaceTB/SmolLM2-1.7B", "full", None, 3e-4, 2, 4, 4, 8192, None, None),
    "trl/zephyr-2b-gemma-sft-config_full.yaml": ("google/gemma-2b", "full", None, 2e-5, 3, 4, 4, 2048, None, None),
    "trl/starchat2-15b-sft-config_v0.1.yaml": ("bigcode/starcoder2-15b", "full", None, 2e-5, 3, 8, 2, 2048, None,
                                               None),
    "trl/kfto-llama-3.3-70b-lora-fsdp.yaml": ("meta-llama/Llama-3.3-70B-Instruct", "lora", None, 2e-4, 3, 64, 1, 1024,
                                              16, 8),
}


def _convert(relative: str, tmp_path: Path) -> foreign.ForeignConversion:
    return convert_file(FIXTURES / relative, command="test", output=tmp_path / "out.yaml")


def test_every_fixture_is_golden_and_at_least_eight_per_tool():
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*") if p.is_file()}
    assert on_disk == set(GOLDEN)
    for directory in TOOL_DIRS.values():
        assert sum(name.startswith(directory + "/") for name in GOLDEN) >= 8
    assert all((FIXTURES / name).read_text().startswith("# source: https://github.com/") for name in GOLDEN)


@pytest.mark.parametrize("relative", sorted(GOLDEN))
def test_conversion_runs_what_the_tool_would_run(relative, tmp_path):
    model, method, bits, lr, epochs, batch, accumulation, length, r, alpha = GOLDEN[relative]
    result = _convert(relative, tmp_path)
    assert result.tool == next(tool for tool, d in TOOL_DIRS.items() if relative.startswith(d + "/"))
    recipe = result.recipe.resolved()
    assert recipe.model.name_or_path == model
    assert recipe.method.name == method
    if method == "qlora":
        assert recipe.method.quantization.bits == bits
    assert recipe.training.learning_rate == pytest.approx(lr)
    assert recipe.training.num_train_epochs == epochs
    assert recipe.training.per_device_train_batch_size == batch
    assert recipe.training.gradient_accumulation_steps == accumulation
    assert recipe.data.max_length == length
    if method != "full":
        assert (recipe.method.lora.r, recipe.method.lora.alpha) == (r, alpha)


@pytest.mark.parametrize("relative", sorted(GOLDEN))
def test_every_source_key_ends_in_one_status_and_the_recipe_loads(relative, tmp_path):
    result = _convert(relative, tmp_path)
    source = yaml.safe_load((FIXTURES / relative).read_text())
    sources = [row.source for row in result.rows]
    for key in source:
        assert any(s == key or s.startswith(f"{key}.") or s.startswith(f"{key}[") for s in sources), key
    # the text written is a recipe `fnsft train` loads, with the commands at the top
    out = tmp_path / "out.yaml"
    out.write_text(result.text)
    load_recipe(out)
    assert "# made by: test" in result.text and f"# run it:  fnsft train {out}" in result.text
    for row in result.unsupported_rows():
        assert f"#   {row.source}:" in result.text  # listed at the end of the recipe, never dropped


def test_defaults_say_whose_they_are(tmp_path):
    text = _convert("llama_factory/llama3_lora_sft_ds3.yaml", tmp_path).text
    assert "# default of llama-factory: lora_rank: 8" in text
    assert "# default of llama-factory: lora_alpha: lora_rank * 2" in text
    torchtune_text = _convert("torchtune/llama3_1-8B_full.yaml", tmp_path).text
    assert "loss_on: all" in torchtune_text  # alpaca_dataset trains on the prompt too unless told otherwise
    assert "lr_scheduler_type: constant" in torchtune_text  # no lr_scheduler: torchtune keeps the lr constant


def test_source_comments_survive_on_one_to_one_keys(tmp_path):
    text = _convert("llama_factory/llama3_lora_sft_ds3.yaml", tmp_path).text
    strategy_line = next(line for line in text.splitlines() if line.strip().startswith("strategy:"))
    assert "zero3" in strategy_line and "# choices: [ds_z0_config.json" in strategy_line


def test_distributed_settings_become_a_strategy(tmp_path):
    assert _convert("axolotl/qlora-fsdp-70b.yaml", tmp_path).recipe.distributed.offload == "params"
    for relative, strategy in [("axolotl/qlora-fsdp-70b.yaml", "fsdp"), ("axolotl/bigstral-ds-zero3.yaml", "zero3"),
                               ("llama_factory/llama3_lora_sft_ds3.yaml", "zero3"),
                               ("torchtune/llama3_1-8B_full.yaml", "fsdp"),
                               ("trl/kfto-llama-3.3-70b-lora-fsdp.yaml", "fsdp")]:
        distributed = _convert(relative, tmp_path).recipe.distributed
        assert distributed.strategy == strategy, relative
        assert distributed.num_processes >= 2
    assert _convert("torchtune/llama3_1-8B_full.yaml", tmp_path).recipe.distributed.num_processes == 4


@pytest.mark.parametrize("relative", sorted(GOLDEN))
def test_auto_detects_each_tool(relative):
    expected = next(tool for tool, d in TOOL_DIRS.items() if relative.startswith(d + "/"))
    assert detect_tool(foreign.read_config(FIXTURES / relative)) == expected


def test_fnsft_recipes_are_not_foreign():
    for recipe in (REPO / "recipes").glob("*.yaml"):
        assert detect_tool(foreign.read_config(recipe)) is None, recipe
    predecessor = {"model_name_or_path": "gpt2", "dataset_name_or_path": "tatsu-lab/alpaca", "no_peft": True}
    assert detect_tool(predecessor) is None


def test_trl_defaults_match_the_installed_trl():
    from trl import ModelConfig, SFTConfig
    from trl.scripts.utils import ScriptArguments

    installed = {}
    for cls in (SFTConfig, ModelConfig, ScriptArguments):
        installed.update({f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING})
    for key, value in foreign.TOOLS["trl"].DEFAULTS.items():
        assert installed[key] == value, key


def test_interpolations_resolve_against_the_file_or_are_flagged(tmp_path):
    config = tmp_path / "tt.yaml"
    config.write_text(
        "model:\n  _component_: torchtune.models.llama3_2.lora_llama3_2_1b\n  lora_attn_modules: [q_proj]\n"
        "  lora_rank: 8\n  lora_alpha: 16\n"
        "checkpointer:\n  checkpoint_dir: /nowhere/Llama-3.2-1B\n"
        "dataset:\n  _component_: torchtune.datasets.alpaca_dataset\n"
        "optimizer:\n  _component_: torch.optim.AdamW\n  lr: 1e-4\n"
        "run_root: /data/runs\noutput_dir: ${run_root}/lora\nepochs: 1\nbatch_size: 2\n"
        "metric_logger:\n  _component_: torchtune.training.metric_logging.DiskLogger\n  log_dir: ${oc.env:LOGS}\n")
    result = convert_file(config, command="t", output=tmp_path / "o.yaml")
    assert result.recipe.output.dir == "/data/runs/lora"
    env_config = tmp_path / "tt2.yaml"
    env_config.write_text(config.read_text().replace("${run_root}/lora", "${oc.env:RUNS}/lora"))
    result = convert_file(env_config, command="t", output=tmp_path / "o.yaml")
    row = next(row for row in result.rows if row.source == "output_dir")
    assert row.status == Status.APPROXIMATED and "environment" in row.note


def test_cli_auto_detects_reports_and_writes(tmp_path):
    source = tmp_path / "qlora-1b.yml"
    source.write_text((FIXTURES / "axolotl/qlora-1b.yml").read_text())
    runner = CliRunner()
    result = runner.invoke(app, ["migrate-config", str(source), "--report"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "read as a config of axolotl" in result.output
    assert "special_tokens" in result.output and "not supported" in result.output
    written = tmp_path / "qlora-1b-fnsft.yaml"
    assert written.is_file()
    validate = runner.invoke(app, ["recipe", "validate", str(written)])
    assert validate.exit_code == 0, validate.output
    again = runner.invoke(app, ["migrate-config", str(source)])
    assert again.exit_code == 2 and "already exists" in again.output
    mixed = runner.invoke(app, ["migrate-config", str(source), "--from", "axolotl", "--to", "full"])
    assert mixed.exit_code == 2 and "--from" in mixed.output


def test_estimate_runs_on_converted_recipes(tmp_path):
    """`fnsft estimate` answers offline for the recipes whose model the catalog knows; the rest fail cleanly."""
    runner = CliRunner()
    answered = 0
    for relative in sorted(GOLDEN):
        result = _convert(relative, tmp_path)
        out = tmp_path / (Path(relative).stem + ".yaml")
        out.write_text(result.text)
        estimate = runner.invoke(app, ["estimate", str(out), "--json"])
        assert estimate.exception is None or isinstance(estimate.exception, SystemExit), estimate.output
        if estimate.exit_code == 0:
            answered += 1
        else:
            assert estimate.exit_code == 2, (relative, estimate.output)
    assert answered >= 20


# --- property tests: any config of these shapes converts or fails with one RecipeError -------------------------

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 10_000), st.floats(allow_nan=False, width=32),
                    st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3))
_UNKNOWN = st.from_regex(r"zz_[a-z]{3,8}", fullmatch=True)


def _base_config(tool: str) -> dict:
    relative = next(name for name in sorted(GOLDEN) if name.startswith(TOOL_DIRS[tool] + "/"))
    return yaml.safe_load((FIXTURES / relative).read_text())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tool=st.sampled_from(sorted(TOOL_DIRS)), overwrite=st.data(),
       unknown=st.lists(_UNKNOWN, min_size=1, max_size=3, unique=True))
def test_random_configs_never_traceback_and_unknown_keys_are_reported(tool, overwrite, unknown, tmp_path):
    config = _base_config(tool)
    keys = sorted(k for k, v in config.items() if not isinstance(v, dict))
    for key in overwrite.draw(st.lists(st.sampled_from(keys), max_size=3, unique=True)):
        config[key] = overwrite.draw(_VALUES)
    for key in unknown:
        config[key] = "surprise"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        result = convert_file(path, tool, command="t", output=tmp_path / "o.yaml")
    except FnsftError as exc:
        assert str(exc)
        return
    for key in unknown:
        assert any(row.source == key and row.status == Status.UNSUPPORTED for row in result.rows), key
    assert all(isinstance(row.status, Status) for row in result.rows)


def test_wrong_types_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text((FIXTURES / "axolotl/lora-1b.yml").read_text().replace("lora_r: 16", "lora_r: sixteen"))
    with pytest.raises(RecipeError, match=r"bad\.yml:\d+: lora_r: 'sixteen' cannot be read"):
        convert_file(path, "axolotl", command="t", output=tmp_path / "o.yaml")


def test_an_infinite_count_names_the_file_and_line(tmp_path):
    """int(.inf) raises OverflowError, not ValueError: found by the random-config property test."""
    path = tmp_path / "inf.yml"
    path.write_text((FIXTURES / "axolotl/lora-1b.yml").read_text().replace(
        "gradient_accumulation_steps: 2", "gradient_accumulation_steps: .inf"))
    with pytest.raises(RecipeError, match=r"inf\.yml:\d+: gradient_accumulation_steps: .*cannot be read"):
        convert_file(path, "axolotl", command="t", output=tmp_path / "o.yaml")
