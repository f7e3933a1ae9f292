"""Several datasets in one run (``data.sources``): each prepared on its own, then mixed by weight, seeded.

Each source is loaded, detected, converted, split and tokenized exactly like a one-dataset recipe (so its own
format, template options and held-out rows apply). :func:`plan` then decides, per source, which rows train and
how often: ``proportional`` gives each source ``weight / sum(weights)`` of the mixture, ``temperature`` gives it a
share ∝ weight × size^(1/T), ``concat`` takes every row once. Shares count trained tokens (after truncation) or
rows (``mix_by``). The mixture keeps the total volume of the sources; a source above its share loses rows, one
below it repeats rows, and both are counted in the report, never silent.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fnsft.errors import DataError
from fnsft.recipe.schema import DataSection


@dataclass
class SourceReport:
    """What one source contributed: available vs trained rows and tokens, and the share it got."""

    name: str
    path: str
    format: str
    fingerprint: str
    weight: float
    rows_available: int
    tokens_available: int
    rows_trained: int
    tokens_trained: int
    repeated_rows: int  # draws beyond each row's first
    unused_rows: int  # available rows the mixture left out
    requested_share: float
    realised_share: float
    eval_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shares(weights: list[float], sizes: list[int], mode: str, temperature: float) -> list[float]:
    """Each source's share of the mixture (summing to 1)."""
    if mode == "concat":
        raw = [float(size) for size in sizes]
    elif mode == "temperature":
        raw = [weight * size ** (1.0 / temperature) for weight, size in zip(weights, sizes, strict=True)]
    else:
        raw = list(weights)
    total = sum(raw)
    return [value / total for value in raw]


def plan(counts: list[list[int]], weights: list[float], *, mode: str, seed: int, temperature: float = 2.0) -> list[list[int]]:
    """Row indices per source (repeats allowed) whose summed ``counts`` meet each source's share.

    ``counts[i][j]`` is what row ``j`` of source ``i`` counts for (its trained tokens, or 1 when mixing by rows).
    Rows are drawn in seeded random order, a whole pass at a time, so repeats are spread evenly.
    """
    sizes = [sum(c) for c in counts]
    if mode == "concat":
        return [list(range(len(c))) for c in counts]
    budget = sum(sizes)
    chosen: list[list[int]] = []
    for index, (row_counts, share) in enumerate(zip(counts, shares(weights, sizes, mode, temperature), strict=True)):
        if sizes[index] == 0:  # nothing to draw from (the caller names the source)
            chosen.append([])
            continue
        rng = np.random.default_rng([seed, index])
        target = share * budget
        picked: list[int] = []
        total = 0
        while total + sizes[index] <= target:  # whole passes first: every row the same number of times
            picked += rng.permutation(len(row_counts)).tolist()
            total += sizes[index]
        for row in rng.permutation(len(row_counts)).tolist():
            if total + row_counts[row] / 2 > target:  # stop where the running sum is closest to the target
                continue
            picked.append(row)
            total += row_counts[row]
        chosen.append(picked)
    return chosen


def prepare_mixture(section: DataSection, tokenizer: Any, seed: int, prepare_one: Any) -> tuple[Any, list[SourceReport], dict]:
    """Prepare every source with ``prepare_one`` (the one-dataset pipeline), mix them; returns the parts."""
    from datasets import concatenate_datasets

    assert section.sources is not None
    prepared = []
    for position, (name, part) in enumerate(section.source_sections()):
        try:
            prepared.append(prepare_one(part, tokenizer, seed))
        except DataError as exc:
            raise DataError(f"data.sources[{position}] ({name}): {exc}") from None
    limit = section.max_length
    by_tokens = section.mix_by == "tokens"
    counts = [[min(len(ids), limit) if by_tokens else 1 for ids in data.train["input_ids"]] for data in prepared]
    weights = [source.weight for source in section.sources]
    picked = plan(counts, weights, mode=section.mix, seed=seed, temperature=section.temperature)
    requested = shares(weights, [sum(c) for c in counts], section.mix, section.temperature)
    trained_tokens = [sum(min(len(prepared[i].train[j]["input_ids"]), limit) for j in rows) for i, rows in enumerate(picked)]
    trained_counts = [sum(counts[i][j] for j in rows) for i, rows in enumerate(picked)]
    for (name, _), rows in zip(section.source_sections(), picked, strict=True):
        if not rows:
            raise DataError(f"data.sources ({name}): its share of the mixture is smaller than one row; raise its "
                            "weight or use mix: concat")
    reports = []
    for i, ((name, part), data) in enumerate(zip(section.source_sections(), prepared, strict=True)):
        rows = picked[i]
        reports.append(SourceReport(
            name=name, path=str(part.path), format=data.format, fingerprint=data.fingerprint,
            weight=weights[i], rows_available=len(data.train), tokens_available=sum(
                min(len(ids), limit) for ids in data.train["input_ids"]),
            rows_trained=len(rows), tokens_trained=trained_tokens[i], repeated_rows=len(rows) - len(set(rows)),
            unused_rows=len(data.train) - len(set(rows)), requested_share=requested[i],
            realised_share=trained_counts[i] / max(1, sum(trained_counts)),
            eval_rows=len(data.eval) if data.eval is not None else 0))
    train = concatenate_datasets([data.train.select(rows) for data, rows in zip(prepared, picked, strict=True)])
    evals = {name: data.eval for (name, _), data in zip(section.source_sections(), prepared, strict=True)
             if data.eval is not None and len(data.eval) > 0}
    fingerprint = "mix:" + hashlib.sha256(repr([(r.name, r.fingerprint, r.weight, section.mix, section.mix_by)
                                                for r in reports]).encode()).hexdigest()[:16]
    return {"train": train, "prepared": prepared, "fingerprint": fingerprint}, reports, evals


def report_lines(reports: list[SourceReport], mix_by: str) -> list[str]:
    """The mixture as a few lines for the run's data summary."""
    lines = [f"mixture by {mix_by}: source, rows trained/available, tokens trained/available, share realised (asked)"]
    for r in reports:
        extra = ", ".join(part for part in (f"{r.repeated_rows} repeats" if r.repeated_rows else "",
                                            f"{r.unused_rows} rows unused" if r.unused_rows else "") if part)
        lines.append(f"  {r.name}: {r.rows_trained}/{r.rows_available} rows, {r.tokens_trained}/{r.tokens_available}"
                     f" tokens, {100 * r.realised_share:.1f}% ({100 * r.requested_share:.1f}%)"
                     + (f"; {extra}" if extra else ""))
    return lines
