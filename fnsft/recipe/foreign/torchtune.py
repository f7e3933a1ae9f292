"""torchtune configs (``tune run RECIPE --config FILE``) → fnsft recipes.

Defaults are torchtune's own (v0.6, the last release before active development stopped): what its
``lora_finetune_*`` / ``full_finetune_*`` recipes and dataset/optimizer builders use when a key is absent
(``cfg.get(..., default)`` in the recipes, builder signatures in ``torchtune/datasets`` and ``torch.optim``).
The base model is the Hugging Face checkpoint ``checkpointer.checkpoint_dir`` points at; when that directory is
not here, the Hub id comes from the file's own ``tune download ID --output-dir DIR`` comment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fnsft.recipe.foreign.base import MISSING, Conversion, KeyReport, Status

NAME = "torchtune"
VERSION = "torchtune 0.6"
SIGNATURE = ("model", "tokenizer", "checkpointer", "dataset", "epochs", "batch_size")
DEFAULTS: dict[str, Any] = {
    "gradient_accumulation_steps": 1,
    "enable_activation_checkpointing": False,
    "model.lora_dropout": 0.0,
    "optimizer.weight_decay": 0.01,  # torch.optim.AdamW
    "optimizer.lr": 1e-3,  # torch.optim.AdamW
}
IGNORED = {
    "tokenizer": "fnsft loads the model's own tokenizer",
    "device": "fnsft picks the device (CUDA when present)",
    "profiler": "use the PyTorch profiler outside fnsft",
    "log_peak_memory_stats": "fnsft records the measured peak in every run's manifest",
    "log_level": "fnsft logs at INFO",
    "compile": "torch.compile is not wired into fnsft train",
    "optimizer_in_bwd": "fnsft steps the optimizer after backward (estimate it with `fnsft estimate`)",
    "enable_activation_offloading": "activation offloading is not wired into fnsft train",
    "memory_efficient_fsdp_wrap": "fnsft's FSDP preset wraps each decoder layer",
    "resume_from_checkpoint": "use `fnsft train RECIPE --resume`",
    "save_adapter_weights_only": "fnsft saves the adapter; `fnsft export RUN --merge` writes the merged model",
    "shuffle": "fnsft always shuffles (seeded)",
    "low_cpu_ram": "fnsft loads weights with transformers' low-memory loader",
    "custom_sharded_layers": "fnsft's FSDP preset wraps each decoder layer",
}
#: torchtune dataset builders → (Hub id or None, fnsft format, train_on_input default of that builder).
DATASETS = {
    "alpaca_dataset": ("tatsu-lab/alpaca", "alpaca", True),
    "alpaca_cleaned_dataset": ("yahma/alpaca-cleaned", "alpaca", True),
    "slimorca_dataset": ("Open-Orca/SlimOrca-Dedup", "sharegpt", False),
    "samsum_dataset": ("Samsung/samsum", "prompt_completion", False),
    "grammar_dataset": ("liweili/c4_200m", "prompt_completion", False),
    "instruct_dataset": (None, "alpaca", False),
    "chat_dataset": (None, "auto", False),
    "text_completion_dataset": (None, "text", True),
}
OPTIMIZERS = {"AdamW": "adamw_torch", "Adam": "adamw_torch", "SGD": "sgd", "PagedAdamW8bit": "paged_adamw_8bit",
              "AdamW8bit": "adamw_8bit", "PagedAdamW": "paged_adamw_32bit"}
LORA_MODULES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
_DOWNLOAD = re.compile(r"tune download (\S+)(?:.*?--output-dir (\S+))?")
_LAUNCH = re.compile(r"tune run (?:--nproc_per_node[ =](\d+) )?(\w+)")


def convert(conv: Conversion, source_path: Path) -> None:
    text = source_path.read_text(encoding="utf-8")
    _model(conv, text)
    _method(conv)
    _dataset(conv)
    _seq_len(conv)
    conv.map("batch_size", "training.per_device_train_batch_size", int)
    conv.map("gradient_accumulation_steps", "training.gradient_accumulation_steps", int)
    conv.map("epochs", "training.num_train_epochs", float)
    _max_steps(conv)
    _optimizer(conv)
    _scheduler(conv)
    _clip(conv)
    _dtype(conv)
    conv.map("enable_activation_checkpointing", "training.gradient_checkpointing", bool)
    conv.map("log_every_n_steps", "training.logging_steps", int)
    conv.map("save_every_n_steps", "training.save_steps", int)
    _seed(conv)
    conv.map("output_dir", "output.dir", str)
    _loss(conv)
    _logger(conv)
    _launch(conv, text)
    conv.finish(IGNORED)


def _model(conv: Conversion, text: str) -> None:
    directory = conv.raw("checkpointer.checkpoint_dir")
    conv.handled.update({"checkpointer.checkpoint_dir", "checkpointer"})
    if directory and Path(str(directory)).is_dir():
        conv.put("model.name_or_path", str(directory), key="checkpointer.checkpoint_dir")
        return
    for hub_id, out_dir in _DOWNLOAD.findall(text):
        if not directory or not out_dir or Path(out_dir.rstrip("/")) == Path(str(directory).rstrip("/")):
            conv.put("model.name_or_path", hub_id, key="checkpointer.checkpoint_dir", source_value=directory,
                     status=Status.APPROXIMATED,
                     note=f"that directory is not here: the Hub id the file's `tune download {hub_id}` comment names")
            return
    if directory:
        conv.put("model.name_or_path", str(directory), key="checkpointer.checkpoint_dir",
                 note="the Hugging Face checkpoint torchtune loads (not found here)")


def _method(conv: Conversion) -> None:
    component, _ = conv.take("model._component_")
    builder = str(component).rsplit(".", 1)[-1] if component not in (MISSING, None) else ""
    if builder.startswith("qlora_") or conv.raw("model.quantize_base") is True:
        conv.put("method.name", "qlora", key="model._component_", source_value=component, note="4-bit nf4 base")
    elif builder.startswith("lora_"):
        conv.put("method.name", "lora", key="model._component_", source_value=component)
    else:
        conv.put("method.name", "full", key="model._component_", source_value=component,
                 note="a plain model builder = full fine-tuning")
        return
    conv.handled.add("model.quantize_base")
    conv.map("model.lora_rank", "method.lora.r", int)
    conv.map("model.lora_alpha", "method.lora.alpha", int)
    conv.map("model.lora_dropout", "method.lora.dropout", float)
    attention, _ = conv.take("model.lora_attn_modules")
    mlp, _ = conv.take("model.apply_lora_to_mlp")
    output, _ = conv.take("model.apply_lora_to_output")
    targets = list(dict.fromkeys(LORA_MODULES.get(name, name) for name in (attention or [])))
    if mlp is True:
        targets += ["gate_proj", "up_proj", "down_proj"]
    if output is True:
        targets.append("lm_head")
    conv.put("method.lora.target_modules", targets, key="model.lora_attn_modules", source_value=attention,
             note="+ MLP (apply_lora_to_mlp)" * (mlp is True) + " + lm_head" * (output is True))
    conv.unsupported("model.use_dora", "DoRA is not available in fnsft")


def _dataset(conv: Conversion) -> None:
    component, _ = conv.take("dataset._component_")
    if component in (MISSING, None):
        return
    builder = str(component).rsplit(".", 1)[-1]
    hub_id, fmt, train_on_input = DATASETS.get(builder, (None, "auto", False))
    source = conv.raw("dataset.data_files") or conv.raw("dataset.source") or hub_id
    conv.handled.update({"dataset.data_files", "dataset.source"})
    if source is None:
        conv.unsupported("dataset._component_", f"dataset builder {builder} has no fnsft equivalent")
        return
    conv.put("data.path", str(source), key="dataset._component_" if hub_id and not conv.present("dataset.source")
             else "dataset.source", source_value=component if source == hub_id else source,
             note=f"the data {builder} loads" if source == hub_id else "")
    style = conv.raw("dataset.conversation_style")
    conv.handled.add("dataset.conversation_style")
    if style is not None:
        fmt = {"sharegpt": "sharegpt", "openai": "messages"}.get(str(style), "auto")
    conv.values["data.format"] = fmt
    conv.comments["data.format"] = f"torchtune {builder}" + (f" conversation_style: {style}" if style else "")
    conv.map("dataset.split", "data.split", str)
    conv.map("dataset.packed", "data.packing", bool)
    conv.map("dataset.new_system_prompt", "data.system_prompt", str)
    value, _ = conv.take("dataset.train_on_input")
    from_default = value is MISSING
    value = train_on_input if from_default else value
    conv.put("data.loss_on", "all" if value else "responses", key="dataset.train_on_input",
             from_default=from_default, source_value=value,
             note=f"{builder}'s own default" if from_default else "")
    conv.unsupported("dataset.column_map", "fnsft detects the columns of each format; rename the columns instead")


def _seq_len(conv: Conversion) -> None:
    value, _ = conv.take("tokenizer.max_seq_len")
    if value not in (MISSING, None):
        conv.put("data.max_length", int(value), key="tokenizer.max_seq_len")
    else:
        conv.put("data.max_length", 2048, key="tokenizer.max_seq_len", source_value=None, status=Status.APPROXIMATED,
                 note="torchtune does not truncate; fnsft needs a bound: raise it if `fnsft data check` shows longer rows")


def _max_steps(conv: Conversion) -> None:
    per_epoch, _ = conv.take("max_steps_per_epoch")
    if per_epoch in (MISSING, None):
        return
    epochs = float(conv.raw("epochs", 1))
    steps = int(per_epoch * epochs)
    conv.put("training.max_steps", steps, key="max_steps_per_epoch", source_value=per_epoch,
             status=Status.APPROXIMATED, note=f"{per_epoch} per epoch × {epochs:g} epochs, counted over the whole run")


def _optimizer(conv: Conversion) -> None:
    component, _ = conv.take("optimizer._component_")
    if component in (MISSING, None):
        return
    name = str(component).rsplit(".", 1)[-1]
    fused = conv.raw("optimizer.fused") is True
    conv.handled.update({"optimizer.fused", "optimizer.foreach"})
    chosen = "adamw_torch_fused" if name == "AdamW" and fused else OPTIMIZERS.get(name)
    if chosen is None:
        conv.put("training.optimizer", "adamw_torch", key="optimizer._component_", source_value=component,
                 status=Status.APPROXIMATED, note=f"{name} is not available in fnsft: plain AdamW")
    else:
        conv.put("training.optimizer", chosen, key="optimizer._component_", source_value=component,
                 status=Status.APPROXIMATED if str(component).startswith("torchao") else Status.MAPPED)
    conv.map("optimizer.lr", "training.learning_rate", float)
    conv.map("optimizer.weight_decay", "training.weight_decay", float)


def _scheduler(conv: Conversion) -> None:
    component, _ = conv.take("lr_scheduler._component_")
    warmup, _ = conv.take("lr_scheduler.num_warmup_steps")
    if component in (MISSING, None):
        conv.values["training.lr_scheduler_type"] = "constant"
        conv.comments["training.lr_scheduler_type"] = "torchtune without lr_scheduler: a constant learning rate"
        conv.rows.append(KeyReport("lr_scheduler", None, "training.lr_scheduler_type", Status.DEFAULT, "constant"))
        return
    name = str(component).rsplit(".", 1)[-1]
    kind = {"get_cosine_schedule_with_warmup": "cosine", "get_linear_schedule_with_warmup": "linear",
            "get_constant_schedule_with_warmup": "constant_with_warmup"}.get(name)
    if kind is None:
        conv.put("training.lr_scheduler_type", "cosine", key="lr_scheduler._component_", source_value=component,
                 status=Status.APPROXIMATED, note=f"{name} approximated by cosine")
    else:
        conv.put("training.lr_scheduler_type", kind, key="lr_scheduler._component_", source_value=component)
    if warmup not in (MISSING, None):
        conv.put("training.warmup_steps", int(warmup), key="lr_scheduler.num_warmup_steps")
    conv.unsupported("lr_scheduler.num_cycles", "fnsft's cosine is one half-cycle")


def _clip(conv: Conversion) -> None:
    value, _ = conv.take("clip_grad_norm")
    if value in (MISSING, None):
        conv.put("training.max_grad_norm", 0.0, key="clip_grad_norm", source_value=None,
                 note="torchtune does not clip unless clip_grad_norm is set; 0 turns clipping off")
    else:
        conv.put("training.max_grad_norm", float(value), key="clip_grad_norm")


def _dtype(conv: Conversion) -> None:
    value, _ = conv.take("dtype")
    if value in (MISSING, None):
        return
    name = {"bf16": "bf16", "bfloat16": "bf16", "fp32": "fp32", "float32": "fp32", "fp16": "fp16"}.get(str(value))
    if name is None:
        conv.unsupported("dtype", f"dtype {value!r} is not a training precision")
        return
    note = "torchtune trains pure bf16 weights; fnsft bf16 is mixed precision (fp32 master weights)" \
        if name == "bf16" else ""
    conv.put("training.precision", name, key="dtype", status=Status.APPROXIMATED if note else Status.MAPPED,
             note=note)
    conv.values["model.dtype"] = name
    conv.comments["model.dtype"] = f"torchtune dtype: {value}"


def _seed(conv: Conversion) -> None:
    value, _ = conv.take("seed")
    if value in (MISSING, None):
        conv.put("training.seed", 42, key="seed", source_value=None, status=Status.APPROXIMATED,
                 note="torchtune draws a random seed when null; fnsft runs are seeded")
    else:
        conv.put("training.seed", int(value), key="seed")


def _loss(conv: Conversion) -> None:
    component, _ = conv.take("loss._component_")
    if component in (MISSING, None):
        return
    name = str(component).rsplit(".", 1)[-1]
    note = "cross-entropy (fnsft computes it in one piece: same loss, more memory for the logits)" \
        if name != "CrossEntropyLoss" else "cross-entropy"
    conv.rows.append(KeyReport("loss._component_", component, None,
                               Status.MAPPED if name == "CrossEntropyLoss" else Status.APPROXIMATED, note))


def _logger(conv: Conversion) -> None:
    component, _ = conv.take("metric_logger._component_")
    conv.handled.update({"metric_logger", *(f"metric_logger.{k}" for k in (conv.raw("metric_logger") or {}))})
    if component in (MISSING, None):
        return
    name = str(component).rsplit(".", 1)[-1]
    target = {"WandBLogger": "wandb", "TensorBoardLogger": "tensorboard", "DiskLogger": "none",
              "StdoutLogger": "none"}.get(name)
    if target is None:
        conv.unsupported("metric_logger._component_", f"{name} has no fnsft equivalent")
        return
    conv.put("output.report_to", [target], key="metric_logger._component_", source_value=component,
             note="fnsft writes metrics.json in the run dir" if target == "none" else "")


def _launch(conv: Conversion, text: str) -> None:
    """The recipe and process count from the file's own ``tune run`` comment (torchtune keeps them out of YAML)."""
    for nproc, recipe in _LAUNCH.findall(text):
        if "distributed" in recipe:
            conv.values["distributed.strategy"] = "fsdp"
            conv.comments["distributed.strategy"] = f"torchtune {recipe} shards with FSDP (from the file's `tune run`)"
            if nproc:
                conv.values["distributed.num_processes"] = int(nproc)
                conv.comments["distributed.num_processes"] = f"the file's `tune run --nproc_per_node {nproc}`"
            conv.rows.append(KeyReport("(tune run comment)", f"{recipe} --nproc_per_node {nproc or '?'}",
                                       "distributed.strategy", Status.MAPPED))
            if conv.raw("fsdp_cpu_offload") is True:
                conv.put("distributed.offload", "params", key="fsdp_cpu_offload")
            return
    conv.unsupported("fsdp_cpu_offload", "needs a distributed recipe")
