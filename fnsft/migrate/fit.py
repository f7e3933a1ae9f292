"""What the memory estimator tells migration: the model's size (for the lr rule) and the batch that fits a GPU.

:func:`fit_to_gpu` (``--gpu-memory`` / ``--gpu``) picks the largest per-device batch that fits with the estimator's
batch search (:func:`fnsft.estimate.fit.largest_batch`) and adds memory savers only if needed; the effective
batch is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fnsft.errors import EstimateError
from fnsft.estimate.catalog import catalog_lookup
from fnsft.estimate.fit import largest_batch, make_it_fit
from fnsft.estimate.inputs import inputs_from_recipe
from fnsft.estimate.memory import estimate
from fnsft.estimate.resolve import resolve_shape
from fnsft.migrate.rules import Change, params_from_name, with_updates, world_size
from fnsft.models import PACKAGE_SCHEME
from fnsft.names import FULL_PRECISION_ADAMW
from fnsft.recipe.schema import ModelSection, Recipe


def model_params(model: ModelSection) -> int | None:
    """Parameter count for the lr rule: the estimator's shape for a local model (config.json, .gguf, packaged GGUF)
    or one in its catalog, else the size written in the name. Never asks the Hub (migration works offline).
    """
    name = model.name_or_path
    local = name.startswith(PACKAGE_SCHEME) or Path(name).expanduser().exists()
    if local or catalog_lookup(name) is not None:
        try:
            return resolve_shape(name, model.gguf_file).total_params
        except Exception:  # best effort: a model the estimator cannot read falls back to the size in its name
            pass
    return params_from_name(name)


GiB = 1 << 30


class GpuFit(BaseModel):
    """What :func:`fit_to_gpu` chose: the recipe, its changes and the estimated peak per GPU."""

    recipe: Recipe
    changes: list[Change]
    peak_bytes: int
    budget_bytes: int


def _savers(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """Memory savers in the order they are added when needed: (dotted path, value, what it is)."""
    savers: list[tuple[str, Any, str]] = [("training.gradient_checkpointing", True, "gradient checkpointing")]
    if recipe.training.optimizer in FULL_PRECISION_ADAMW:
        savers.append(("training.optimizer", "adamw_8bit", "8-bit AdamW"))
    if world_size(recipe) > 1 and recipe.distributed.strategy in ("none", "ddp") and recipe.distributed.accelerate_config is None:
        savers.append(("distributed.strategy", "fsdp", f"FSDP sharding over {world_size(recipe)} GPUs"))
    return savers


def _largest_fit(recipe: Recipe, updates: Mapping[str, Any], budget: int) -> tuple[int, int] | None:
    """(per-device batch, estimated peak) of the largest micro-batch that fits with ``updates``, same share."""
    found = largest_batch(inputs_from_recipe(with_updates(recipe, {k: (v, "") for k, v in updates.items()})[0]), budget)
    return None if found is None else (found[0].batch_size, found[1])


def fit_to_gpu(recipe: Recipe, budget_bytes: int, label: str) -> GpuFit:
    """The largest per-device batch that fits ``budget_bytes`` per GPU, by the estimator, same effective batch.

    Savers (gradient checkpointing, then 8-bit AdamW, then FSDP sharding on several GPUs) are added one at a
    time until something fits; then each earlier saver is dropped again if the batch fits as well without it.
    Checkpointing is turned off when the run fits without it (faster steps).

    Raises:
        EstimateError: nothing fits; the message lists the estimator's make-it-fit suggestions.
    """
    savers = _savers(recipe)
    off = {"training.gradient_checkpointing": False}
    for level in range(len(savers) + 1):
        used = savers[:level]
        updates = off | {path: value for path, value, _ in used}
        found = _largest_fit(recipe, updates, budget_bytes)
        if found is None:
            continue
        for saver in used[:-1]:  # the last one was needed; an earlier one may not be, next to it
            without = [s for s in used if s != saver]
            fewer = off | {path: value for path, value, _ in without}
            smaller = _largest_fit(recipe, fewer, budget_bytes)
            if smaller is not None and smaller[0] >= found[0]:
                used, updates, found = without, fewer, smaller
        return _fitted(recipe, updates, used, found[0], found[1], budget_bytes, label)
    share = recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps
    all_savers = off | {path: value for path, value, _ in savers}
    smallest = inputs_from_recipe(with_updates(recipe, {k: (v, "") for k, v in all_savers.items()})[0])
    worst = estimate(smallest.model_copy(update={"batch_size": 1, "gradient_accumulation_steps": share})).total
    options = make_it_fit(inputs_from_recipe(recipe), budget_bytes)
    tried = ", ".join(what for _, _, what in savers)
    listing = "".join(f"\n  - {o.description} (estimated {o.total / GiB:.1f} GiB)" for o in options)
    raise EstimateError(
        f"nothing fits in {label} per GPU: even micro-batch 1 with {tried} is estimated at {worst / GiB:.1f} GiB. "
        + (f"Ways to make it fit:{listing}" if options else "No single change found fits; use a smaller model, "
           "a shorter data.max_length or more GPUs (--num-gpus).")
    )


def _fitted(recipe: Recipe, updates: dict[str, Any], used: list[tuple[str, Any, str]], per_device: int,
            peak: int, budget: int, label: str) -> GpuFit:
    share = recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps
    reasons = {path: f"{what}: needed to fit {label}" for path, _, what in used}
    reasons["training.gradient_checkpointing"] = (
        f"gradient checkpointing: needed to fit {label}" if any(p == "training.gradient_checkpointing" for p, _, _ in used)
        else f"gradient checkpointing off: {label} fits without it (faster steps)")
    fit_reason = f"largest per-device batch that fits {label} (estimated {peak / GiB:.1f} of {budget / GiB:.1f} GiB)"
    chosen = {path: (value, reasons[path]) for path, value in updates.items()}
    chosen["training.per_device_train_batch_size"] = (per_device, fit_reason)
    chosen["training.gradient_accumulation_steps"] = (share // per_device, "keeps the effective batch")
    fitted, changes = with_updates(recipe, chosen)
    return GpuFit(recipe=fitted, changes=changes, peak_bytes=peak, budget_bytes=budget)
