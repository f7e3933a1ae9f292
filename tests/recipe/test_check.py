"""Every recipe key changes the run or is an error/warning: the cross-field rules, and a table over the whole schema.

The table names, for each leaf key of the schema, what it reaches: a field of the SFTConfig / LoraConfig /
BitsAndBytesConfig fnsft builds (proven by building both and comparing), an argument of the `accelerate launch`
command (proven the same way), or the fnsft function that reads it (proven by reading that function's source).
The rules of fnsft.recipe.check cover the combinations in which a key would otherwise change nothing.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fnsft.errors import RecipeError
from fnsft.recipe.check import RULES, broken_rules, check
from fnsft.recipe.fields import schema_field
from fnsft.recipe.load import load_recipe
from fnsft.recipe.schema import Recipe

ROOT = Path(__file__).resolve().parents[2]


def leaf_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every dotted key of the schema whose value is not itself a section."""
    keys = []
    for name, field in model.model_fields.items():
        nested = [t for t in (field.annotation, *getattr(field.annotation, "__args__", ())) if isinstance(t, type)
                  and issubclass(t, BaseModel)]
        keys += leaf_keys(nested[0], f"{prefix}{name}.") if nested else [f"{prefix}{name}"]
    return keys


def make(**sections: dict[str, Any]) -> Recipe:
    data = {"model": {"name_or_path": "org/model"}, "data": {"path": "org/dataset"}}
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return Recipe.model_validate(data).resolved()


def with_key(recipe: Recipe, dotted: str, value: Any) -> Recipe:
    data = recipe.to_dict()
    *parents, key = dotted.split(".")
    node = data
    for parent in parents:
        if node.get(parent) is None:
            node[parent] = {}
        node = node[parent]
    node[key] = value
    return Recipe.model_validate(data).resolved()


