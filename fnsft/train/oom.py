"""The out-of-memory message a run that does not fit ends with: when, the estimate's breakdown, what makes it fit.

Its own module, below :mod:`fnsft.train.run` (which raises it) and :mod:`fnsft.train.probe` (which runs a training).
"""

from __future__ import annotations

from fnsft.errors import TrainError
from fnsft.recipe.schema import Recipe

GiB = 1 << 30


def gib(value: int | float) -> str:
    return f"{value / GiB:.2f} GiB"


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
        lines.append("estimate: " + ", ".join(f"{name} {gib(getattr(breakdown, name))}" for name in parts)
                     + f"; device used {gib(breakdown.device_used)} of {gib(budget)}")
        suggestions = [s for s in make_it_fit(inp, budget) if s.in_train]  # runnable ones
        lines += ["to make it fit (cheapest first):"] + [f"  - {s.description} (estimated {gib(s.total)})"
                                                         for s in suggestions[:5]]
        if not suggestions:
            lines.append("the estimate predicted a fit: please report this run (recipe + GPU) so the estimator learns")
    except FnsftError as estimate_failed:
        lines.append(f"(no estimate for this model: {estimate_failed})")
    return TrainError("\n".join(lines))
