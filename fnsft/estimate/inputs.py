"""Building an EstimateInput from a recipe and/or command-line values, with readable errors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fnsft.errors import EstimateError
from fnsft.estimate.arch import ModelShape
from fnsft.estimate.memory import EstimateInput
from fnsft.estimate.resolve import resolve_shape

if TYPE_CHECKING:
    from fnsft.recipe.schema import Recipe

#: Recipe distributed.strategy → estimator sharding.
_SHARDING = {"none": "none", "ddp": "ddp", "fsdp": "fsdp", "zero2": "zero2", "zero3": "zero3"}


def build_input(**fields: Any) -> EstimateInput:
    """EstimateInput(**fields), resolving a model given by name and turning validation errors into EstimateError."""
    model = fields.get("model")
    if isinstance(model, str):
        fields["model"] = resolve_shape(model)
    elif model is not None and not isinstance(model, ModelShape):
        raise EstimateError(f"model must be a name, path or ModelShape, not {type(model).__name__}")
    try:
        return EstimateInput(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'input'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise EstimateError(f"cannot estimate: {problems}") from None


def inputs_from_recipe(recipe: Recipe, **overrides: Any) -> EstimateInput:
    """The estimator input for a recipe; keyword overrides win (any EstimateInput field; ``model`` may be a name).

    ``precision: auto`` means bf16 on CUDA and fp32 on CPU (``device`` override, default cuda), as in training;
    QLoRA computes in bf16 on both.
    """
    device = overrides.get("device", "cuda")
    training, method, dist = recipe.training, recipe.method, recipe.distributed
    method_name = overrides.get("method") or method.name
    precision = training.precision
    if precision == "auto":  # bf16 on GPUs; fp32 on CPU except QLoRA, whose 4-bit kernels compute in bf16
        precision = "bf16" if device == "cuda" or method_name == "qlora" else "fp32"
    targets = method.lora.target_modules
    fields: dict[str, Any] = {
        "method": method.name,
        "precision": precision,
        "optimizer": training.optimizer,
        "batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "seq_len": recipe.data.max_length,
        "gradient_checkpointing": training.gradient_checkpointing,
        "lora_r": method.lora.r,
        "lora_targets": "all-linear" if targets == "auto" else list(targets),
        "lora_dropout": method.lora.dropout,
        "quant_bits": method.quantization.bits,
        "quant_double": method.quantization.double_quant,
        "attention": {"flash_attention_2": "flash"}.get(recipe.model.attn_implementation, recipe.model.attn_implementation),
        "num_gpus": dist.num_processes * dist.num_nodes,
        "sharding": _SHARDING[dist.strategy],
        "offload": dist.offload,
        "device": device,
        # the trainer evaluates when the recipe holds data out (validation_fraction or eval_split)
        "eval_batch_size": (training.per_device_eval_batch_size or training.per_device_train_batch_size)
        if recipe.data.eval_split or recipe.data.validation_fraction > 0 else None,
    }
    fields |= {key: value for key, value in overrides.items() if value is not None}
    if "model" not in overrides or overrides["model"] is None:
        fields["model"] = resolve_shape(recipe.model.name_or_path, recipe.model.gguf_file)
    return build_input(**fields)
