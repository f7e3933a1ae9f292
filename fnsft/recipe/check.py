"""Every cross-field rule of a recipe, in one place: a key either changes the run, or it is an error or a warning.

Field-level validity (types, ranges, unknown keys) is the schema's; this module holds the rules that need two
or more keys. ``check`` is called by `fnsft recipe validate`, `fnsft train --dry-run`, the launcher of
`fnsft train --nproc` and :func:`fnsft.train.run.run_training`. It reads the recipe and (for the Hub-only keys)
whether a path exists; it imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from fnsft.errors import RecipeError
from fnsft.recipe.schema import (
    DataSection,
    DistributedSection,
    EvaluationSection,
    LoraSection,
    QuantizationSection,
    Recipe,
    TrainingSection,
)

#: Offload choices each sharded strategy can honour (ddp shards nothing, so it offloads nothing).
OFFLOADS: dict[str, tuple[str, ...]] = {
    "fsdp": ("none", "params"),  # FSDP's CPU offload moves parameters, and with them the optimizer step
    "zero2": ("none", "optimizer"),  # ZeRO-2 shards optimizer state and gradients, never parameters
    "zero3": ("none", "optimizer", "params"),
    "ddp": ("none",),
}


@dataclass(frozen=True)
class Rule:
    """One cross-field rule: when ``broken`` says so, ``message`` is an error (or a warning: ``error=False``)."""

    name: str
    keys: tuple[str, ...]  # the dotted keys the rule is about (the schema table test looks them up)
    broken: Callable[[Recipe, int], bool]
    message: Callable[[Recipe, int], str]
    error: bool = True


def changed(section: BaseModel, default: BaseModel, keys: tuple[str, ...] | None = None) -> list[str]:
    """The keys of ``section`` whose values differ from ``default`` (all fields, or only ``keys``)."""
    names = keys if keys is not None else tuple(type(section).model_fields)
    return [name for name in names if getattr(section, name) != getattr(default, name)]


def _local(path: str) -> bool:
    return path.startswith("package://") or Path(path).expanduser().exists()


def _strategy(recipe: Recipe) -> str:
    return "ddp" if recipe.distributed.strategy == "none" else recipe.distributed.strategy


def _has_eval(recipe: Recipe) -> bool:
    return recipe.data.eval_split is not None or recipe.data.validation_fraction > 0


def _evaluation_keys(recipe: Recipe) -> list[str]:
    """The set keys that only an evaluation reads."""
    keys = [f"training.{name}" for name in changed(recipe.training, TrainingSection(), _EVAL_ONLY_TRAINING)]
    return keys + (["evaluation.exact_match_samples"] if recipe.evaluation.exact_match_samples else [])


def _subject(keys: list[str]) -> str:
    """``a.b is`` / ``a.b, a.c are``: the subject of a message about these keys."""
    return ", ".join(keys) + (" is" if len(keys) == 1 else " are")


def _keys(prefix: str, names: list[str]) -> str:
    return _subject([f"{prefix}.{name}" for name in names])


_DISTRIBUTED_DEFAULT = DistributedSection()
#: Distributed keys that only a multi-process launch reads.
LAUNCH_ONLY = ("strategy", "offload", "master_addr", "master_port", "accelerate_config")
_HUB_ONLY = ("config_name", "revision", "split")
_FOUR_BIT_ONLY = ("quant_type", "double_quant", "compute_dtype")
_EVAL_ONLY_TRAINING = ("eval_steps", "per_device_eval_batch_size")

RULES: tuple[Rule, ...] = (
    Rule(
        "quantization needs qlora",
        tuple(f"method.quantization.{name}" for name in QuantizationSection.model_fields),
        lambda r, _: r.method.name != "qlora" and bool(changed(r.method.quantization, QuantizationSection())),
        lambda r, _: (
            f"{_keys('method.quantization', changed(r.method.quantization, QuantizationSection()))} set but "
            f"method.name is {r.method.name}, which loads the base weights unquantized. Use method.name: qlora "
            "(--use_4bit) for a quantized base, or remove method.quantization."
        ),
    ),
    Rule(
        "8-bit ignores the 4-bit settings",
        tuple(f"method.quantization.{name}" for name in _FOUR_BIT_ONLY),
        lambda r, _: r.method.quantization.bits == 8 and bool(changed(r.method.quantization, QuantizationSection(), _FOUR_BIT_ONLY)),
        lambda r, _: (
            f"{_keys('method.quantization', changed(r.method.quantization, QuantizationSection(), _FOUR_BIT_ONLY))} "
            "ignored: it applies to 4-bit quantization, and method.quantization.bits is 8."
        ),
        error=False,
    ),
    Rule(
        "full fine-tuning has no LoRA",
        tuple(f"method.lora.{name}" for name in LoraSection.model_fields),
        lambda r, _: r.method.name == "full" and bool(changed(r.method.lora, LoraSection())),
        lambda r, _: (
            f"{_keys('method.lora', changed(r.method.lora, LoraSection()))} ignored: full fine-tuning "
            "(--no_peft) trains every weight and builds no LoRA adapter."
        ),
        error=False,
    ),
    Rule(
        "node_rank below num_nodes",
        ("distributed.node_rank", "distributed.num_nodes"),
        lambda r, _: r.distributed.node_rank >= r.distributed.num_nodes,
        lambda r, _: f"distributed.node_rank {r.distributed.node_rank} must be below distributed.num_nodes "
        f"{r.distributed.num_nodes}",
    ),
    Rule(
        "offload goes in your own accelerate config",
        ("distributed.offload", "distributed.accelerate_config"),
        lambda r, _: r.distributed.accelerate_config is not None and r.distributed.offload != "none",
        lambda r, _: "distributed.offload conflicts with distributed.accelerate_config: "
        "set the offload in your accelerate config file instead",
    ),
    Rule(
        "the strategy must be able to offload",
        ("distributed.offload", "distributed.strategy"),
        lambda r, world: r.distributed.accelerate_config is None and r.distributed.offload not in OFFLOADS[_strategy(r)]
        and (world > 1 or r.distributed.strategy != "none"),
        lambda r, _: {
            "ddp": "distributed.offload needs a sharded strategy (fsdp, zero2 or zero3), not ddp",
            "zero2": "distributed.offload params: ZeRO-2 cannot offload parameters; use offload: optimizer, or "
            "strategy zero3",
            "fsdp": "distributed.offload optimizer: FSDP offloads parameters (and with them the optimizer step), not "
            "the optimizer alone; use offload: params, or strategy zero2/zero3 for optimizer-only offload",
        }[_strategy(r)],
    ),
    Rule(
        "mixing settings need data.sources",
        ("data.mix", "data.mix_by", "data.temperature"),
        lambda r, _: r.data.sources is None and bool(changed(r.data, DataSection(path=r.data.path),
                                                             ("mix", "mix_by", "temperature"))),
        lambda r, _: f"{_keys('data', changed(r.data, DataSection(path=r.data.path), ('mix', 'mix_by', 'temperature')))}"
        " ignored: they mix data.sources, and this recipe has one dataset (data.path).",
        error=False,
    ),
    Rule(
        "weights and temperature need a mix that reads them",
        ("data.sources", "data.temperature"),
        lambda r, _: r.data.sources is not None and (
            (r.data.mix == "concat" and any(s.weight != 1 for s in r.data.sources))
            or (r.data.mix != "temperature" and r.data.temperature != DataSection.model_fields["temperature"].default)),
        lambda r, _: ("data.sources weights are ignored: mix: concat takes every row once. "
                      if r.data.mix == "concat" and any(s.weight != 1 for s in r.data.sources or ()) else "")
        + ("data.temperature is ignored: it applies to mix: temperature."
           if r.data.mix != "temperature" and r.data.temperature != DataSection.model_fields["temperature"].default
           else ""),
        error=False,
    ),
    Rule(
        "warmup in steps replaces the ratio",
        ("training.warmup_ratio", "training.warmup_steps"),
        lambda r, _: r.training.warmup_steps is not None and r.training.warmup_ratio is not None,
        lambda r, _: "training.warmup_ratio is ignored: training.warmup_steps is set (warmup is counted in steps).",
        error=False,
    ),
    Rule(
        "launch settings need several processes",
        tuple(f"distributed.{name}" for name in LAUNCH_ONLY),
        lambda r, world: world == 1 and bool(changed(r.distributed, _DISTRIBUTED_DEFAULT, LAUNCH_ONLY)),
        lambda r, _: (
            f"{_keys('distributed', changed(r.distributed, _DISTRIBUTED_DEFAULT, LAUNCH_ONLY))} ignored: this run "
            "has one process. They apply when fnsft train launches several (--nproc N or distributed.num_processes)."
        ),
        error=False,
    ),
    Rule(
        "the rendezvous address is for several machines",
        ("distributed.master_addr",),
        lambda r, world: world > 1 and r.distributed.num_nodes == 1
        and r.distributed.master_addr != _DISTRIBUTED_DEFAULT.master_addr,
        lambda r, _: "distributed.master_addr is ignored: with distributed.num_nodes 1 every process runs on this "
        "machine.",
        error=False,
    ),
    Rule(
        "evaluation settings need held-out data",
        (*(f"training.{name}" for name in _EVAL_ONLY_TRAINING), "evaluation.exact_match_samples"),
        lambda r, _: not _has_eval(r) and bool(_evaluation_keys(r)),
        lambda r, _: f"{_subject(_evaluation_keys(r))} ignored: there is no held-out data "
        "(data.validation_fraction is 0 and data.eval_split is unset).",
        error=False,
    ),
    Rule(
        "the generation budget needs exact-match samples",
        ("evaluation.max_new_tokens",),
        lambda r, _: r.evaluation.exact_match_samples == 0 and bool(changed(r.evaluation, EvaluationSection(), ("max_new_tokens",))),
        lambda r, _: "evaluation.max_new_tokens is ignored: evaluation.exact_match_samples is 0, so nothing is generated.",
        error=False,
    ),
    Rule(
        "max_steps decides the length",
        ("training.num_train_epochs", "training.max_steps"),
        lambda r, _: r.training.max_steps > 0 and bool(changed(r.training, TrainingSection(), ("num_train_epochs",))),
        lambda r, _: f"training.num_train_epochs is ignored: training.max_steps {r.training.max_steps} decides how "
        "long the run is.",
        error=False,
    ),
    Rule(
        "Hub dataset settings need a Hub dataset",
        tuple(f"data.{name}" for name in _HUB_ONLY),
        lambda r, _: r.data.path is not None and _local(r.data.path)
        and bool(changed(r.data, DataSection(path=r.data.path), _HUB_ONLY)),
        lambda r, _: f"{_keys('data', changed(r.data, DataSection(path=r.data.path), _HUB_ONLY))} ignored: "
        f"{r.data.path} is a local path, and these select a Hub dataset's configuration, revision and split.",
        error=False,
    ),
    Rule(
        "an evaluation split needs a Hub dataset",
        ("data.eval_split",),
        lambda r, _: r.data.path is not None and _local(r.data.path) and r.data.eval_split is not None,
        lambda r, _: f"{r.data.path}: data.eval_split needs a Hub dataset; for local files use validation_fraction",
    ),
    Rule(
        "a model revision needs a Hub model",
        ("model.revision",),
        lambda r, _: _local(r.model.name_or_path) and r.model.revision is not None,
        lambda r, _: f"model.revision is ignored: {r.model.name_or_path} is a local path, not a Hub repository.",
        error=False,
    ),
    Rule(
        "a system prompt needs conversations",
        ("data.system_prompt",),
        lambda r, _: r.data.system_prompt is not None and r.data.format in ("text", "prompt_completion"),
        lambda r, _: f"data.system_prompt is ignored: data.format {r.data.format} has no conversation to put it in.",
        error=False,
    ),
)


def broken_rules(recipe: Recipe, processes: int = 1) -> Iterator[Rule]:
    return (rule for rule in RULES if rule.broken(recipe, processes))


def check(recipe: Recipe, processes: int | None = None) -> list[str]:
    """Apply every cross-field rule to a recipe run by ``processes`` processes (default: the recipe's own count).

    Returns:
        The warnings: keys that are valid but change nothing in this run, each with the reason.

    Raises:
        RecipeError: every broken error rule, one line each.
    """
    world = processes if processes is not None else recipe.distributed.num_processes * recipe.distributed.num_nodes
    broken = list(broken_rules(recipe, world))
    errors = [rule.message(recipe, world) for rule in broken if rule.error]
    if errors:
        raise RecipeError("\n".join(errors))
    return [rule.message(recipe, world) for rule in broken if not rule.error]

