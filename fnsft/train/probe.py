"""`fnsft train --probe` (one real step on the worst batch: measured vs predicted peak) and the out-of-memory
message a run that does not fit ends with."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fnsft.console import out
from fnsft.errors import TrainError
from fnsft.recipe.schema import Recipe

GiB = 1 << 30


def _gib(value: int | float) -> str:
    return f"{value / GiB:.2f} GiB"


def probe_recipe(recipe: Recipe, output_dir: Path) -> Recipe:
    """The recipe cut down to one optimizer step on the longest batch, writing into ``output_dir``, evaluating nothing."""
    from fnsft.recipe.schema import EvaluationSection, TrainingSection

    # keys that would only draw "is ignored" warnings in a one-step run without held-out data go back to defaults
    return recipe.model_copy(update={
        "output": recipe.output.model_copy(update={"dir": str(output_dir), "report_to": ["none"]}),
        "training": recipe.training.model_copy(update={
            "max_steps": 1, "gradient_accumulation_steps": 1, "longest_batch_first": True, "save_steps": 10**9,
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
        out.print(f"  {meter}: measured {_gib(measured)}, predicted {_gib(predicted)} ({error:+.1%})", highlight=False, soft_wrap=True)
    return rows


def out_of_memory_error(recipe: Recipe, step: int, exc: BaseException, budget: int | None = None) -> TrainError:
    """A readable error for a CUDA out-of-memory: when it happened, the estimate's breakdown and what makes it fit.

    ``budget`` is the GPU's memory (default: device 0's total memory).
    """
    from fnsft.errors import FnsftError
    from fnsft.estimate import estimate, inputs_from_recipe, make_it_fit

    where = "in the first step (the longest batch goes first)" if step == 0 else f"at step {step + 1}"
    lines = [f"out of GPU memory {where}: {str(exc).splitlines()[0]}"]
    try:
        inp = inputs_from_recipe(recipe, device="cuda")
        breakdown = estimate(inp)
        if budget is None:
            import torch

            budget = torch.cuda.get_device_properties(0).total_memory
        parts = ("weights", "adapter", "gradients", "optimizer_states", "activations", "logits_transient", "overhead")
        lines.append("estimate: " + ", ".join(f"{name} {_gib(getattr(breakdown, name))}" for name in parts)
                     + f"; device used {_gib(breakdown.device_used)} of {_gib(budget)}")
        suggestions = make_it_fit(inp, budget)
        lines += ["to make it fit (cheapest first):"] + [f"  - {s.description} (estimated {_gib(s.total)})"
                                                         for s in suggestions[:5]]
        if not suggestions:
            lines.append("the estimate predicted a fit: please report this run (recipe + GPU) so the estimator learns")
    except FnsftError as estimate_failed:
        lines.append(f"(no estimate for this model: {estimate_failed})")
    return TrainError("\n".join(lines))
