"""migrate-config with a GPU budget: the estimator picks the per-device batch and the memory savers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.errors import EstimateError
from fnsft.estimate import estimate, inputs_from_recipe, parse_memory
from fnsft.migrate.fit import GiB, fit_to_gpu, model_params
from fnsft.migrate.rules import effective_batch, migrate
from fnsft.recipe.load import load_recipe
from fnsft.recipe.schema import ModelSection, Recipe

GOLDEN = Path(__file__).parents[1] / "recipe" / "golden"


def full_7b(per_device=8, accumulation=2, gpus=1) -> Recipe:
    source = Recipe.model_validate({
        "model": {"name_or_path": "meta-llama/Llama-2-7b-hf"}, "data": {"path": "d", "max_length": 2048},
        "training": {"per_device_train_batch_size": per_device, "gradient_accumulation_steps": accumulation},
        "distributed": {"num_processes": gpus},
    })
    return migrate(source, "full").recipe


def peak(recipe: Recipe, **overrides) -> int:
    return estimate(inputs_from_recipe(recipe, **overrides)).total


def test_picks_the_largest_batch_that_fits_with_the_same_effective_batch():
    recipe = full_7b()
    budget = parse_memory("80GiB")
    fit = fit_to_gpu(recipe, budget, "80GiB")
    chosen = fit.recipe.training
    assert effective_batch(fit.recipe) == effective_batch(recipe)
    assert fit.peak_bytes == peak(fit.recipe) <= budget
    share = chosen.per_device_train_batch_size * chosen.gradient_accumulation_steps
    larger = [d for d in range(chosen.per_device_train_batch_size + 1, share + 1) if share % d == 0]
    for per_device in larger:  # the next larger micro-batches, same savers, do not fit
        assert peak(fit.recipe, batch_size=per_device, gradient_accumulation_steps=share // per_device) > budget


def test_savers_only_when_needed():
    roomy = fit_to_gpu(full_7b(), parse_memory("1000GiB"), "1000GiB")
    assert roomy.recipe.training.gradient_checkpointing is False  # fits without: faster steps
    assert roomy.recipe.training.optimizer == "adamw_torch"
    assert roomy.recipe.training.per_device_train_batch_size == 16  # the whole per-GPU share in one micro-batch
    tight = fit_to_gpu(full_7b(gpus=4), parse_memory("40GiB"), "40GiB")
    assert tight.recipe.distributed.strategy == "fsdp"  # 7B full states do not fit 40 GiB unsharded
    reasons = {c.path: c.reason for c in tight.changes}
    assert "needed to fit 40GiB" in reasons["distributed.strategy"]
    if tight.recipe.training.optimizer == "adamw_8bit":  # kept only when sharding alone is not enough
        without = tight.recipe.model_copy(update={"training": tight.recipe.training.model_copy(
            update={"optimizer": "adamw_torch"})})
        assert peak(without) > parse_memory("40GiB")


def test_nothing_fits_lists_the_estimators_ways_to_make_it_fit():
    with pytest.raises(EstimateError, match=r"nothing fits in 8GiB per GPU.*estimated at .* GiB") as caught:
        fit_to_gpu(full_7b(), parse_memory("8GiB"), "8GiB")
    assert "QLoRA" in str(caught.value) or "No single change" in str(caught.value)


def test_model_size_for_the_lr_rule_comes_from_the_estimator_offline(tmp_path):
    assert model_params(ModelSection(name_or_path="gpt2-medium")) == pytest.approx(355e6, rel=0.01)  # catalog
    config = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True,
              "max_position_embeddings": 4096}
    (tmp_path / "config.json").write_text(json.dumps(config))  # a local model dir named without its size
    assert model_params(ModelSection(name_or_path=str(tmp_path))) == pytest.approx(1.24e9, rel=0.02)
    assert model_params(ModelSection(name_or_path="someone/unknown-7B")) == 7e9  # not local, not in catalog: name


def test_cli_with_a_gpu_budget(tmp_path):
    source = tmp_path / "peft-7b.yaml"
    shutil.copy(GOLDEN / "v1" / "peft-7b.yaml", source)
    runner = CliRunner()
    result = runner.invoke(app, ["migrate-config", str(source), "--to", "full", "--gpu", "A100-80GB"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    written = load_recipe(tmp_path / "peft-7b-full.yaml")
    assert peak(written) <= 80 * GiB
    assert "estimated peak" in result.output and "A100-80GB" in result.output
    assert "--gpu A100-80GB" in (tmp_path / "peft-7b-full.yaml").read_text().splitlines()[1]
    small = runner.invoke(app, ["migrate-config", str(source), "--to", "full", "--gpu-memory", "8GiB", "-o",
                                str(tmp_path / "x.yaml")])
    assert small.exit_code == 2 and "nothing fits" in small.output and not (tmp_path / "x.yaml").exists()
    for bad in (["--gpu", "Z99"], ["--gpu-memory", "lots"]):
        refused = runner.invoke(app, ["migrate-config", str(source), "--to", "full", *bad])
        assert refused.exit_code == 2 and "Traceback" not in refused.output
