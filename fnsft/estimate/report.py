"""The estimate as JSON (stable, documented keys) and as a rich table.

JSON schema ``fnsft-estimate/1`` (bytes are integers, per GPU; per process with device "cpu"):

* ``schema``: "fnsft-estimate/1".
* ``model``: ``name``, ``source`` (catalog|config|hub|gguf), ``model_type``, ``total_params``, ``trainable_params``.
* ``input``: the EstimateInput without the model shape (method, precision, optimizer, batch_size,
  gradient_accumulation_steps, seq_len, gradient_checkpointing, lora_r, lora_targets, lora_dropout, quant_bits,
  quant_double, qlora_fp32_non_quantized, attention, num_gpus, sharding, offload, device).
* ``bytes``: ``weights``, ``weights_quantized``, ``quantization_constants``, ``weights_unquantized``, ``adapter``,
  ``gradients``, ``optimizer_states``, ``activations``, ``activations_without_checkpointing``,
  ``activations_with_checkpointing``, ``recompute``, ``logits_saved``, ``logits_transient``,
  ``optimizer_transient``, ``workspace``, ``communication``, ``outside_allocator``, ``fragmentation``, ``context``,
  ``overhead``, ``allocated``, ``reserved``, ``device_used``, ``total``, ``cpu_offloaded``.
* ``meters``: ``{"allocated", "reserved", "device_used", "fit_meter"}``: the peak on each of the three meters
  users read (torch.cuda.max_memory_allocated, max_memory_reserved, nvidia-smi; on CPU tensors and RSS) and the
  one the fit verdict uses (``device_used``; ``bytes.total`` is the same number).
* ``warnings``: list of strings (e.g. seq_len beyond max_position_embeddings); the estimate still stands.
* ``peak_phase``: when the peak happens ("loss (end of forward)", "backward", "optimizer step").
* ``fit``: list of ``{"gpu": name or null, "memory_bytes": int, "fits": bool, "headroom_bytes": int}``.
* ``suggestions``: list of ``{"description", "changes", "total_bytes", "saving_bytes", "in_train"}``, what
  ``fnsft train`` can do first (``in_train``), each group cheapest first (empty when it fits).
* ``recommendation``: the guide's PEFT-vs-full line.
* ``accuracy``: the measured error band (``fnsft/resources/estimate_accuracy.json``, written by
  ``bench/estimate_accuracy.py`` from the team's own measured runs) and ``line``, the sentence the table prints.
"""

from __future__ import annotations

from typing import Any

from fnsft.estimate.fit import Suggestion
from fnsft.estimate.memory import Breakdown, EstimateInput

SCHEMA = "fnsft-estimate/1"


def accuracy_band() -> dict[str, Any]:
    """The error band measured by bench/estimate_accuracy.py, and one line saying it (no torch: a JSON resource)."""
    import json
    from importlib.resources import files

    band = json.loads(files("fnsft.resources").joinpath("estimate_accuracy.json").read_text(encoding="utf-8"))
    cpu = band["cpu"]
    line = (f"accuracy: within ±{100 * cpu['max_abs_rel_error']:.1f} % (median {100 * cpu['median_abs_rel_error']:.1f} %)"
            f" of the {cpu['runs']} measured CPU runs ({cpu['what']})")
    line += ("" if band["cuda"] else "; no CUDA run measured yet: the CUDA context and fragmentation terms are "
             "approximate") + f". Table: {band['table']}"
    return {**band, "line": line}
GiB = 1 << 30


def fit_rows(total: int, budgets: list[tuple[str | None, int]]) -> list[dict[str, Any]]:
    return [
        {"gpu": name, "memory_bytes": memory, "fits": total <= memory, "headroom_bytes": memory - total}
        for name, memory in budgets
    ]


def to_json(inp: EstimateInput, breakdown: Breakdown, budgets: list[tuple[str | None, int]],
            suggestions: list[Suggestion], recommendation: str) -> dict[str, Any]:
    """The machine-readable report (see the module docstring for the keys)."""
    numbers = breakdown.model_dump(exclude={"peak_phase", "trainable_params", "total_params", "fit_meter", "warnings"})
    return {
        "schema": SCHEMA,
        "model": {
            "name": inp.model.name, "source": inp.model.source, "model_type": inp.model.model_type,
            "total_params": breakdown.total_params, "trainable_params": breakdown.trainable_params,
        },
        "input": inp.model_dump(mode="json", exclude={"model"}),
        "bytes": numbers,
        "meters": {"allocated": breakdown.allocated, "reserved": breakdown.reserved,
                   "device_used": breakdown.device_used, "fit_meter": breakdown.fit_meter},
        "peak_phase": breakdown.peak_phase,
        "warnings": breakdown.warnings,
        "fit": fit_rows(breakdown.total, budgets),
        "suggestions": [
            {"description": s.description, "changes": s.changes, "total_bytes": s.total, "saving_bytes": s.saving,
             "in_train": s.in_train} for s in suggestions
        ],
        "recommendation": recommendation,
        "accuracy": accuracy_band(),
    }


