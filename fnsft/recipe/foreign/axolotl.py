"""axolotl configs → fnsft recipes.

Defaults are axolotl's own, read from its pydantic schema (``src/axolotl/utils/schemas/training.py`` and
``config.py``, axolotl 0.13 / main as of 2026-11): what axolotl runs when a key is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fnsft.recipe.foreign import base
from fnsft.recipe.foreign.base import MISSING, Conversion, Status

NAME = "axolotl"
VERSION = "axolotl 0.13, schema on main as of 2026-11,"
#: Keys only axolotl configs have; two of them make a file axolotl's.
SIGNATURE = ("base_model", "micro_batch_size", "sequence_len", "adapter", "sample_packing", "num_epochs",
             "lora_target_linear", "val_set_size", "dataset_prepared_path", "train_on_inputs")
DEFAULTS: dict[str, Any] = {
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_epochs": 1.0,
    "optimizer": "adamw_torch_fused",
    "lr_scheduler": "cosine",
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "sequence_len": 512,
    "val_set_size": 0.0,
    "gradient_checkpointing": False,
    "sample_packing": False,
    "train_on_inputs": False,
    "lora_dropout": 0.0,
    "output_dir": "./model-out",
}
#: Why keys with no fnsft equivalent have none (shown in the report and the recipe's closing comment).
IGNORED = {
    "dataset_prepared_path": "axolotl's tokenized-dataset cache; fnsft tokenizes at the start of each run",
    "strict": "axolotl config strictness; fnsft recipes are always strict",
    "model_type": "fnsft loads every model with AutoModelForCausalLM",
    "tokenizer_type": "fnsft loads the model's own tokenizer (AutoTokenizer)",
    "special_tokens": "fnsft does not add or replace special tokens; the pad token comes from the tokenizer",
    "tokens": "fnsft does not add tokens to the vocabulary",
    "tf32": "a matmul precision mode; fnsft leaves PyTorch's default",
    "eval_sample_packing": "fnsft evaluates unpacked",
    "pad_to_sequence_len": "fnsft pads each batch to its longest example (same loss, less memory)",
    "evals_per_epoch": "set training.eval_steps instead (fnsft default: evaluate at the end of each epoch)",
    "saves_per_epoch": "set training.save_steps instead",
    "hub_model_id": "publish with `fnsft push RUN --repo-id ...` after training",
    "plugins": "axolotl plugins (e.g. cut-cross-entropy) have no fnsft equivalent",
    "loss_watchdog_threshold": "fnsft stops only on non-finite loss",
    "loss_watchdog_patience": "fnsft stops only on non-finite loss",
    "gradient_checkpointing_kwargs": "fnsft always uses non-reentrant checkpointing",
    "group_by_length": "fnsft batches in random order",
    "unfrozen_parameters": "fnsft trains either adapters or every parameter",
    "model_config": "fnsft does not override the model's config.json",
    "lora_mlp_kernel": "axolotl's fused LoRA kernels; fnsft uses PEFT's",
    "lora_qkv_kernel": "axolotl's fused LoRA kernels; fnsft uses PEFT's",
    "lora_o_kernel": "axolotl's fused LoRA kernels; fnsft uses PEFT's",
}
#: axolotl dataset ``type`` → fnsft data.format.
DATASET_TYPES = {"alpaca": "alpaca", "alpaca_chat": "alpaca", "sharegpt": "sharegpt", "chat_template": "messages",
                 "completion": "text", "input_output": "prompt_completion"}


def convert(conv: Conversion, source_path: Path) -> None:
    conv.map("base_model", "model.name_or_path", str)
    conv.map("revision_of_model", "model.revision", str)
    conv.map("trust_remote_code", "model.trust_remote_code", bool)
    _attention(conv)
    _method(conv)
    _dataset(conv)
    conv.map("val_set_size", "data.validation_fraction", float)
    conv.map("sequence_len", "data.max_length", int)
    conv.map("sample_packing", "data.packing", bool)
    conv.map("train_on_inputs", "data.loss_on", lambda v: "all" if v else "responses")
    _template(conv)
    conv.map("micro_batch_size", "training.per_device_train_batch_size", int)
    conv.map("eval_batch_size", "training.per_device_eval_batch_size", int)
    _accumulation(conv)
    conv.map("num_epochs", "training.num_train_epochs", float)
    conv.map("max_steps", "training.max_steps", int)
    base.optimization(conv, scheduler_key="lr_scheduler", optimizer_key="optimizer")
    base.precision(conv)
    _checkpointing(conv)
    base.cadence(conv)
    _trackers(conv)
    base.deepspeed_strategy(conv, "deepspeed", source_path.parent)
    base.fsdp_strategy(conv, "fsdp", "fsdp_config")
    conv.finish(IGNORED)


def _attention(conv: Conversion) -> None:
    for key, implementation in (("flash_attention", "flash_attention_2"), ("sdp_attention", "sdpa"),
                                ("xformers_attention", "sdpa"), ("s2_attention", "sdpa")):
        value, _ = conv.take(key)
        if value is True:
            status = Status.MAPPED if implementation == "flash_attention_2" or key == "sdp_attention" \
                else Status.APPROXIMATED
            conv.put("model.attn_implementation", implementation, key=key, status=status, source_value=value)
            return
    spelled, _ = conv.take("attn_implementation")
    spelled = spelled if spelled is not MISSING else conv.raw("attention")
    conv.handled.add("attention")
    if spelled in ("flash_attention_2", "flash", "fa2"):
        conv.put("model.attn_implementation", "flash_attention_2", key="attn_implementation"
                 if conv.present("attn_implementation") else "attention", source_value=spelled)
    elif spelled in ("sdpa", "eager"):
        conv.put("model.attn_implementation", spelled, key="attn_implementation", source_value=spelled)


def _method(conv: Conversion) -> None:
    adapter, _ = conv.take("adapter")
    four, _ = conv.take("load_in_4bit")
    eight, _ = conv.take("load_in_8bit")
    for key in ("load_in_4bit", "load_in_8bit"):
        conv.used(key, "method.name" if conv.raw(key) is True else "method (unquantized base)")
    if adapter in (MISSING, None):
        conv.values["method.name"] = "full"
        conv.comments["method.name"] = "axolotl: no adapter = full fine-tuning"
        conv.rows.append(base.KeyReport("adapter", None, "method.name", Status.DEFAULT, "no adapter: full"))
        return
    if adapter not in ("lora", "qlora"):
        conv.unsupported("adapter", f"adapter {adapter!r}: fnsft trains LoRA, QLoRA or full")
        return
    if adapter == "qlora" or four is True:
        conv.put("method.name", "qlora", key="adapter", source_value=adapter,
                 note="4-bit nf4 base" + (" (load_in_4bit)" if four is True else ""))
    elif eight is True:
        conv.put("method.name", "qlora", key="adapter", source_value=adapter, note="LoRA on an 8-bit base")
        conv.values["method.quantization.bits"] = 8
        conv.comments["method.quantization.bits"] = "axolotl load_in_8bit: True"
    else:
        conv.put("method.name", "lora", key="adapter", source_value=adapter)
    conv.map("lora_r", "method.lora.r", int)
    conv.map("lora_alpha", "method.lora.alpha", int)
    conv.map("lora_dropout", "method.lora.dropout", float)
    linear, _ = conv.take("lora_target_linear")
    if linear is True:
        conv.put("method.lora.target_modules", "auto", key="lora_target_linear", source_value=True,
                 note="every linear projection")
        conv.handled.add("lora_target_modules")
    else:
        conv.map("lora_target_modules", "method.lora.target_modules", base.target_modules)


def _dataset(conv: Conversion) -> None:
    datasets, _ = conv.take("datasets")
    if datasets in (MISSING, None) or not isinstance(datasets, list) or not datasets:
        return
    first = datasets[0]
    if isinstance(first, str):
        first = {"path": first}
    path = first.get("data_files") or first.get("path")
    if isinstance(path, list):
        path = path[0]
    conv.put("data.path", str(path), key="datasets[0].path", source_value=path)
    kind = str(first.get("type", "")) if first.get("type") is not None else ""
    if kind in DATASET_TYPES:
        fmt = DATASET_TYPES[kind]
        if fmt == "messages" and _messages_fields(first) == ("from", "value"):
            fmt = "sharegpt"
        supported = fmt != "messages" or _messages_fields(first) == ("role", "content")
        conv.put("data.format", fmt if supported else "auto", key="datasets[0].type", source_value=kind,
                 status=Status.MAPPED if supported else Status.APPROXIMATED,
                 note="" if supported else f"custom message fields {_messages_fields(first)}: fnsft detects the "
                                           "format from the rows")
    elif kind:
        conv.put("data.format", "auto", key="datasets[0].type", source_value=kind, status=Status.APPROXIMATED,
                 note=f"no fnsft format named {kind!r}: detected from the rows")
    for field_name, target in (("split", "data.split"), ("name", "data.config_name"), ("revision", "data.revision")):
        if first.get(field_name) is not None:
            value = str(first[field_name])
            status, note = Status.MAPPED, ""
            if "[" in value:  # datasets' slicing syntax (train[:20%]) is not a split name
                status, note = Status.APPROXIMATED, f"slice {value!r} dropped: fnsft uses the whole split"
                value = value.split("[")[0]
            conv.put(target, value, key=f"datasets[0].{field_name}", status=status, note=note,
                     source_value=first[field_name])
    for extra in datasets[1:]:
        conv.rows.append(base.KeyReport("datasets[]", extra, None, Status.UNSUPPORTED,
                                        "one dataset per recipe: merge the files, or train on them in turn"))


def _messages_fields(entry: dict) -> tuple[str, str]:
    mapping = entry.get("message_property_mappings") or {}
    role = mapping.get("role") or entry.get("message_field_role") or "role"
    content = mapping.get("content") or entry.get("message_field_content") or "content"
    return str(role), str(content)


def _template(conv: Conversion) -> None:
    value, _ = conv.take("chat_template")
    if value in (MISSING, None, "tokenizer_default"):
        return
    if value == "jinja":
        template = conv.raw("chat_template_jinja")
        conv.handled.add("chat_template_jinja")
        conv.unsupported("chat_template", "an inline Jinja template: save it to a file and set data.chat_template")
        conv.rows[-1].value = template or value
        return
    conv.rows.append(base.KeyReport("chat_template", value, None, Status.APPROXIMATED,
                                    f"axolotl's named template {value!r}: fnsft uses the tokenizer's own chat "
                                    "template (the same text for this model family's instruct checkpoints)"))


def _accumulation(conv: Conversion) -> None:
    total, _ = conv.take("batch_size")
    if total not in (MISSING, None) and not conv.present("gradient_accumulation_steps"):
        micro = int(conv.raw("micro_batch_size", DEFAULTS["micro_batch_size"]))
        conv.put("training.gradient_accumulation_steps", max(1, int(total) // micro), key="batch_size",
                 status=Status.APPROXIMATED, source_value=total,
                 note=f"batch_size {total} / micro_batch_size {micro} (axolotl divides by the GPU count too)")
        return
    conv.map("gradient_accumulation_steps", "training.gradient_accumulation_steps", int)


def _checkpointing(conv: Conversion) -> None:
    value, from_default = conv.take("gradient_checkpointing")
    if value is MISSING or value is None:
        return
    if isinstance(value, str):  # "offload" / "unsloth": checkpointing with activations moved to CPU
        conv.put("training.gradient_checkpointing", True, key="gradient_checkpointing", source_value=value,
                 status=Status.APPROXIMATED, note="activations stay on the GPU in fnsft")
    else:
        conv.put("training.gradient_checkpointing", bool(value), key="gradient_checkpointing",
                 from_default=from_default, source_value=value)


def _trackers(conv: Conversion) -> None:
    targets = []
    project, _ = conv.take("wandb_project")
    if project not in (MISSING, None):
        targets.append("wandb")
        conv.rows.append(base.KeyReport("wandb_project", project, "output.report_to", Status.MAPPED,
                                        "set WANDB_PROJECT in the environment for the project name"))
    board, _ = conv.take("use_tensorboard")
    if board is True:
        targets.append("tensorboard")
        conv.rows.append(base.KeyReport("use_tensorboard", True, "output.report_to", Status.MAPPED))
    if targets:
        conv.values["output.report_to"] = targets
        conv.comments["output.report_to"] = "axolotl " + ", ".join(
            k for k in ("wandb_project", "use_tensorboard") if conv.present(k))
    for key in ("wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id"):
        conv.handled.add(key)
        if conv.present(key):
            conv.rows.append(base.KeyReport(key, conv.raw(key), None, Status.UNSUPPORTED,
                                            "set the WANDB_* environment variables instead"))
