"""LLaMA-Factory configs (``llamafactory-cli train FILE``) → fnsft recipes.

Defaults are LLaMA-Factory's own (``src/llamafactory/hparams/finetuning_args.py``, ``data_args.py``,
``model_args.py``, v0.9.4) and, for training arguments, those of the transformers ``Seq2SeqTrainingArguments``
it builds on (transformers 4.57, the newest it supports). Dataset names are looked up in ``dataset_info.json``
under ``dataset_dir`` (default ``data``) when that file is here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fnsft.errors import RecipeError
from fnsft.recipe.foreign import base
from fnsft.recipe.foreign.base import MISSING, Conversion, KeyReport, Status

NAME = "llama-factory"
VERSION = "LLaMA-Factory 0.9.4 with transformers 4.57 TrainingArguments"
SIGNATURE = ("model_name_or_path", "finetuning_type", "stage", "cutoff_len", "template", "lora_rank",
             "lora_target", "quantization_bit", "val_size", "dataset_dir", "train_on_prompt")
DEFAULTS: dict[str, Any] = {
    "finetuning_type": "lora",
    "lora_rank": 8,
    "lora_dropout": 0.0,
    "lora_target": "all",
    "cutoff_len": 2048,
    "val_size": 0.0,
    "train_on_prompt": False,
    "num_train_epochs": 3.0,
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "lr_scheduler_type": "linear",
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "max_grad_norm": 1.0,
    "optim": "adamw_torch",
    "seed": 42,
    "logging_steps": 500,
    "save_steps": 500,
    "disable_gradient_checkpointing": False,
    "dataset_dir": "data",
}
IGNORED = {
    "do_train": "fnsft train always trains",
    "overwrite_cache": "fnsft tokenizes at the start of each run",
    "preprocessing_num_workers": "tokenization runs in one process (fast tokenizers are multi-threaded)",
    "dataloader_num_workers": "fnsft uses the trainer's default data loader",
    "plot_loss": "fnsft writes metrics.json (and TensorBoard with output.report_to)",
    "overwrite_output_dir": "fnsft refuses a run directory that holds a different run; use a new output.dir",
    "ddp_timeout": "fnsft uses the launcher's default timeout",
    "save_only_model": "fnsft checkpoints include optimizer state so runs resume exactly",
    "enable_liger_kernel": "Liger kernels are not wired into fnsft train yet",
    "rope_scaling": "fnsft does not change the model's RoPE scaling",
    "resume_from_checkpoint": "use `fnsft train RECIPE --resume`",
    "mask_history": "use data.loss_on (fnsft trains every assistant turn)",
    "eval_strategy": "fnsft evaluates every training.eval_steps (or at each epoch end)",
    "evaluation_strategy": "fnsft evaluates every training.eval_steps (or at each epoch end)",
    "dataloader_prefetch_factor": "fnsft uses the trainer's default data loader",
    "dataloader_persistent_workers": "fnsft uses the trainer's default data loader",
    "dataloader_pin_memory": "fnsft uses the trainer's default data loader",
}
_PRECISIONS = ("bf16", "fp16", "pure_bf16")


def convert(conv: Conversion, source_path: Path) -> None:
    stage = conv.raw("stage", "sft")
    if stage != "sft":
        raise RecipeError(f"{source_path}: stage: {stage} is not supervised fine-tuning; fnsft converts stage: sft")
    conv.used("stage", "-", "supervised fine-tuning, what fnsft train does")
    conv.map("model_name_or_path", "model.name_or_path", str)
    conv.map("model_revision", "model.revision", str)
    conv.map("trust_remote_code", "model.trust_remote_code", bool)
    _attention(conv)
    _method(conv)
    _dataset(conv, source_path)
    conv.map("cutoff_len", "data.max_length", int)
    conv.map("val_size", "data.validation_fraction", float)
    conv.map("max_samples", "data.max_samples", int)
    conv.map("packing", "data.packing", bool)
    conv.map("neat_packing", "data.packing", bool, note="neat packing keeps examples apart, as fnsft's does")
    conv.map("train_on_prompt", "data.loss_on", lambda v: "all" if v else "responses")
    _template(conv)
    base.batching(conv)
    base.optimization(conv, scheduler_key="lr_scheduler_type", optimizer_key="optim")
    _precision(conv)
    conv.map("disable_gradient_checkpointing", "training.gradient_checkpointing", lambda v: not v,
             note="LLaMA-Factory checkpoints unless disable_gradient_checkpointing")
    conv.used("gradient_checkpointing", "training.gradient_checkpointing", "LLaMA-Factory's switch is "
              "disable_gradient_checkpointing")
    base.cadence(conv)
    base.trainer_extras(conv, source_path)
    conv.finish(IGNORED)


def _attention(conv: Conversion) -> None:
    for key in ("flash_attn", "attn"):
        value, _ = conv.take(key)
        if value in (MISSING, None):
            continue
        chosen = {"fa2": "flash_attention_2", "fa3": "flash_attention_2", "sdpa": "sdpa", "disabled": "eager",
                  "eager": "eager", "auto": "sdpa"}.get(str(value))
        if chosen:
            conv.put("model.attn_implementation", chosen, key=key, source_value=value,
                     status=Status.MAPPED if value != "fa3" else Status.APPROXIMATED)
        else:
            conv.unsupported(key, f"attention {value!r} has no fnsft equivalent")


def _method(conv: Conversion) -> None:
    kind, from_default = conv.take("finetuning_type")
    bits, _ = conv.take("quantization_bit")
    method = conv.raw("quantization_method", "bitsandbytes")
    conv.handled.add("quantization_method")
    if kind == "full":
        conv.put("method.name", "full", key="finetuning_type", from_default=from_default, source_value=kind)
        return
    if kind != "lora":
        conv.unsupported("finetuning_type", f"{kind!r}: fnsft trains LoRA, QLoRA or full")
        return
    if bits not in (MISSING, None):
        if method != "bitsandbytes" or int(bits) not in (4, 8):
            conv.unsupported("quantization_bit", f"{method} {bits}-bit: fnsft quantizes with bitsandbytes, 4 or 8 bit")
            conv.put("method.name", "lora", key="finetuning_type", source_value=kind, from_default=from_default)
        else:
            conv.put("method.name", "qlora", key="quantization_bit", source_value=bits,
                     note="bitsandbytes nf4" if int(bits) == 4 else "LoRA on an 8-bit base")
            conv.values["method.quantization.bits"] = int(bits)
            conv.comments["method.quantization.bits"] = f"llama-factory quantization_bit: {bits}"
            conv.used("finetuning_type", "method.name", "lora + quantization_bit = qlora")
            conv.used("quantization_method", "method.quantization")
    else:
        conv.put("method.name", "lora", key="finetuning_type", from_default=from_default, source_value=kind)
    rank = conv.map("lora_rank", "method.lora.r", int)
    if conv.present("lora_alpha"):
        conv.map("lora_alpha", "method.lora.alpha", int)
    else:  # LLaMA-Factory: lora_alpha defaults to lora_rank * 2
        conv.handled.add("lora_alpha")
        conv.put("method.lora.alpha", 2 * rank, key="lora_alpha", from_default=True, source_value="lora_rank * 2")
    conv.map("lora_dropout", "method.lora.dropout", float)
    conv.map("lora_target", "method.lora.target_modules", base.target_modules)


def _dataset(conv: Conversion, source_path: Path) -> None:
    names, _ = conv.take("dataset")
    if names in (MISSING, None):
        return
    listed = [part.strip() for part in (names.split(",") if isinstance(names, str) else names) if str(part).strip()]
    directory, _ = conv.take("dataset_dir")
    info = _dataset_info(Path(str(directory)), source_path)
    first = listed[0]
    entry = info.get(first) if info else None
    if entry is None:
        conv.put("data.path", first, key="dataset", source_value=names, status=Status.APPROXIMATED,
                 note=f"{first!r} is a name in LLaMA-Factory's {directory}/dataset_info.json (not found here): "
                      "point data.path at its file or Hub id")
    else:
        location = entry.get("hf_hub_url") or str(Path(str(directory)) / entry.get("file_name", first))
        conv.put("data.path", location, key="dataset", source_value=first, note=f"from {directory}/dataset_info.json")
        fmt = _format(entry)
        conv.values["data.format"] = fmt
        conv.comments["data.format"] = f"dataset_info.json formatting: {entry.get('formatting', 'alpaca')}"
    for extra in listed[1:]:
        conv.rows.append(KeyReport("dataset[]", extra, None, Status.UNSUPPORTED,
                                   "one dataset per recipe: merge the files, or train on them in turn"))


def _dataset_info(directory: Path, source_path: Path) -> dict[str, Any] | None:
    roots = (Path.cwd(), source_path.parent, *source_path.parent.parents)
    return base.read_json(root / directory / "dataset_info.json" for root in roots)


def _format(entry: dict[str, Any]) -> str:
    if entry.get("formatting", "alpaca") == "alpaca":
        return "alpaca"
    tags = entry.get("tags", {})
    columns = entry.get("columns", {})
    if tags.get("role_tag", "from") == "from" and columns.get("messages", "conversations") == "conversations":
        return "sharegpt"
    if tags.get("role_tag") == "role" and columns.get("messages") == "messages":
        return "messages"
    return "auto"


def _template(conv: Conversion) -> None:
    value, _ = conv.take("template")
    if value in (MISSING, None):
        return
    conv.rows.append(KeyReport("template", value, None, Status.APPROXIMATED,
                               f"LLaMA-Factory's template {value!r}: fnsft uses the tokenizer's own chat template"))


def _precision(conv: Conversion) -> None:
    for key in _PRECISIONS:
        value, _ = conv.take(key)
        if value is True:
            name = "fp16" if key == "fp16" else "bf16"
            status = Status.APPROXIMATED if key == "pure_bf16" else Status.MAPPED
            note = "pure bf16 (no fp32 master weights) approximated by bf16 mixed precision" if key == "pure_bf16" else ""
            if "training.precision" not in conv.values or key == "pure_bf16":
                conv.put("training.precision", name, key=key, source_value=True, status=status, note=note)

