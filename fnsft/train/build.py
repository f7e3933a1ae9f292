"""Recipe → the objects TRL and PEFT need: precision, quantization config, LoRA config, SFTConfig."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fnsft.errors import RecipeError, TrainError
from fnsft.recipe.schema import Recipe

#: PEFT's "all-linear" = every nn.Linear (and 4-bit/8-bit Linear) except the output head: the guide's `auto`.
AUTO_TARGETS = "all-linear"


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_precision(requested: str) -> str:
    """auto → bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (CPU autocast is slow and lossy)."""
    if requested != "auto":
        if requested in ("bf16", "fp16") and not cuda_available():
            raise TrainError(f"training.precision={requested} needs a CUDA GPU; on CPU use auto or fp32")
        return requested
    if not cuda_available():
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def torch_dtype(precision: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def quantization_config(recipe: Recipe, precision: str):
    """BitsAndBytes 4-bit (nf4 by default) for QLoRA; None for LoRA and full fine-tuning."""
    if recipe.method.name != "qlora":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainError("QLoRA needs bitsandbytes: pip install 'fnsft[gpu]' (or bitsandbytes on CPU)") from None
    import logging

    from transformers import BitsAndBytesConfig

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    quant = recipe.method.quantization
    compute = precision if quant.compute_dtype == "auto" else quant.compute_dtype
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute),
    )


def lora_config(recipe: Recipe):
    if not recipe.method.is_peft:
        return None
    from peft import LoraConfig

    lora = recipe.method.lora
    targets = AUTO_TARGETS if lora.target_modules == "auto" else list(lora.target_modules)
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )


def moe_dropout_error(recipe: Recipe, model_type: str, detail: str = "") -> RecipeError:
    """LoRA dropout on MoE routers/experts, which PEFT wraps as parameters (Mixtral, Qwen3-MoE) and refuses."""
    return RecipeError(
        f"method.lora.dropout: {recipe.method.lora.dropout:g} cannot be used here: LoRA on {model_type}'s MoE "
        "router/experts (PEFT wraps them as parameters) takes no dropout. Set method.lora.dropout: 0 "
        "(--lora_dropout 0), or list method.lora.target_modules without the experts (e.g. q_proj, k_proj, "
        f"v_proj, o_proj).{detail}"
    )


def check_moe_dropout(recipe: Recipe) -> None:
    """Before any weights load: the estimator's shapes know which layers PEFT wraps as parameters. A model the
    estimator cannot shape is left to :func:`lora_dropout_refusal` at wrap time."""
    if not recipe.method.is_peft or recipe.method.lora.dropout == 0:
        return
    from fnsft.estimate.inputs import inputs_from_recipe
    from fnsft.estimate.memory import lora_target_layers

    try:
        inputs = inputs_from_recipe(recipe, device="cpu")
        wrapped_as_parameters = any(layer.peft_parameter for layer in lora_target_layers(inputs))
    except Exception:  # advisory: an estimator that cannot shape the model never stops a run
        return
    if wrapped_as_parameters:
        raise moe_dropout_error(recipe, inputs.model.model_type)


@contextmanager
def lora_dropout_refusal(recipe: Recipe, model: Any) -> Iterator[None]:
    """PEFT's ValueError for dropout on parameter-wrapped MoE layers becomes the recipe error it is (the backstop
    of :func:`check_moe_dropout`, for models the estimator does not know)."""
    try:
        yield
    except ValueError as exc:
        if not (recipe.method.is_peft and "lora_dropout" in str(exc)):
            raise
        model_type = getattr(getattr(model, "config", None), "model_type", "this model")
        raise moe_dropout_error(recipe, model_type, f" PEFT said: {exc}") from None


def sft_config(recipe: Recipe, checkpoints_dir: Path, precision: str, has_eval: bool, callbacks_report: list[str]) -> Any:
    from trl import SFTConfig

    training = recipe.training
    on_cpu = not cuda_available()
    eval_strategy = "no"
    if has_eval:
        eval_strategy = "steps" if training.eval_steps else "epoch"
    optimizer = training.optimizer
    if on_cpu and optimizer == "adamw_torch_fused":
        optimizer = "adamw_torch"
    return SFTConfig(
        output_dir=str(checkpoints_dir),
        run_name=recipe.output.run_name,
        num_train_epochs=training.num_train_epochs,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.per_device_train_batch_size,
        per_device_eval_batch_size=training.per_device_eval_batch_size or training.per_device_train_batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        learning_rate=training.resolved_value("learning_rate"),
        lr_scheduler_type=training.lr_scheduler_type,
        # transformers 5: a warmup_steps value < 1 is a ratio of the total steps
        warmup_steps=training.warmup_steps if training.warmup_steps is not None else training.resolved_value("warmup_ratio"),
        weight_decay=training.resolved_value("weight_decay"),
        max_grad_norm=training.max_grad_norm,
        optim=optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=on_cpu,
        activation_checkpointing=training.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if training.gradient_checkpointing else None,
        seed=training.seed,
        data_seed=training.seed,
        logging_steps=training.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=training.save_steps,
        save_total_limit=training.save_total_limit,
        eval_strategy=eval_strategy,
        eval_steps=training.eval_steps,
        report_to=callbacks_report,
        max_length=recipe.data.max_length,
        packing=recipe.data.packing,
        use_cache=False,  # with the KV cache on, packed sequences attend across their boundary (measured with sdpa)
        disable_tqdm=True,  # fnsft draws its own rich progress bar
        dataset_num_proc=None,
    )


#: report_to target → the package it needs.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}


def report_targets(recipe: Recipe) -> list[str]:
    """The recipe's report_to list for the trainer, refusing trackers that are not installed (before any work)."""
    import importlib.util

    targets = [target for target in recipe.output.report_to if target != "none"]
    for target in targets:
        if importlib.util.find_spec(TRACKER_PACKAGES[target]) is None:
            raise TrainError(f"output.report_to lists {target}, which is not installed: pip install {TRACKER_PACKAGES[target]}")
    return list(targets) or ["none"]
