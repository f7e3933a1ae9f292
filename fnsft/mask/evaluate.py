"""The lesion test: how much does the eval loss rise when the networks are zeroed, versus random neurons?

Conditions: (a) unmasked; (b) each component lesioned; (c) the union of the top components lesioned;
(d) random neuron sets of the union's size, uniform over all captured neurons and layer-matched (same count
per layer), mean ± std over seeded draws; (e) preserve only the union. Loss is the token-mean next-token
cross-entropy over all non-pad tokens.

Massive-activation channels (a few channels whose zeroing alone costs nats) dominate naive comparisons, so
``exclude_top_rms=N`` removes the N highest-RMS channels (measured on the eval data) from both the networks
and the random pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from fnsft.atomic import atomic_write_json
from fnsft.errors import MaskError
from fnsft.mask.apply import NeuronMasks
from fnsft.mask.capture import batched, iter_activations, pad_batch
from fnsft.mask.maskfile import MaskFile
from fnsft.mask.report import pyplot, save_figure
from fnsft.names import MaskMode


def eval_loss(model, sequences: Sequence[list[int]], *, pad_token_id: int, batch_size: int = 8) -> float:
    """Token-mean next-token cross-entropy over the non-pad tokens of ``sequences``."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for batch in batched(sequences, batch_size):
                ids, attention = pad_batch(batch, pad_token_id)
                logits = model(input_ids=ids.to(device), attention_mask=attention.to(device), use_cache=False).logits
                targets = ids[:, 1:].to(device).masked_fill(attention[:, 1:].to(device) == 0, -100)
                loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
                total += float(loss)
                count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise MaskError("no eval tokens (every sequence shorter than 2 tokens)")
    return total / count


ConditionKind = Literal["baseline", "component", "union", "random-uniform", "random-layer-matched", "preserve"]


@dataclass
class Condition:
    name: str
    kind: ConditionKind
    neurons: int  # how many neurons are zeroed (for preserve: all but the kept ones)
    share: float
    loss: float
    loss_std: float | None = None
    draws: list[float] = field(default_factory=list)

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 700))


@dataclass
class LesionReport:
    mask_file: str
    model: str
    eval_tokens: int
    eval_sequences: int
    top: int
    draws: int
    seed: int
    excluded_channels: dict[str, list[int]]
    conditions: list[Condition]

    @property
    def baseline(self) -> float:
        return self.conditions[0].loss

    def to_dict(self) -> dict:
        data = asdict(self)
        for item, condition in zip(data["conditions"], self.conditions, strict=True):
            item["perplexity"] = condition.perplexity
            item["delta_loss"] = condition.loss - self.baseline
        return data


#: Below these the lesion test says its verdict means little: too few tokens, or text that repeats itself.
MIN_EVAL_TOKENS = 4096
MIN_DISTINCT_TOKEN_SHARE = 0.1
#: How many standard deviations of the random sets' losses the union must exceed to count as "more".
Z_THRESHOLD = 2.0


@dataclass(frozen=True)
class Verdict:
    """Does lesioning the networks hurt more than lesioning random neurons of the same number?"""

    z_scores: dict[str, float | None]  # control kind → (union loss - control mean) / control std; None: std is 0
    matters: bool
    reading: str
    warnings: list[str]


