"""The recipe's tables of names: guide flags → dotted paths, and walks over the schema's pydantic fields.

A leaf of the recipe package (only the schema below it), so loading, the version upgrades, migration and the
`fnsft train` options all read the same tables without importing each other.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fnsft.recipe.schema import Recipe

#: Guide flag (underscore spelling) → dotted recipe path: the one table behind the options of `fnsft train`, the
#: migrate-config flag names and the v0 upgrade. The order is the order of `fnsft train --help`.
FLAG_PATHS: dict[str, str] = {
    "model_name_or_path": "model.name_or_path",
    "dataset_name_or_path": "data.path",
    "output_dir": "output.dir",
    "num_train_epochs": "training.num_train_epochs",
    "max_steps": "training.max_steps",
    "per_device_train_batch_size": "training.per_device_train_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "learning_rate": "training.learning_rate",
    "lr_scheduler_type": "training.lr_scheduler_type",
    "warmup_ratio": "training.warmup_ratio",
    "weight_decay": "training.weight_decay",
    "gradient_checkpointing": "training.gradient_checkpointing",
    "max_seq_length": "data.max_length",
    "lora_r": "method.lora.r",
    "lora_alpha": "method.lora.alpha",
    "lora_dropout": "method.lora.dropout",
    "lora_target_modules": "method.lora.target_modules",
    "logging_steps": "training.logging_steps",
    "save_steps": "training.save_steps",
    "eval_steps": "training.eval_steps",
    "seed": "training.seed",
    "trust_remote_code": "model.trust_remote_code",
}

#: Guide flags that pick the method instead of setting a key: flag → (method.name it sets, help text).
METHOD_FLAGS: dict[str, tuple[str, str]] = {
    "no_peft": ("full", "Full fine-tuning instead of LoRA (PEFT is the default): method.name full."),
    "use_4bit": ("qlora", "QLoRA: LoRA on a base model loaded in 4-bit nf4: method.name qlora."),
}


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    """The pydantic model class found by walking field names from Recipe (None when loc leaves the models)."""
    model: type[BaseModel] = Recipe
    for key in loc:
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def schema_field(dotted: str) -> FieldInfo:
    """The pydantic field at a dotted recipe path (``training.learning_rate``): its type, default, description."""
    *parents, key = dotted.split(".")
    model = model_at(parents)
    if model is None or key not in model.model_fields:
        raise KeyError(dotted)
    return model.model_fields[key]
