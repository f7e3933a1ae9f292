"""Make it fit: the cheapest changes that bring a run under a memory budget, and the guide's PEFT-vs-full line
(docs/PEFT_VS_FULL_GUIDE.md, "When to Use Each Approach").

Changes are ranked by what they cost the user, cheapest first: a smaller micro-batch with more gradient
accumulation (same effective batch, same result, a little slower), gradient checkpointing (~30 % slower),
an 8-bit optimizer (near-identical quality), QLoRA instead of LoRA (4-bit base), LoRA instead of full
fine-tuning (a different method), sharding over more GPUs (more hardware), CPU offload (much slower).
When no single change is enough, they are combined in that order.

The estimator also costs savers that ``fnsft train`` cannot run yet (the optimizer step fused into backward,
activation offloading, Liger / Cut-Cross-Entropy losses). They are suggested on their own, with the saving each
gives, marked ``in_train=False`` and said so in the description; the combined suggestion uses only what
``fnsft train`` can do, so following it gives a runnable recipe.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fnsft.estimate.memory import EstimateInput, estimate
from fnsft.names import FULL_PRECISION_ADAMW

GB = 10**9


class Suggestion(BaseModel):
    """One way to fit: what to change, the changed input, and its new predicted total."""

    description: str
    changes: dict[str, Any]
    input: EstimateInput
    total: int
    cost_rank: int
    saving: int = 0
    in_train: bool = True


#: Said of a saver the estimator costs but `fnsft train` has no recipe key for (README, "not supported yet").
NOT_IN_TRAIN = "estimate only: fnsft train cannot do this yet"


def _total(inp: EstimateInput) -> int:
    return estimate(inp).total


def divisors_descending(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def largest_batch(inp: EstimateInput, budget: int, *, at_most: int | None = None) -> tuple[EstimateInput, int] | None:
    """The largest micro-batch (up to ``at_most``) that fits ``budget``, with the same effective batch.

    The one batch search of fnsft: every divisor of micro-batch × accumulation, largest first, so the product is
    kept exactly. Returns the changed input and its predicted total, or None when even micro-batch 1 is too big.
    """
    share = inp.batch_size * inp.gradient_accumulation_steps
    for batch in divisors_descending(share):
        if at_most is not None and batch > at_most:
            continue
        changed = inp.model_copy(update={"batch_size": batch, "gradient_accumulation_steps": share // batch})
        total = _total(changed)
        if total <= budget:
            return changed, total
    return None


def _smaller_batch(inp: EstimateInput, budget: int) -> tuple[EstimateInput, dict[str, Any]] | None:
    """A smaller micro-batch that fits, with accumulation raised to keep the effective batch."""
    found = largest_batch(inp, budget, at_most=inp.batch_size - 1)
    if found is None:
        return None
    changed = found[0]
    return changed, {"batch_size": changed.batch_size, "gradient_accumulation_steps": changed.gradient_accumulation_steps}


_LOSS_NAMES = {"full_logits": "plain", "chunked": "chunked", "liger": "liger", "cce": "cce"}


def _estimate_only_changes(inp: EstimateInput) -> list[tuple[int, str, dict[str, Any]]]:
    """Savers the estimator models but ``fnsft train`` does not run (cost rank, description, field updates)."""
    options: list[tuple[int, str, dict[str, Any]]] = []
    if (not inp.optimizer_in_backward and inp.gradient_accumulation_steps == 1 and inp.sharding == "none"
            and inp.optimizer != "sgd"):
        options.append((3, "step the optimizer inside backward, one gradient alive at a time (--optimizer-in-backward)",
                        {"optimizer_in_backward": True}))
    if inp.device == "cuda":  # Liger and CCE are Triton kernels; activation offload copies to pinned host memory
        for loss, what in (("liger", "Liger fused linear cross-entropy"), ("cce", "Cut Cross-Entropy")):
            if inp.loss != loss:
                options.append((2, f"{what} instead of the {_LOSS_NAMES[inp.loss]} loss (--loss {loss})",
                                {"loss": loss}))
        if not inp.activation_offload:
            options.append((6, "offload saved activations to CPU memory (--activation-offload; slower steps)",
                            {"activation_offload": True}))
    return options


def _changes(inp: EstimateInput) -> list[tuple[int, str, dict[str, Any]]]:
    """(cost rank, description, field updates) for every single change ``fnsft train`` can make."""
    options: list[tuple[int, str, dict[str, Any]]] = []
    if inp.loss != "chunked":  # TRL's fused LM head: what fnsft train runs
        options.append((2, f"TRL's chunked LM head instead of the {_LOSS_NAMES[inp.loss]} loss (--loss chunked, "
                        "what fnsft train runs)", {"loss": "chunked"}))
    if not inp.gradient_checkpointing:
        options.append((2, "turn on gradient checkpointing (~30% slower)", {"gradient_checkpointing": True}))
    if inp.optimizer in FULL_PRECISION_ADAMW and inp.device == "cuda":
        options.append((3, "use the 8-bit AdamW optimizer (optimizer: adamw_8bit)", {"optimizer": "adamw_8bit"}))
        # paged: the 8-bit states move to CUDA managed memory (still on the device until it runs short)
        options.append((3, "use the paged 8-bit AdamW optimizer (optimizer: paged_adamw_8bit)",
                        {"optimizer": "paged_adamw_8bit"}))
    if inp.method == "lora" and inp.device == "cuda":
        options.append((4, "use QLoRA: 4-bit base weights (method: qlora)", {"method": "qlora", "precision": "bf16"}))
    if inp.method == "full":
        options.append((5, "use LoRA instead of full fine-tuning (method: lora)", {"method": "lora"}))
        if inp.device == "cuda":
            options.append((6, "use QLoRA instead of full fine-tuning (method: qlora)",
                            {"method": "qlora", "precision": "bf16"}))
    if inp.device == "cuda":
        for gpus in (2, 4, 8):
            if gpus > inp.num_gpus:
                options.append((7, f"shard with ZeRO-3/FSDP over {gpus} GPUs", {"num_gpus": gpus, "sharding": "zero3"}))
        if inp.offload == "none":
            sharding = {"sharding": "zero3"} if inp.num_gpus > 1 else {}
            options.append((8, "offload optimizer states to CPU memory (much slower steps)",
                            {"offload": "optimizer", **sharding}))
    return options


def _suggest(inp: EstimateInput, budget: int, rank: int, description: str, updates: dict[str, Any],
             in_train: bool = True) -> Suggestion | None:
    before = _total(inp)
    changed = inp.model_copy(update=updates)
    total = _total(changed)
    # the saving of the change itself, before any smaller micro-batch is added to it
    saving, where = before - total, "" if in_train else f" [{NOT_IN_TRAIN}]"
    if total <= budget:
        return Suggestion(description=f"{description}: saves {saving / 2**30:.2f} GiB{where}", changes=updates,
                          input=changed, total=total, cost_rank=rank, saving=saving, in_train=in_train)
    if saving <= 0:
        return None  # it does not help here: a smaller batch alone would do as well
    if inp.optimizer_in_backward or updates.get("optimizer_in_backward"):
        return None  # accumulation is what a smaller micro-batch needs, and the fused step cannot accumulate
    smaller = _smaller_batch(changed, budget)
    if smaller is not None:
        changed, batch_updates = smaller
        text = (f"{description}: saves {saving / 2**30:.2f} GiB, with micro-batch {changed.batch_size} × accumulation "
                f"{changed.gradient_accumulation_steps}{where}")
        return Suggestion(description=text, changes=updates | batch_updates, input=changed, total=_total(changed),
                          cost_rank=rank, saving=saving, in_train=in_train)
    return None


def make_it_fit(inp: EstimateInput, budget_bytes: int) -> list[Suggestion]:
    """Changes that bring the predicted peak under ``budget_bytes``, cheapest first.

    Args:
        inp: the run as configured.
        budget_bytes: memory available per GPU (per process on CPU).

    Returns:
        An empty list when the run already fits or nothing found fits; otherwise suggestions ordered by cost.
    """
    if _total(inp) <= budget_bytes:
        return []
    found: list[Suggestion] = []
    smaller = _smaller_batch(inp, budget_bytes)
    if smaller is not None:
        changed, updates = smaller
        total = _total(changed)
        saving = _total(inp) - total
        found.append(Suggestion(
            description=f"micro-batch {changed.batch_size} with gradient accumulation {changed.gradient_accumulation_steps} "
                        f"(same effective batch): saves {saving / 2**30:.2f} GiB",
            changes=updates, input=changed, total=total, cost_rank=1, saving=saving))
    options = _changes(inp)
    singles = [(option, True) for option in options] + [(option, False) for option in _estimate_only_changes(inp)]
    for (rank, description, updates), in_train in singles:
        if "num_gpus" in updates and any("num_gpus" in s.changes for s in found):
            continue  # only the fewest GPUs that fit
        suggestion = _suggest(inp, budget_bytes, rank, description, updates, in_train)
        if suggestion is not None:
            found.append(suggestion)
    if not any(s.in_train for s in found):  # combine what fnsft train can do, in cost order, until it fits
        combined: dict[str, Any] = {}
        descriptions: list[str] = []
        for rank, description, updates in options:
            trial = combined | updates
            suggestion = _suggest(inp, budget_bytes, rank + 10, " + ".join([*descriptions, description]), trial)
            if suggestion is not None:
                found.append(suggestion)
                break
            if "num_gpus" in updates and updates["num_gpus"] < 8:
                continue  # try more GPUs instead of stacking sharding choices
            combined, descriptions = trial, [*descriptions, description]
    unique = {suggestion.description: suggestion for suggestion in found}
    # what fnsft train can run first, then the estimate-only savers (each cheapest first)
    return sorted(unique.values(), key=lambda s: (not s.in_train, s.cost_rank, s.total))


def recommendation(inp: EstimateInput, budget_bytes: int | None) -> str:
    """The guide's "When to use each approach" applied to this model size and memory."""
    params = inp.model.total_params
    size = f"{params / 1e9:.1f}B-parameter model"
    if params >= 7e9:
        return f"PEFT (LoRA/QLoRA) recommended: {size} (guide: use PEFT for large models, 7B+)."
    if budget_bytes is not None and budget_bytes < 16 * GB:
        return f"PEFT recommended: limited GPU memory ({budget_bytes / GB:.0f} GB < 16 GB)."
    full = inp.model_copy(update={"method": "full", "precision": "bf16" if inp.precision == "fp32" and inp.device == "cuda"
                                  else inp.precision})
    fits_full = budget_bytes is None or _total(full) <= budget_bytes
    if params < 3e9 and fits_full:
        return (f"Full fine-tuning is an option: {size} (< 3B) and it fits; choose it for maximum quality or a large "
                "domain shift, PEFT for quick iteration and small adapters.")
    return f"PEFT recommended for quick iteration and small adapters ({size}); full fine-tuning needs more memory."