def verdict(report: LesionReport, distinct_token_share: float | None = None) -> Verdict:
    """z-scores of the union lesion against each random control, a one-line reading and sample-size warnings."""
    union = next(c for c in report.conditions if c.kind == "union")
    z_scores: dict[str, float | None] = {}
    for control in (c for c in report.conditions if c.kind.startswith("random-")):
        spread = control.loss_std or 0.0
        z_scores[control.kind] = (union.loss - control.loss) / spread if spread > 0 else None
    matters = bool(z_scores) and all(z is not None and z >= Z_THRESHOLD for z in z_scores.values())
    shown = ", ".join(f"z = {z:+.2f} vs {kind}" if z is not None else f"z undefined vs {kind} (no spread)"
                      for kind, z in z_scores.items())
    reading = (f"networks matter more than random sets of the same size: {'yes' if matters else 'no'} at this sample "
               f"size ({shown}; yes needs z ≥ {Z_THRESHOLD:g} against every control, {report.draws} draws each)")
    warnings = []
    if report.eval_tokens < MIN_EVAL_TOKENS:
        warnings.append(f"only {report.eval_tokens} evaluation tokens (fewer than {MIN_EVAL_TOKENS}): the losses are "
                        "noisy, so the test can hardly tell networks from random sets; use more or longer eval text")
    if distinct_token_share is not None and distinct_token_share < MIN_DISTINCT_TOKEN_SHARE:
        warnings.append(f"the evaluation text is very uniform (only {100 * distinct_token_share:.1f}% distinct "
                        "tokens): any lesion disturbs it alike; evaluate on more varied text")
    if report.draws < 5:
        warnings.append(f"{report.draws} random draws per control: the spread is a rough guess; use --draws 5 or more")
    return Verdict(z_scores, matters, reading, warnings)


def distinct_token_share(sequences: Sequence[list[int]]) -> float:
    tokens = [token for sequence in sequences for token in sequence]
    return len(set(tokens)) / max(len(tokens), 1)


def channel_rms(model, mask: MaskFile, sequences, *, pad_token_id: int, batch_size: int) -> np.ndarray:
    """RMS of every captured channel over the eval tokens: (layers × width)."""
    squares = np.zeros(len(mask.layers) * mask.width)
    count = 0
    for rows in iter_activations(
        model, sequences, layers=mask.layers, capture=mask.capture, pad_token_id=pad_token_id, batch_size=batch_size
    ):
        squares += (rows.astype(np.float64) ** 2).sum(axis=0)
        count += len(rows)
    return np.sqrt(squares / max(count, 1)).reshape(len(mask.layers), mask.width)


