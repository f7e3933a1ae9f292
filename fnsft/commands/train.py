"""`fnsft train`: a recipe file and/or the guide's flags → a run directory.

Every guide flag is accepted in its underscore spelling (``--no_peft``, as the guide writes it) and its
hyphen spelling (``--no-peft``); booleans have a ``--no-`` form. Flags override the recipe file; ``--set``
overrides both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

#: Flags whose values the guide writes space-separated (``--lora_target_modules q_proj k_proj``).
MULTI_VALUE_FLAGS = ("--lora_target_modules", "--lora-target-modules")


def join_multi_value_flags(argv: list[str]) -> list[str]:
    """Fold ``--lora_target_modules a b c`` into ``--lora_target_modules a,b,c`` (Click options take one value)."""
    result: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        result.append(token)
        i += 1
        if token in MULTI_VALUE_FLAGS:
            values = []
            while i < len(argv) and not argv[i].startswith("-") and not argv[i].endswith((".yaml", ".yml")):
                values.append(argv[i])
                i += 1
            result.append(",".join(values))
    return result


def _opt(name: str, help_text: str, default: Any = None, **kwargs: Any) -> Any:
    """An option spelled both ways: --learning_rate and --learning-rate."""
    return typer.Option(default, f"--{name.replace('_', '-')}", f"--{name}", help=help_text, **kwargs)


def _flag(name: str, help_text: str) -> Any:
    """A boolean option with on/off forms in both spellings; None when not given (the recipe decides)."""
    hyphen = name.replace("_", "-")
    return typer.Option(
        None, f"--{hyphen}/--no-{hyphen}", f"--{name}/--no_{name}", help=help_text, show_default=False
    )


def train(
    recipe: Path | None = typer.Argument(None, help="Recipe YAML (recipes/*.yaml). Optional when flags give model and data."),
    model_name_or_path: str | None = _opt("model_name_or_path", "Hub id, local dir or .gguf file."),
    dataset_name_or_path: str | None = _opt("dataset_name_or_path", "Dataset file/dir or Hub id."),
    output_dir: str | None = _opt("output_dir", "Run directory."),
    no_peft: bool = typer.Option(False, "--no-peft", "--no_peft", help="Full fine-tuning instead of LoRA (PEFT is the default)."),
    use_4bit: bool = typer.Option(False, "--use-4bit", "--use_4bit", help="QLoRA: load the base model in 4-bit nf4."),
    num_train_epochs: float | None = _opt("num_train_epochs", "Epochs."),
    max_steps: int | None = _opt("max_steps", "Stop after N optimizer steps (overrides epochs)."),
    per_device_train_batch_size: int | None = _opt("per_device_train_batch_size", "Micro-batch per device."),
    gradient_accumulation_steps: int | None = _opt("gradient_accumulation_steps", "Micro-batches per optimizer step."),
    learning_rate: float | None = _opt("learning_rate", "Peak learning rate (default 2e-4 PEFT, 2e-5 full)."),
    warmup_ratio: float | None = _opt("warmup_ratio", "Fraction of steps spent warming up."),
    weight_decay: float | None = _opt("weight_decay", "AdamW weight decay."),
    gradient_checkpointing: bool | None = _flag("gradient_checkpointing", "Recompute activations (on by default)."),
    lora_r: int | None = _opt("lora_r", "LoRA rank (default 16)."),
    lora_alpha: int | None = _opt("lora_alpha", "LoRA alpha (default 32)."),
    lora_dropout: float | None = _opt("lora_dropout", "LoRA dropout."),
    lora_target_modules: str | None = _opt("lora_target_modules", "Modules to adapt: q_proj k_proj v_proj o_proj (or 'auto')."),
    max_seq_length: int | None = _opt("max_seq_length", "Max tokens per example."),
    seed: int | None = _opt("seed", "Random seed."),
    trust_remote_code: bool | None = _flag("trust_remote_code", "Run code shipped with the model (off by default)."),
    set_: list[str] = typer.Option([], "--set", help="Override any recipe key: --set training.lr_scheduler_type=linear"),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in the run dir."),
    nproc: int | None = typer.Option(
        None, "--nproc", help="Processes per node (GPUs): launches through accelerate with the recipe's distributed strategy."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "--dry_run", help="Resolve and validate everything, load no weights."),
) -> None:
    """Fine-tune a model (LoRA by default; --no_peft for full, --use_4bit for QLoRA)."""
    from fnsft.recipe.load import load_recipe

    flags = {
        "model_name_or_path": model_name_or_path,
        "dataset_name_or_path": dataset_name_or_path,
        "output_dir": output_dir,
        "no_peft": no_peft or None,
        "use_4bit": use_4bit or None,
        "num_train_epochs": num_train_epochs,
        "max_steps": max_steps,
        "per_device_train_batch_size": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "weight_decay": weight_decay,
        "gradient_checkpointing": gradient_checkpointing,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "lora_dropout": lora_dropout,
        "lora_target_modules": _modules(lora_target_modules),
        "max_seq_length": max_seq_length,
        "seed": seed,
        "trust_remote_code": trust_remote_code,
    }
    resolved = load_recipe(recipe, flags=flags, sets=set_).resolved()
    if dry_run:
        from fnsft.train.plan import dry_run as run_dry

        run_dry(resolved)
        return
    if launch_needed(resolved, nproc):
        raise typer.Exit(launch(resolved, nproc, resume))
    from fnsft.train.run import run_training

    run_training(resolved, resume=resume)


#: Set in the processes that `fnsft train --nproc` starts, so they train instead of launching again.
LAUNCHED_ENV = "FNSFT_LAUNCHED"


def launch_needed(recipe, nproc: int | None) -> bool:
    import os

    from fnsft.train.launch import world_size

    return os.environ.get(LAUNCHED_ENV) != "1" and world_size(recipe, nproc) > 1


def launch(recipe, nproc: int | None, resume: bool) -> int:
    """Run this recipe in N processes through `accelerate launch`; returns their exit code."""
    import os
    import tempfile

    from fnsft.console import err
    from fnsft.recipe.load import dump_recipe
    from fnsft.train.launch import check_launch, detect_launch_facts, launch_command
    from fnsft.train.supervise import run_supervised

    check_launch(recipe, nproc, detect_launch_facts())
    with tempfile.TemporaryDirectory(prefix="fnsft-launch-") as tmp:
        recipe_file = Path(tmp) / "recipe.yaml"
        recipe_file.write_text(dump_recipe(recipe), encoding="utf-8")
        program = ["-m", "fnsft.cli", "train", str(recipe_file), *(["--resume"] if resume else [])]
        command = launch_command(recipe, nproc, program)
        err.print(f"launching: {' '.join(command)}", highlight=False)
        return run_supervised(command, {**os.environ, LAUNCHED_ENV: "1"})


def _modules(value: str | None) -> str | list[str] | None:
    if value is None:
        return None
    names = [name for part in value.split(",") for name in part.split() if name]
    return "auto" if names == ["auto"] else names


def register(app: typer.Typer) -> None:
    app.command("train")(train)
