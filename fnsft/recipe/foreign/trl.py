"""TRL configs (``trl sft --config FILE``, also the alignment-handbook recipes built on it) → fnsft recipes.

A TRL config is one flat mapping of ``ScriptArguments`` + ``ModelConfig`` + ``SFTConfig`` fields. Defaults are
those dataclasses' own in TRL 1.16 (``tests/recipe/test_foreign.py`` checks this table against the installed
trl). With ``use_peft`` and no ``lora_target_modules`` TRL leaves the choice to PEFT, whose default for the
Llama/Mistral/Qwen families is the q and v projections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fnsft.recipe.foreign import base
from fnsft.recipe.foreign.base import MISSING, Conversion, KeyReport, Status

NAME = "trl"
VERSION = "TRL 1.16 SFTConfig/ModelConfig/ScriptArguments"
SIGNATURE = ("model_name_or_path", "dataset_name", "use_peft", "max_length", "max_seq_length", "dataset_mixture",
             "dataset_train_split", "assistant_only_loss", "completion_only_loss", "lora_r", "dataset_mixer")
DEFAULTS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "max_length": 1024,
    "packing": False,
    "gradient_checkpointing": True,
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch_fused",
    "logging_steps": 10,
    "save_steps": 500,
    "seed": 42,
    "max_steps": -1,
    "use_peft": False,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "dataset_train_split": "train",
}
#: PEFT's target modules when none are named (its TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING for
#: llama, mistral, qwen2, gemma, ...).
PEFT_DEFAULT_TARGETS = ["q_proj", "v_proj"]
IGNORED = {
    "dataset_num_proc": "tokenization runs in one process (fast tokenizers are multi-threaded)",
    "do_eval": "fnsft evaluates whenever the data has a held-out part",
    "eval_strategy": "fnsft evaluates every training.eval_steps (or at each epoch end)",
    "evaluation_strategy": "fnsft evaluates every training.eval_steps (or at each epoch end)",
    "logging_strategy": "fnsft logs every training.logging_steps",
    "save_strategy": "fnsft saves every training.save_steps",
    "log_level": "fnsft logs at INFO",
    "hub_model_id": "publish with `fnsft push RUN --repo-id ...` after training",
    "hub_strategy": "publish with `fnsft push` after training",
    "push_to_hub": "publish with `fnsft push` after training",
    "overwrite_output_dir": "fnsft refuses a run directory that holds a different run; use a new output.dir",
    "remove_unused_columns": "fnsft keeps only the columns of the detected format",
    "gradient_checkpointing_kwargs": "fnsft always uses non-reentrant checkpointing",
    "tf32": "a matmul precision mode; fnsft leaves PyTorch's default",
    "use_liger": "Liger kernels are not wired into fnsft train yet",
    "use_liger_kernel": "Liger kernels are not wired into fnsft train yet",
    "dataset_kwargs": "fnsft renders every example with the chat template (its own special tokens)",
    "lr_scheduler_kwargs": "fnsft's schedules take no extra arguments",
    "ddp_timeout": "fnsft uses the launcher's default timeout",
    "average_tokens_across_devices": "the trainer default in fnsft",
    "lora_modules_to_save": "fnsft trains only LoRA matrices (add modules with --set if you need them)",
    "preprocessing_num_workers": "tokenization runs in one process",
    "eos_token": "fnsft uses the tokenizer's end-of-turn marker",
    "packing_strategy": "fnsft packs with best-fit decreasing",
}
_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "float32": "fp32",
           "fp32": "fp32", "auto": "auto"}


def convert(conv: Conversion, source_path: Path) -> None:
    conv.map("model_name_or_path", "model.name_or_path", str)
    conv.map("model_revision", "model.revision", str)
    conv.map("trust_remote_code", "model.trust_remote_code", bool)
    for key in ("dtype", "torch_dtype"):
        conv.map(key, "model.dtype", lambda v: _DTYPES.get(str(v), "auto"))
    conv.map("attn_implementation", "model.attn_implementation",
             lambda v: v if v in ("sdpa", "eager", "flash_attention_2") else "sdpa")
    if conv.raw("use_flash_attention_2") is True:
        conv.put("model.attn_implementation", "flash_attention_2", key="use_flash_attention_2", source_value=True)
    conv.handled.add("use_flash_attention_2")
    _method(conv)
    _dataset(conv)
    _sequence_length(conv)
    conv.map("packing", "data.packing", bool)
    conv.map("padding_free", "data.packing", bool, note="padding-free batching ≈ fnsft's packing (no cross-talk)")
    _loss_on(conv)
    base.batching(conv)
    base.optimization(conv, scheduler_key="lr_scheduler_type", optimizer_key="optim")
    base.precision(conv)
    conv.map("gradient_checkpointing", "training.gradient_checkpointing", bool)
    base.cadence(conv)
    base.trainer_extras(conv, source_path)
    conv.finish(IGNORED)


def _method(conv: Conversion) -> None:
    peft, from_default = conv.take("use_peft")
    four, _ = conv.take("load_in_4bit")
    eight, _ = conv.take("load_in_8bit")
    if not peft:
        conv.put("method.name", "full", key="use_peft", from_default=from_default, source_value=peft,
                 note="no PEFT = full fine-tuning")
        conv.handled.update({"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "bnb_4bit_quant_type",
                             "use_bnb_nested_quant"})
        return
    for key in ("load_in_4bit", "load_in_8bit"):
        if conv.raw(key) is not True:
            conv.used(key, "method (unquantized base)")
    if four is True:
        conv.used("use_peft", "method.name")
        conv.put("method.name", "qlora", key="load_in_4bit", source_value=True, note="use_peft + 4-bit base")
        conv.map("bnb_4bit_quant_type", "method.quantization.quant_type", str)
        conv.map("use_bnb_nested_quant", "method.quantization.double_quant", bool)
    elif eight is True:
        conv.used("use_peft", "method.name")
        conv.put("method.name", "qlora", key="load_in_8bit", source_value=True, note="LoRA on an 8-bit base")
        conv.values["method.quantization.bits"] = 8
        conv.comments["method.quantization.bits"] = "trl load_in_8bit: True"
    else:
        conv.put("method.name", "lora", key="use_peft", source_value=peft)
    if four is not True:
        conv.handled.update({"bnb_4bit_quant_type", "use_bnb_nested_quant"})
    conv.map("lora_r", "method.lora.r", int)
    conv.map("lora_alpha", "method.lora.alpha", int)
    conv.map("lora_dropout", "method.lora.dropout", float)
    targets, _ = conv.take("lora_target_modules")
    if targets in (MISSING, None):
        conv.put("method.lora.target_modules", PEFT_DEFAULT_TARGETS, key="lora_target_modules", from_default=True,
                 source_value=None, note="TRL leaves it to PEFT: q_proj, v_proj for Llama/Mistral/Qwen")
    else:
        conv.put("method.lora.target_modules", base.target_modules(targets), key="lora_target_modules",
                 source_value=targets)


def _dataset(conv: Conversion) -> None:
    name, _ = conv.take("dataset_name")
    if name not in (MISSING, None):
        conv.put("data.path", str(name), key="dataset_name")
        conv.map("dataset_config", "data.config_name", str)
        conv.map("dataset_train_split", "data.split", str)
        test, _ = conv.take("dataset_test_split")
        if test not in (MISSING, None) and conv.raw("eval_strategy", "no") != "no":
            conv.put("data.eval_split", str(test), key="dataset_test_split")
        conv.handled.add("dataset_test_split")
        return
    conv.handled.update({"dataset_config", "dataset_train_split", "dataset_test_split"})
    mixture, _ = conv.take("dataset_mixture")
    entries = []
    if isinstance(mixture, dict):
        entries = [dict(e) for e in mixture.get("datasets", [])]
        for key in ("datasets", "seed", "test_split_size"):
            conv.handled.add(f"dataset_mixture.{key}")
    listed, _ = conv.take("datasets")
    if isinstance(listed, list):
        entries += [dict(e) for e in listed]
    old_mixer, _ = conv.take("dataset_mixer")  # alignment-handbook before 2025: {id: fraction}
    if isinstance(old_mixer, dict):
        splits = conv.raw("dataset_splits") or ["train"]
        conv.handled.add("dataset_splits")
        entries += [{"id": key, "split": splits[0], "weight": value} for key, value in old_mixer.items()]
    if not entries:
        return
    first = entries[0]
    source = first.get("id") or first.get("path")
    conv.put("data.path", str(source), key="dataset_mixture" if mixture not in (MISSING, None) else
             "datasets" if listed not in (MISSING, None) else "dataset_mixer", source_value=source,
             note="the first dataset of the mixture")
    if first.get("config") or first.get("name"):
        conv.values["data.config_name"] = str(first.get("config") or first.get("name"))
        conv.comments["data.config_name"] = "its config"
    if first.get("split"):
        conv.values["data.split"] = str(first["split"])
        conv.comments["data.split"] = "its split"
    for extra in entries[1:]:
        conv.rows.append(KeyReport("dataset_mixture[]", base.format_source(extra), None, Status.UNSUPPORTED,
                                   "one dataset per recipe: mixtures are not supported yet"))


def _sequence_length(conv: Conversion) -> None:
    if conv.present("max_seq_length"):  # the pre-1.0 name, still in many recipes
        conv.map("max_seq_length", "data.max_length", int, note="TRL's old name for max_length")
        conv.handled.add("max_length")
    else:
        conv.map("max_length", "data.max_length", int)


def _loss_on(conv: Conversion) -> None:
    for key in ("assistant_only_loss", "completion_only_loss"):
        value, _ = conv.take(key)
        if value is False:
            conv.put("data.loss_on", "all", key=key, source_value=value)
            return
        if value is True:
            conv.put("data.loss_on", "responses", key=key, source_value=value)
            return
    conv.rows.append(KeyReport("completion_only_loss", None, "data.loss_on", Status.DEFAULT,
                               "TRL: loss on completions for prompt/completion data, on everything for chat data; "
                               "fnsft trains replies only (set data.loss_on: all for TRL's chat behaviour)"))