def _gib(value: int) -> str:
    return f"{value / GiB:,.2f}"


def render(report: dict[str, Any]):
    """A rich renderable (table + verdicts + suggestions) for the JSON report."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    inp, numbers, model = report["input"], report["bytes"], report["model"]
    where = "per process (CPU)" if inp["device"] == "cpu" else f"per GPU ({inp['num_gpus']} × GPU, {inp['sharding']})"
    title = (f"{model['name']}: {inp['method']}, {inp['precision']}, {inp['optimizer']}, "
             f"batch {inp['batch_size']} × seq {inp['seq_len']}, {where}")
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("notes", overflow="fold")
    gc = "on" if inp["gradient_checkpointing"] else "off"
    params = f"{model['total_params']:,} params"
    if numbers["weights_quantized"]:
        params += (f"; 4/8-bit {_gib(numbers['weights_quantized'])} + constants {_gib(numbers['quantization_constants'])}"
                   f" + unquantized {_gib(numbers['weights_unquantized'])} GiB")
    rows = [
        ("weights", numbers["weights"], params),
        ("trainable (adapter)", numbers["adapter"], f"{model['trainable_params']:,} trainable params"),
        ("gradients", numbers["gradients"], "the largest one only: optimizer step in backward"
         if inp["optimizer_in_backward"] else ""),
        ("optimizer states", numbers["optimizer_states"], inp["optimizer"]),
        ("activations", numbers["activations"],
         f"checkpointing {gc}, {inp['attention']} attention, {inp['loss']} loss"
         + (", offloaded to CPU" if inp["activation_offload"] else "") + (", compiled" if inp["compile"] else "")
         + "; without checkpointing "
         f"{_gib(numbers['activations_without_checkpointing'])}, with {_gib(numbers['activations_with_checkpointing'])}"),
        ("  of which log-probs", numbers["logits_saved"], "fp32 batch × seq × vocab, kept for the loss"),
        ("logits/loss buffers", numbers["logits_transient"], "logits, fp32 upcast and loss gradients (transient)"),
        ("recompute", numbers["recompute"], "one layer rebuilt in backward"),
        ("optimizer/dequant temporaries", numbers["optimizer_transient"] + numbers["workspace"], ""),
        ("communication buffers", numbers["communication"], ""),
        ("evaluation forward", numbers["evaluation"], f"batch {inp['eval_batch_size']}, no grad: one layer + LM head"),
    ]
    for name, value, note in rows:
        if value or name in ("weights", "gradients", "optimizer states", "activations"):
            table.add_row(name, _gib(value), note)
    table.add_section()
    cpu = inp["device"] == "cpu"
    table.add_row("[bold]allocated[/]", _gib(numbers["allocated"]),
                  f"tensors at the peak ({report['peak_phase']})" + ("" if cpu else "; torch max_memory_allocated"))
    if not cpu:
        table.add_row("  + fragmentation", _gib(numbers["fragmentation"]), "caching allocator (approximate)")
        table.add_row("[bold]reserved[/]", _gib(numbers["reserved"]), "torch max_memory_reserved")
        table.add_row("  + CUDA context", _gib(numbers["context"]), "context + cuBLAS/cuDNN workspaces (approximate)")
        if numbers["outside_allocator"]:
            table.add_row("  + outside torch's allocator", _gib(numbers["outside_allocator"]),
                          "paged optimizer states (CUDA managed memory; can spill to host)")
    else:
        table.add_row("  + process baseline", _gib(numbers["context"]), "Python + libraries + a weights-sized copy")
    used = "process RSS" if cpu else "nvidia-smi"
    table.add_row("[bold]device used[/]", f"[bold]{_gib(numbers['device_used'])}[/]",
                  f"{used}; the fit verdict uses this meter")
    parts: list[Any] = [table]
    parts += [Text(f"warning: {warning}", style="yellow") for warning in report["warnings"]]
    if numbers["cpu_offloaded"]:
        parts.append(Text(f"CPU memory for offloaded states: {_gib(numbers['cpu_offloaded'])} GiB per process"))
    for row in report["fit"]:
        label = row["gpu"] or "budget"
        verdict = "[green]fits[/]" if row["fits"] else "[red]does not fit[/]"
        parts.append(Text.from_markup(f"{label} ({_gib(row['memory_bytes'])} GiB): {verdict}, "
                                      f"headroom {_gib(row['headroom_bytes'])} GiB"))
    if report["suggestions"]:
        parts.append(Text("To make it fit (cheapest first):", style="bold"))
        for suggestion in report["suggestions"]:
            parts.append(Text(f"  • {suggestion['description']} → {_gib(suggestion['total_bytes'])} GiB"))
    parts.append(Text(report["recommendation"], style="italic"))
    parts.append(Text(report["accuracy"]["line"], style="dim"))
    return Group(*parts)
