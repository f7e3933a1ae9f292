"""`fnsft estimate`: predict per-GPU memory of a fine-tuning run before renting a GPU. No torch import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from fnsft.console import out


def estimate(
    recipe: Path | None = typer.Argument(None, help="Recipe file; flags override its values."),
    model: str | None = typer.Option(None, "--model", help="Hub id, catalog name, model dir, config.json or .gguf."),
    config: Path | None = typer.Option(
        None, "--config", help="A model's config.json (any supported model_type) instead of --model's lookup."
    ),
    method: str | None = typer.Option(None, "--method", help="lora | qlora | full"),
    precision: str | None = typer.Option(None, "--precision", help="bf16 | fp16 | fp32 | bf16-mixed | fp16-mixed"),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="adamw | adamw_8bit | paged_adamw_8bit | paged_adamw_32bit | adafactor | sgd"
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Micro-batch per device."),
    gradient_accumulation_steps: int | None = typer.Option(None, "--gradient-accumulation-steps"),
    seq_len: int | None = typer.Option(None, "--seq-len", help="Tokens per sequence."),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Default: on (as in recipes)."
    ),
    lora_r: int | None = typer.Option(None, "--lora-r"),
    lora_targets: str | None = typer.Option(None, "--lora-targets", help="q_proj,v_proj or all-linear"),
    attention: str | None = typer.Option(None, "--attention", help="sdpa | flash | eager"),
    loss: str | None = typer.Option(None, "--loss", help="chunked (TRL's default) | plain | liger | cce"),
    optimizer_in_backward: bool | None = typer.Option(
        None, "--optimizer-in-backward", help="Step and free each gradient during backward (torchtune optimizer_in_bwd)."
    ),
    activation_offload: bool | None = typer.Option(
        None, "--activation-offload", help="Saved activations to pinned CPU memory (one layer prefetched)."
    ),
    compile_model: bool | None = typer.Option(None, "--compile", help="torch.compile (pointwise ops recomputed)."),
    lora_modules_to_save: str | None = typer.Option(
        None, "--lora-modules-to-save", help="PEFT modules_to_save, e.g. embed_tokens,lm_head (trained copies)."
    ),
    eval_batch_size: int | None = typer.Option(None, "--eval-batch-size", help="Cost an evaluation forward too."),
    num_gpus: int | None = typer.Option(None, "--num-gpus"),
    sharding: str | None = typer.Option(None, "--sharding", help="none | ddp | zero1 | zero2 | zero3 | fsdp"),
    offload: str | None = typer.Option(None, "--offload", help="none | optimizer | params"),
    device: str = typer.Option("cuda", "--device", help="cuda (per GPU) or cpu (whole-process RSS)."),
    gpu: str | None = typer.Option(None, "--gpu", help="A100-80GB | H100-80GB | RTX4090 | ... (see the list on error)"),
    gpu_memory: str | None = typer.Option(None, "--gpu-memory", help="Memory budget per GPU, e.g. 24GiB or 80GB."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable JSON (schema fnsft-estimate/1)."),
    list_models: bool = typer.Option(False, "--list-models", help="List the built-in offline model catalog."),
) -> None:
    """Predict the memory of a fine-tuning run, per GPU, with a breakdown and changes that make it fit."""
    import json

    from fnsft.errors import EstimateError
    from fnsft.estimate.fit import make_it_fit, recommendation
    from fnsft.estimate.gpus import COMMON_GPUS, GPU_MEMORY, parse_memory
    from fnsft.estimate.gpus import gpu_memory as lookup_gpu
    from fnsft.estimate.inputs import build_input, inputs_from_recipe
    from fnsft.estimate.memory import estimate as run_estimate
    from fnsft.estimate.report import render, to_json
    from fnsft.estimate.resolve import catalog_names

    if list_models:
        for name in catalog_names():
            out.print(name, highlight=False)
        return
    if device not in ("cuda", "cpu"):
        raise EstimateError(f"--device must be cuda or cpu, not '{device}'")
    if config is not None:
        if model is not None:
            raise EstimateError("give --model or --config, not both")
        model = str(config)
    overrides: dict[str, Any] = {
        "model": model, "method": method, "precision": precision, "optimizer": optimizer, "batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps, "seq_len": seq_len,
        "gradient_checkpointing": gradient_checkpointing, "lora_r": lora_r, "attention": attention,
        "loss": loss, "optimizer_in_backward": optimizer_in_backward, "activation_offload": activation_offload,
        "compile": compile_model, "eval_batch_size": eval_batch_size,
        "lora_modules_to_save": [name.strip() for name in lora_modules_to_save.split(",") if name.strip()]
        if lora_modules_to_save else None,
        "num_gpus": num_gpus, "sharding": sharding, "offload": offload, "device": device,
    }
    if lora_targets is not None:
        names = [name.strip() for name in lora_targets.split(",") if name.strip()]
        overrides["lora_targets"] = "all-linear" if names in (["all-linear"], ["auto"]) else names
    if recipe is not None:
        from fnsft.recipe.load import load_recipe

        inp = inputs_from_recipe(load_recipe(recipe), **overrides)
    else:
        if model is None:
            raise EstimateError("give a recipe file or --model (a Hub id, catalog name, model dir or config.json)")
        fields = {key: value for key, value in overrides.items() if value is not None}
        fields.setdefault("precision", "bf16" if device == "cuda" or method == "qlora" else "fp32")
        inp = build_input(**fields)

    budgets: list[tuple[str | None, int]]
    if gpu is not None:
        budgets = [(gpu, lookup_gpu(gpu))]
    elif gpu_memory is not None:
        budgets = [(None, parse_memory(gpu_memory))]
    else:
        budgets = [] if device == "cpu" else [(name, GPU_MEMORY[name]) for name in COMMON_GPUS]
    breakdown = run_estimate(inp)
    explicit = budgets[0][1] if (gpu or gpu_memory) else None
    suggestions = make_it_fit(inp, explicit) if explicit is not None else []
    report = to_json(inp, breakdown, budgets, suggestions, recommendation(inp, explicit))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        out.print(render(report))