def lesion_test(
    model,
    mask: MaskFile,
    sequences: Sequence[list[int]],
    *,
    pad_token_id: int,
    mask_file: str,
    model_name: str,
    top: int | None = None,
    draws: int = 5,
    seed: int = 0,
    exclude_top_rms: int = 0,
    batch_size: int = 8,
    progress=None,
) -> LesionReport:
    """Run every condition and return the report (the model is left unmasked)."""
    if draws < 1:
        raise MaskError("--draws must be at least 1")
    top = len(mask.components) if top is None else top
    if not 1 <= top <= len(mask.components):
        raise MaskError(f"--top {top}: the mask has {len(mask.components)} components")
    layers, width = mask.layers, mask.width
    total = width * len(layers)
    excluded: dict[int, set[int]] = {}
    if exclude_top_rms:
        rms = channel_rms(model, mask, sequences, pad_token_id=pad_token_id, batch_size=batch_size)
        for flat in np.argsort(-rms, axis=None, kind="stable")[:exclude_top_rms]:
            excluded.setdefault(layers[int(flat) // width], set()).add(int(flat) % width)

    def without_excluded(sets: dict[int, set[int]]) -> dict[int, set[int]]:
        return {layer: neurons - excluded.get(layer, set()) for layer, neurons in sets.items()}

    def loss_with(sets: dict[int, set[int]] | None, mode: MaskMode = "lesion") -> float:
        hooks = None if sets is None else NeuronMasks(model, sets, mode=mode, capture=mask.capture, width=width, layers=layers)
        try:
            return eval_loss(model, sequences, pad_token_id=pad_token_id, batch_size=batch_size)
        finally:
            if hooks:
                hooks.remove()

    def size(sets: dict[int, set[int]]) -> int:
        return sum(len(n) for n in sets.values())

    report_step = progress or (lambda _name: None)
    total_steps = len(mask.components) + 2 * draws + 3
    done = 0

    def step(name: str) -> None:
        nonlocal done
        done += 1
        report_step(f"condition {done}/{total_steps} ({total_steps - done} after this): {name}")

    conditions = []
    step("unmasked")
    conditions.append(Condition("unmasked", "baseline", 0, 0.0, loss_with(None)))
    for component in mask.components:
        sets = without_excluded({layer: set(n) for layer, n in component.layer_sets().items()})
        step(f"component {component.id}")
        conditions.append(Condition(f"component {component.id}", "component", size(sets), size(sets) / total, loss_with(sets)))
    union = without_excluded(mask.union([c.id for c in mask.components[:top]]))
    n_union = size(union)
    step(f"union of top {top}")
    conditions.append(Condition(f"union top-{top}", "union", n_union, n_union / total, loss_with(union)))
    random_draws: tuple[tuple[ConditionKind, Callable[[np.random.Generator], dict[int, set[int]]]], ...] = (
        ("random-uniform", lambda rng: uniform_sets(rng, layers, width, n_union, excluded)),
        ("random-layer-matched", lambda rng: layer_matched_sets(rng, union, width, excluded)),
    )
    for kind, draw_sets in random_draws:
        losses = []
        for draw in range(draws):
            step(f"{kind} draw {draw + 1}/{draws}")
            losses.append(loss_with(draw_sets(np.random.default_rng([seed, draw]))))
        conditions.append(
            Condition(f"{kind} ×{draws}", kind, n_union, n_union / total, float(np.mean(losses)), float(np.std(losses)), losses)
        )
    step("preserve union")
    conditions.append(Condition(f"preserve top-{top}", "preserve", total - n_union, 1 - n_union / total, loss_with(union, "preserve")))
    return LesionReport(
        mask_file=mask_file,
        model=model_name,
        eval_tokens=sum(len(s) for s in sequences),
        eval_sequences=len(sequences),
        top=top,
        draws=draws,
        seed=seed,
        excluded_channels={str(layer): sorted(n) for layer, n in sorted(excluded.items())},
        conditions=conditions,
    )


def uniform_sets(rng: np.random.Generator, layers: list[int], width: int, count: int,
                 excluded: dict[int, set[int]]) -> dict[int, set[int]]:
    """``count`` neurons drawn uniformly from all captured (non-excluded) neurons."""
    pool = [layer_pos * width + n for layer_pos, layer in enumerate(layers) for n in range(width)
            if n not in excluded.get(layer, ())]
    chosen: dict[int, set[int]] = {}
    for flat in rng.choice(pool, size=min(count, len(pool)), replace=False):
        chosen.setdefault(layers[int(flat) // width], set()).add(int(flat) % width)
    return chosen


def layer_matched_sets(rng: np.random.Generator, reference: dict[int, set[int]], width: int,
                       excluded: dict[int, set[int]]) -> dict[int, set[int]]:
    """As many random neurons per layer as ``reference`` has there."""
    chosen = {}
    for layer, neurons in sorted(reference.items()):
        pool = [n for n in range(width) if n not in excluded.get(layer, ())]
        chosen[layer] = {int(n) for n in rng.choice(pool, size=min(len(neurons), len(pool)), replace=False)}
    return chosen


def save_report(report: LesionReport, out_dir: str | Path, reading: Verdict | None = None) -> tuple[Path, Path]:
    """Write lesion.json (with the verdict, when given) and lesion.png (Δ loss per condition, random sets with
    ± std) into ``out_dir``."""
    plt = pyplot()
    out_dir = Path(out_dir)
    json_path, png_path = out_dir / "lesion.json", out_dir / "lesion.png"
    atomic_write_json(json_path, {**report.to_dict(), **({"verdict": asdict(reading)} if reading else {})})
    shown = report.conditions[1:]
    deltas = [c.loss - report.baseline for c in shown]
    errors = [c.loss_std or 0.0 for c in shown]
    colors = {"component": "#4C72B0", "union": "#C44E52", "random-uniform": "#8C8C8C",
              "random-layer-matched": "#B0B0B0", "preserve": "#55A868"}
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(shown) + 2), 4.5))
    ax.bar(range(len(shown)), deltas, yerr=errors, capsize=3, color=[colors[c.kind] for c in shown])
    ax.set_xticks(range(len(shown)), [f"{c.name}\n{100 * c.share:.1f}%" for c in shown], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("eval loss increase (nats)")
    ax.set_title(f"Lesion test: {Path(report.mask_file).name}  (baseline {report.baseline:.3f}, {report.eval_tokens} tokens)", fontsize=9)
    fig.tight_layout()
    return json_path, save_figure(fig, png_path)
