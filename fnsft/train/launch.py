"""Multi-process launch: a recipe's ``distributed`` section → an ``accelerate launch`` command line.

The strategy presets (DDP, FSDP2, DeepSpeed ZeRO-2/3) ship as package resources in
``fnsft/resources/accelerate/``; a user's own accelerate config file (``distributed.accelerate_config``)
replaces the preset. Whatever the file says, fnsft passes on the command line (which accelerate lets override
the file): the process and machine counts, the rendezvous address, the offload choice and the mixed precision,
so the recipe stays the one source of truth for a run.

Process counts follow torchrun: ``nproc`` is processes PER NODE; accelerate's ``--num_processes`` is the
total, ``nproc × distributed.num_nodes``.

Everything here is a pure function of the recipe and the facts passed in (device count, whether DeepSpeed is
installed), so it is tested without GPUs; :func:`detect_launch_facts` reads those facts from the machine.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fnsft.errors import RecipeError, TrainError
from fnsft.recipe.schema import Recipe

#: Strategy name (recipe ``distributed.strategy``) → preset file in fnsft/resources/accelerate/.
PRESET_FILES: dict[str, str] = {
    "ddp": "ddp.yaml",
    "fsdp": "fsdp2.yaml",
    "zero2": "zero2.yaml",
    "zero3": "zero3.yaml",
}
SHARDED_STRATEGIES = ("fsdp", "zero2", "zero3")
DEEPSPEED_STRATEGIES = ("zero2", "zero3")

#: recipe training.precision → accelerate --mixed_precision. 'auto' and 'fp32' give 'no' on purpose: accelerate
#: exports ACCELERATE_MIXED_PRECISION to every process and transformers' TrainingArguments keeps it unless bf16/fp16
#: is set, so a preset saying bf16 would silently turn autocast on for an fp32 run. With 'no' the trainer's own
#: resolved bf16/fp16 flag decides.
MIXED_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no", "auto": "no"}


@dataclass(frozen=True)
class LaunchFacts:
    """What the machine offers, as far as launching is concerned."""

    gpu_count: int
    deepspeed_installed: bool


def effective_strategy(recipe: Recipe) -> str:
    """The strategy a multi-process run uses: ``none`` means plain data parallel (ddp)."""
    strategy = recipe.distributed.strategy
    return "ddp" if strategy == "none" else strategy


def processes_per_node(recipe: Recipe, nproc: int | None) -> int:
    """``--nproc`` when given, else the recipe's ``distributed.num_processes``."""
    return recipe.distributed.num_processes if nproc is None else nproc


def world_size(recipe: Recipe, nproc: int | None = None) -> int:
    """Total processes across all nodes (what the run manifest records)."""
    return processes_per_node(recipe, nproc) * recipe.distributed.num_nodes


def preset_path(strategy: str) -> Path:
    """The packaged accelerate config for ``strategy`` (ddp, fsdp, zero2 or zero3).

    Raises:
        RecipeError: for a strategy without a preset.
    """
    if strategy not in PRESET_FILES:
        raise RecipeError(f"no accelerate preset for strategy {strategy!r}; choose one of {', '.join(PRESET_FILES)}")
    return Path(str(resources.files("fnsft") / "resources" / "accelerate" / PRESET_FILES[strategy]))


def config_file(recipe: Recipe) -> Path:
    """The accelerate config a run uses: the user's ``distributed.accelerate_config`` if set, else the preset.

    Raises:
        RecipeError: when the user's config file does not exist.
    """
    user_config = recipe.distributed.accelerate_config
    if user_config is None:
        return preset_path(effective_strategy(recipe))
    path = Path(user_config).expanduser()
    if not path.is_file():
        raise RecipeError(f"distributed.accelerate_config: {user_config} is not a file")
    return path


def check_launch(recipe: Recipe, nproc: int | None, facts: LaunchFacts) -> None:
    """Refuse, before anything starts, a launch that cannot work or would silently do something else.

    Raises:
        RecipeError: a broken cross-field rule of the recipe (:func:`fnsft.recipe.check.check`), such as an offload
            setting the strategy cannot honour.
        TrainError: too many processes for the GPUs, a sharded strategy without GPUs, ZeRO without DeepSpeed.
    """
    from fnsft.recipe.check import check

    dist = recipe.distributed
    per_node = processes_per_node(recipe, nproc)
    if per_node < 1:
        raise TrainError(f"--nproc must be at least 1, got {per_node}")
    check(recipe, world_size(recipe, nproc))
    if facts.gpu_count and per_node > facts.gpu_count:
        raise TrainError(
            f"{per_node} processes per node but only {facts.gpu_count} GPU(s) visible; use --nproc {facts.gpu_count} "
            "or set CUDA_VISIBLE_DEVICES"
        )
    if dist.accelerate_config is not None:
        return  # the user's file decides the strategy; only the generic checks above apply
    strategy = effective_strategy(recipe)
    if strategy in SHARDED_STRATEGIES and facts.gpu_count == 0:
        # FSDP through Trainer silently falls back to DDP on CPU, and DeepSpeed needs CUDA: refuse instead.
        raise TrainError(f"distributed.strategy={strategy} needs CUDA GPUs; on CPU use strategy ddp (gloo)")
    if strategy in DEEPSPEED_STRATEGIES and not facts.deepspeed_installed:
        raise TrainError(
            f"distributed.strategy={strategy} needs DeepSpeed, which is not installed: pip install deepspeed"
        )


def _offload_flags(strategy: str, offload: str) -> list[str]:
    if offload == "none":
        return []
    if strategy == "fsdp":
        return ["--fsdp_offload_params", "true"]
    # DeepSpeed: 'params' offloads parameters AND optimizer state (the most memory-saving setting).
    flags = ["--offload_optimizer_device", "cpu"]
    if offload == "params":
        flags += ["--offload_param_device", "cpu"]
    return flags


def launch_command(
    recipe: Recipe, nproc: int | None, program: Sequence[str], *, python: str = sys.executable
) -> list[str]:
    """The ``accelerate launch`` argv that runs ``program`` in every process.

    Args:
        recipe: The resolved recipe; its ``distributed`` section and ``training.precision`` are read.
        nproc: Processes per node (``fnsft train --nproc``); None takes ``distributed.num_processes``.
        program: What each process runs, as accelerate takes it: a script path and its arguments, or
            ``["-m", "module", *args]`` (accelerate's ``-m`` runs a module).
        python: The interpreter that runs accelerate (default: this one, so the same environment is used).

    Returns:
        The full command line, starting with ``python -m accelerate.commands.launch``.

    Raises:
        RecipeError: when ``distributed.accelerate_config`` names a missing file.
    """
    dist = recipe.distributed
    command = [python, "-m", "accelerate.commands.launch", "--config_file", str(config_file(recipe))]
    command += ["--num_processes", str(world_size(recipe, nproc)), "--num_machines", str(dist.num_nodes)]
    command += ["--mixed_precision", MIXED_PRECISION[recipe.training.precision], "--dynamo_backend", "no"]
    if dist.num_nodes > 1:
        command += ["--machine_rank", str(dist.node_rank), "--main_process_ip", dist.master_addr]
    command += ["--main_process_port", str(dist.master_port)]
    if dist.accelerate_config is None:
        command += _offload_flags(effective_strategy(recipe), dist.offload)
    return [*command, *program]


def detect_launch_facts() -> LaunchFacts:
    """Read the visible GPU count (torch) and whether DeepSpeed is importable, without importing DeepSpeed."""
    import torch

    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return LaunchFacts(gpu_count=gpu_count, deepspeed_installed=importlib.util.find_spec("deepspeed") is not None)
