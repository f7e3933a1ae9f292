"""`fnsft train --probe`: one real step on the worst batch, measured vs predicted peak memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fnsft.console import out
from fnsft.recipe.schema import Recipe
from fnsft.train.oom import gib


def probe_recipe(recipe: Recipe, output_dir: Path) -> Recipe:
    """The recipe cut down to one optimizer step on the longest batch, writing into ``output_dir``, evaluating nothing."""
    from fnsft.recipe.schema import EvaluationSection, TrainingSection

    # keys that would only draw "is ignored" warnings in a one-step run without held-out data go back to defaults
    return recipe.model_copy(update={
        "output": recipe.output.model_copy(update={"dir": str(output_dir), "report_to": ["none"]}),
        "training": recipe.training.model_copy(update={
            "max_steps": 1, "gradient_accumulation_steps": 1, "longest_batch_first": True, "save_steps": 10**9,
            "warmup_ratio": 0.0, "warmup_steps": None,  # one step of warmup would train at lr 0 (and say so)
            "eval_steps": None, "per_device_eval_batch_size": None,
            "num_train_epochs": TrainingSection.model_fields["num_train_epochs"].default}),
        "data": recipe.data.model_copy(update={"validation_fraction": 0.0, "eval_split": None}),
        "evaluation": EvaluationSection(),
        "mask": None,
    })


def probe_rows(memory: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(meter, measured bytes, predicted bytes) for the meters this device has."""
    measured, predicted = memory["measured"], memory.get("predicted")
    if predicted is None:
        return []
    breakdown = predicted["breakdown"]
    if measured["device"] == "cuda":
        return [("max_memory_allocated", measured["max_memory_allocated"], breakdown["allocated"]),
                ("max_memory_reserved", measured["max_memory_reserved"], breakdown["reserved"])]
    return [("peak RSS (process)", measured["peak_rss"], breakdown["device_used"])]


def run_probe(recipe: Recipe) -> list[tuple[str, int, int]]:
    """Train one step (forward + backward + optimizer) on the longest micro-batch in a throw-away directory and print
    measured vs predicted peak memory. Returns the printed rows."""
    from fnsft.train.run import run_training

    # out.capture(): the run's own summary names files that are deleted right after
    with tempfile.TemporaryDirectory(prefix="fnsft-probe-") as tmp, out.capture():
        result = run_training(probe_recipe(recipe, Path(tmp) / "probe"))
    memory = result.manifest["memory"]
    rows = probe_rows(memory)
    seq_len = memory["predicted"]["seq_len"] if memory.get("predicted") else None
    batch = recipe.training.per_device_train_batch_size
    out.print(f"probe: 1 optimizer step (forward + backward + optimizer) on the longest micro-batch "
              f"({batch} × {seq_len} tokens)", highlight=False, soft_wrap=True)
    if not rows:
        out.print("probe: no prediction for this model (the estimator does not know its shape)", highlight=False, soft_wrap=True)
    for meter, measured, predicted in rows:
        error = (predicted - measured) / measured if measured else 0.0
        out.print(f"  {meter}: measured {gib(measured)}, predicted {gib(predicted)} ({error:+.1%})", highlight=False, soft_wrap=True)
    return rows