# -- what each key reaches ----------------------------------------------------------------------------------------
# ("sft", SFTConfig attribute, another value), ("lora", LoraConfig attribute, value), ("bnb", BitsAndBytesConfig
# attribute, value), ("launch", accelerate argument, value), or ("reads", "module:function", None).
REACHES: dict[str, tuple[str, str, Any]] = {
    "version": ("reads", "fnsft.recipe.versions:upgrade", None),
    "model.name_or_path": ("reads", "fnsft.models:resolve_model", None),
    "model.revision": ("reads", "fnsft.models:resolve_model", None),
    "model.gguf_file": ("reads", "fnsft.models:resolve_model", None),
    "model.trust_remote_code": ("reads", "fnsft.models:load_causal_lm", None),
    "model.allow_pickle": ("reads", "fnsft.models:check_weight_safety", None),
    "model.dtype": ("reads", "fnsft.train.run:_load_model", None),
    "model.attn_implementation": ("reads", "fnsft.models:load_causal_lm", None),
    "data.path": ("reads", "fnsft.data.load:load_raw", None),
    "data.format": ("reads", "fnsft.data.prepare:detect", None),
    "data.config_name": ("reads", "fnsft.data.load:_load_hub", None),
    "data.revision": ("reads", "fnsft.data.load:_load_hub", None),
    "data.split": ("reads", "fnsft.data.load:_load_hub", None),
    "data.eval_split": ("reads", "fnsft.data.load:_load_hub", None),
    "data.validation_fraction": ("reads", "fnsft.data.prepare:split", None),
    "data.max_length": ("sft", "max_length", 256),
    "data.packing": ("sft", "packing", True),
    "data.loss_on": ("reads", "fnsft.data.prepare:template_options", None),
    "data.max_samples": ("reads", "fnsft.data.prepare:split", None),
    "data.system_prompt": ("reads", "fnsft.data.prepare:canonicalize", None),
    "data.chat_template": ("reads", "fnsft.data.prepare:prepare_datasets", None),
    "data.chat_template_kwargs": ("reads", "fnsft.data.prepare:template_options", None),
    "data.train_on": ("reads", "fnsft.data.prepare:template_options", None),
    "data.on_bad_row": ("reads", "fnsft.data.prepare:_map_rows", None),
    "data.fingerprint": ("reads", "fnsft.data.load:check_dataset_pin", None),
    "method.name": ("reads", "fnsft.train.build:quantization_config", None),
    "method.lora.r": ("lora", "r", 8),
    "method.lora.alpha": ("lora", "lora_alpha", 8),
    "method.lora.dropout": ("lora", "lora_dropout", 0.2),
    "method.lora.target_modules": ("lora", "target_modules", ["q_proj"]),
    "method.lora.bias": ("lora", "bias", "all"),
    "method.quantization.bits": ("bnb", "load_in_8bit", 8),
    "method.quantization.quant_type": ("bnb", "bnb_4bit_quant_type", "fp4"),
    "method.quantization.double_quant": ("bnb", "bnb_4bit_use_double_quant", False),
    "method.quantization.compute_dtype": ("bnb", "bnb_4bit_compute_dtype", "fp16"),
    "training.num_train_epochs": ("sft", "num_train_epochs", 1),
    "training.max_steps": ("sft", "max_steps", 5),
    "training.per_device_train_batch_size": ("sft", "per_device_train_batch_size", 1),
    "training.per_device_eval_batch_size": ("sft", "per_device_eval_batch_size", 1),
    "training.gradient_accumulation_steps": ("sft", "gradient_accumulation_steps", 2),
    "training.learning_rate": ("sft", "learning_rate", 1e-3),
    "training.lr_scheduler_type": ("sft", "lr_scheduler_type", "linear"),
    "training.warmup_ratio": ("sft", "warmup_steps", 0.5),
    "training.warmup_steps": ("sft", "warmup_steps", 7),
    "training.longest_batch_first": ("reads", "fnsft.train.run:_build_trainer", None),
    "data.sources": ("reads", "fnsft.data.mix:prepare_mixture", None),
    "data.mix": ("reads", "fnsft.data.mix:prepare_mixture", None),
    "data.mix_by": ("reads", "fnsft.data.mix:prepare_mixture", None),
    "data.temperature": ("reads", "fnsft.data.mix:prepare_mixture", None),
    "training.weight_decay": ("sft", "weight_decay", 0.5),
    "training.max_grad_norm": ("sft", "max_grad_norm", 0.5),
    "training.optimizer": ("sft", "optim", "sgd"),
    "training.precision": ("reads", "fnsft.train.run:_load_model", None),
    "training.gradient_checkpointing": ("sft", "activation_checkpointing", False),
    "training.seed": ("sft", "seed", 7),
    "training.logging_steps": ("sft", "logging_steps", 3),
    "training.save_steps": ("sft", "save_steps", 3),
    "training.save_total_limit": ("sft", "save_total_limit", 1),
    "training.eval_steps": ("sft", "eval_steps", 3),
    "output.dir": ("reads", "fnsft.train.run:run_training", None),
    "output.report_to": ("reads", "fnsft.train.build:report_targets", None),
    "output.run_name": ("sft", "run_name", "named"),
    "evaluation.exact_match_samples": ("reads", "fnsft.train.run:_before_training", None),
    "evaluation.max_new_tokens": ("reads", "fnsft.train.run:_before_training", None),
    "mask.path": ("reads", "fnsft.mask.apply:attach_training_masks", None),
    "mask.mode": ("reads", "fnsft.mask.apply:attach_training_masks", None),
    "mask.components": ("reads", "fnsft.mask.apply:attach_training_masks", None),
    "mask.layers": ("reads", "fnsft.mask.apply:attach_training_masks", None),
    "mask.freeze_masked_rows": ("reads", "fnsft.mask.apply:attach_training_masks", None),
    "distributed.strategy": ("launch", "--config_file", "zero3"),
    "distributed.num_processes": ("launch", "--num_processes", 4),
    "distributed.num_nodes": ("launch", "--num_machines", 3),
    "distributed.node_rank": ("launch", "--machine_rank", 1),
    "distributed.master_addr": ("launch", "--main_process_ip", "10.0.0.9"),
    "distributed.master_port": ("launch", "--main_process_port", 29999),
    "distributed.offload": ("launch", "--offload_optimizer_device", "optimizer"),
    "distributed.accelerate_config": ("launch", "--config_file", "OWN_CONFIG"),
}


