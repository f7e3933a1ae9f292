"""What the training data looks like once tokenized and masked: per-row facts and the summary over a set of rows.

The same summary is printed by ``fnsft data check``, at the start of ``fnsft train`` and stored in the manifest.
Functions take plain lists of rows so a caller can summarize each source of a mixture on its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fnsft.data.templates import TokenizedConversation, tokenize_conversation, tokenize_text

#: Warnings name at most this many rows each (the count is always complete).
ROWS_NAMED = 5


@dataclass(frozen=True)
class RowFacts:
    where: str  # e.g. 'data.jsonl:17 (row 17)'
    tokens: int
    trained: int
    replies: int = 0  # assistant turns trained
    markers_trained: int = 0  # of those, the ones whose end-of-turn marker is in the span
    rewritten: int = 0  # trained replies the template renders differently from their content (history rewriting)
    trained_beyond_limit: int = 0  # trained tokens past max_length (cut off by truncation)


@dataclass
class DataSummary:
    rows: int
    formats: dict[str, int]
    tokens_min: int
    tokens_median: float
    tokens_p99: float
    tokens_max: int
    trained_share: float  # of all tokens
    zero_trained_rows: int
    cut_rows: int  # rows whose trained tokens reach past max_length
    trained_tokens_lost: int
    marker_share: float | None  # replies whose end-of-turn marker is trained (None: no conversations)
    rewritten_turns: int
    template: str
    chat_template_kwargs: dict[str, Any]
    train_on: str
    max_length: int
    skipped_rows: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_row(tokenizer: Any, row: dict, *, responses_only: bool = True, **options: Any) -> TokenizedConversation:
    """Token ids and 0/1 loss mask for one canonical row (conversation or raw text)."""
    if row.get("messages"):
        conversation = tokenize_conversation(tokenizer, row["messages"], **options)
        if responses_only:
            return conversation
        return TokenizedConversation(conversation.input_ids, [1] * len(conversation.input_ids), conversation.rendering)
    ids = tokenize_text(tokenizer, row["text"])
    return TokenizedConversation(ids, [1] * len(ids))


def row_facts(where: str, encoded: TokenizedConversation, max_length: int) -> RowFacts:
    rendering = encoded.rendering
    trained_replies = [reply for reply in rendering.replies if reply.trained] if rendering else []
    return RowFacts(
        where=where,
        tokens=len(encoded.input_ids),
        trained=sum(encoded.assistant_masks),
        replies=len(trained_replies),
        markers_trained=sum(1 for reply in trained_replies if reply.end_of_turn.strip()),
        rewritten=sum(1 for reply in trained_replies if reply.rewritten),
        trained_beyond_limit=sum(encoded.assistant_masks[max_length:]),
    )


def _percentile(sorted_values: list[int], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) without importing numpy."""
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _named(facts: list[RowFacts]) -> str:
    shown = ", ".join(f.where for f in facts[:ROWS_NAMED])
    return shown + (f" and {len(facts) - ROWS_NAMED} more" if len(facts) > ROWS_NAMED else "")


def summarize(
    facts: list[RowFacts], *, formats: dict[str, int], template: str, chat_template_kwargs: dict[str, Any],
    train_on: str, max_length: int, skipped: list[str] | None = None,
) -> DataSummary:
    """The summary of a set of rows (``skipped``: the reasons of rows left out under data.on_bad_row: skip)."""
    skipped = skipped or []
    lengths = sorted(f.tokens for f in facts) or [0]
    total = sum(f.tokens for f in facts)
    replies = sum(f.replies for f in facts)
    zero = [f for f in facts if f.trained == 0]
    cut = [f for f in facts if f.trained_beyond_limit]
    unmarked = [f for f in facts if f.markers_trained < f.replies]
    rewritten = [f for f in facts if f.rewritten]
    warnings = []
    if zero:
        warnings.append(f"{len(zero)} rows train no token: {_named(zero)}")
    if cut:
        warnings.append(f"{len(cut)} rows lose trained tokens past max_length {max_length}: {_named(cut)}")
    if unmarked:
        warnings.append(f"{len(unmarked)} rows have replies with no end-of-turn marker to train "
                        f"(the template writes none after them): {_named(unmarked)}")
    if rewritten:
        advice = "; data.train_on: last_turn trains only the final reply" if train_on == "all_turns" else ""
        warnings.append(f"the template renders {sum(f.rewritten for f in rewritten)} trained replies differently "
                        f"from their content (history rewriting, e.g. reasoning stripped from earlier turns): they "
                        f"train on what the render shows{advice} ({_named(rewritten)})")
    if skipped:
        warnings.append(f"{len(skipped)} rows skipped (data.on_bad_row: skip): " + "; ".join(skipped[:ROWS_NAMED]))
    return DataSummary(
        rows=len(facts),
        formats=formats,
        tokens_min=lengths[0],
        tokens_median=_percentile(lengths, 0.5),
        tokens_p99=_percentile(lengths, 0.99),
        tokens_max=lengths[-1],
        trained_share=sum(f.trained for f in facts) / total if total else 0.0,
        zero_trained_rows=len(zero),
        cut_rows=len(cut),
        trained_tokens_lost=sum(f.trained_beyond_limit for f in facts),
        marker_share=sum(f.markers_trained for f in facts) / replies if replies else None,
        rewritten_turns=sum(f.rewritten for f in facts),
        template=template,
        chat_template_kwargs=dict(chat_template_kwargs),
        train_on=train_on,
        max_length=max_length,
        skipped_rows=len(skipped),
        warnings=warnings,
    )


def summary_lines(summary: DataSummary) -> list[str]:
    """The summary as short human lines (the CLI adds colour)."""
    formats = ", ".join(f"{name} {count}" for name, count in summary.formats.items())
    marker = "n/a (no conversations)" if summary.marker_share is None else f"{summary.marker_share:.0%}"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in summary.chat_template_kwargs.items()) or "none"
    return [
        f"rows: {summary.rows} ({formats}); skipped: {summary.skipped_rows}",
        f"tokens per row: min {summary.tokens_min}, median {summary.tokens_median:g}, "
        f"p99 {summary.tokens_p99:g}, max {summary.tokens_max} (max_length {summary.max_length})",
        f"trained tokens: {summary.trained_share:.1%} of all; rows with none: {summary.zero_trained_rows}",
        f"rows cut by max_length: {summary.cut_rows} ({summary.trained_tokens_lost} trained tokens lost)",
        f"replies with their end-of-turn marker trained: {marker}",
        f"template: {summary.template}; kwargs: {kwargs}; train_on: {summary.train_on}",
    ]


def plot_lengths(facts: list[RowFacts], max_length: int, path: str) -> None:
    """PNG histogram of tokens per row, max_length marked; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fnsft.atomic import staged_file

    figure, axes = plt.subplots(figsize=(7, 3.5))
    axes.hist([f.tokens for f in facts], bins=min(50, max(5, len(facts) // 4)), color="#4c72b0")
    axes.axvline(max_length, color="#c44e52", linestyle="--", label=f"max_length {max_length}")
    axes.set(xlabel="tokens per row", ylabel="rows", title=f"{len(facts)} rows")
    axes.legend()
    figure.tight_layout()
    with staged_file(path) as staging:
        figure.savefig(staging, dpi=110, format="png")
    plt.close(figure)