def test_the_table_covers_every_schema_key():
    assert sorted(REACHES) == sorted(leaf_keys())


def _sft(recipe: Recipe, tmp_path: Path):
    from fnsft.train.build import sft_config

    return sft_config(recipe, tmp_path, "fp32", has_eval=True, callbacks_report=["none"])


def _argument(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize("key", [key for key, (kind, _, _) in REACHES.items() if kind == "reads"])
def test_key_is_read_by_its_consumer(key):
    module, function = REACHES[key][1].split(":")
    source = inspect.getsource(getattr(importlib.import_module(module), function))
    leaf = key.rsplit(".", 1)[-1]
    assert f".{leaf}" in source or f'"{leaf}"' in source, f"{REACHES[key][1]} does not read {key}"


@pytest.mark.parametrize("key", [key for key, (kind, _, _) in REACHES.items() if kind in ("sft", "lora")])
def test_key_changes_the_trainer_or_peft_config(key, tmp_path):
    from fnsft.train.build import lora_config

    kind, attribute, value = REACHES[key]
    base = make(training={"eval_steps": 10})
    build = (lambda r: _sft(r, tmp_path)) if kind == "sft" else lora_config
    before, after = getattr(build(base), attribute), getattr(build(with_key(base, key, value)), attribute)
    assert before != after, f"{key}={value!r} did not change {attribute}"


@pytest.mark.parametrize("key", [key for key, (kind, _, _) in REACHES.items() if kind == "bnb"])
def test_key_changes_the_quantization_config(key):
    pytest.importorskip("bitsandbytes")
    from fnsft.train.build import quantization_config

    _, attribute, value = REACHES[key]
    base = make(method={"name": "qlora"})
    before = getattr(quantization_config(base, "fp32"), attribute)
    assert before != getattr(quantization_config(with_key(base, key, value), "fp32"), attribute)


@pytest.mark.parametrize("key", [key for key, (kind, _, _) in REACHES.items() if kind == "launch"])
def test_key_changes_the_launch_command(key, tmp_path):
    from fnsft.train.launch import launch_command

    _, argument, value = REACHES[key]
    if value == "OWN_CONFIG":
        value = str(tmp_path / "accelerate.yaml")
        Path(value).write_text("compute_environment: LOCAL_MACHINE\n")
    base = make(distributed={"strategy": "zero3", "num_processes": 2, "num_nodes": 2})
    if key == "distributed.strategy":
        base = make(distributed={"num_processes": 2})
    before = _argument(launch_command(base, None, ["x.py"]), argument)
    assert before != _argument(launch_command(with_key(base, key, value), None, ["x.py"]), argument)


# -- the cross-field rules ----------------------------------------------------------------------------------------
# rule name → (recipe sections, processes) that break it.
EXAMPLES: dict[str, tuple[dict[str, Any], int]] = {
    "quantization needs qlora": ({"method": {"name": "full", "quantization": {"bits": 8}}}, 1),
    "8-bit ignores the 4-bit settings": ({"method": {"name": "qlora", "quantization": {"bits": 8, "quant_type": "fp4"}}}, 1),
    "full fine-tuning has no LoRA": ({"method": {"name": "full", "lora": {"r": 64}}}, 1),
    "node_rank below num_nodes": ({"distributed": {"num_nodes": 2, "node_rank": 2}}, 4),
    "offload goes in your own accelerate config": (
        {"distributed": {"accelerate_config": "x.yaml", "offload": "params"}}, 2),
    "the strategy must be able to offload": ({"distributed": {"strategy": "zero2", "offload": "params"}}, 2),
    "mixing settings need data.sources": ({"data": {"mix": "concat"}}, 1),
    "weights and temperature need a mix that reads them": (
        {"data": {"path": None, "sources": [{"path": "a.jsonl", "weight": 2}, {"path": "b.jsonl"}], "mix": "concat"}}, 1),
    "warmup in steps replaces the ratio": ({"training": {"warmup_steps": 10, "warmup_ratio": 0.1}}, 1),
    "launch settings need several processes": ({"distributed": {"offload": "params"}}, 1),
    "the rendezvous address is for several machines": ({"distributed": {"master_addr": "10.0.0.2"}}, 2),
    "evaluation settings need held-out data": ({"data": {"validation_fraction": 0}, "training": {"eval_steps": 5}}, 1),
    "the generation budget needs exact-match samples": ({"evaluation": {"max_new_tokens": 64}}, 1),
    "max_steps decides the length": ({"training": {"max_steps": 10, "num_train_epochs": 2}}, 1),
    "Hub dataset settings need a Hub dataset": ({"data": {"path": str(ROOT / "data"), "config_name": "x"}}, 1),
    "an evaluation split needs a Hub dataset": ({"data": {"path": str(ROOT / "data"), "eval_split": "test"}}, 1),
    "a model revision needs a Hub model": ({"model": {"name_or_path": str(ROOT), "revision": "main"}}, 1),
    "a system prompt needs conversations": ({"data": {"format": "text", "system_prompt": "Be brief."}}, 1),
}


def test_every_rule_has_an_example_and_names_real_keys():
    assert sorted(EXAMPLES) == sorted(rule.name for rule in RULES)
    for rule in RULES:
        for key in rule.keys:
            schema_field(key)  # KeyError for a key the schema does not have


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_rule_catches_its_example_and_says_which_key(rule):
    sections, processes = EXAMPLES[rule.name]
    recipe = make(**sections)
    assert rule in list(broken_rules(recipe, processes))
    message = rule.message(recipe, processes)
    assert any(key in message for key in rule.keys), message
    if rule.error:
        with pytest.raises(RecipeError, match="."):
            check(recipe, processes)
    else:
        assert message in check(recipe, processes)


def test_defaults_and_shipped_recipes_break_no_rule():
    assert check(make()) == []
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert check(load_recipe(path).resolved()) == [], path


def test_full_with_quantization_is_refused_by_recipe_validate(tmp_path):
    from typer.testing import CliRunner

    from fnsft.cli import app

    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nmodel: {name_or_path: m}\ndata: {path: d}\nmethod: {name: full, quantization: {bits: 8}}\n")
    result = CliRunner().invoke(app, ["recipe", "validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: method.quantization.bits is set but method.name is full" in " ".join(result.output.split())


def test_no_peft_with_lora_r_says_it_is_ignored():
    recipe = load_recipe(None, flags={"model_name_or_path": "m", "dataset_name_or_path": "d", "no_peft": True,
                                      "lora_r": 64}).resolved()
    assert check(recipe) == ["method.lora.r is ignored: full fine-tuning (--no_peft) trains every weight and builds "
                             "no LoRA adapter."]


def test_set_accepts_the_yaml_alias_of_a_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("version: 1\nmodel: {name_or_path: m}\ndata: {path: d}\nmask: {path: old.json}\n")
    assert load_recipe(path, sets=["mask.file=new.json"]).mask.path == "new.json"
    path.write_text("version: 1\nmodel: {name_or_path: m}\ndata: {path: d}\nmask: {file: old.json}\n")
    assert load_recipe(path, sets=["mask.file=new.json"]).mask.path == "new.json"
    assert load_recipe(path, sets=["mask.path=other.json"]).mask.path == "other.json"
