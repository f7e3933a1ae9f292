"""Raw rows → canonical rows → tokenized train/eval datasets ready for SFTTrainer.

Conversations are tokenized here (not by TRL) so that loss-on-responses works with any chat template: each
example carries ``input_ids`` and ``assistant_masks``; TRL folds the mask into ``labels`` and handles
truncation and packing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fnsft.data.check import DataSummary, RowFacts, encode_row, row_facts, summarize
from fnsft.data.formats import Detection, detect_format, to_canonical
from fnsft.data.load import RawData, describe_row, load_raw
from fnsft.data.mix import SourceReport
from fnsft.data.templates import configure_template
from fnsft.errors import DataError
from fnsft.recipe.schema import DataSection

DETECTION_ROWS = 5


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with input_ids (+ assistant_masks)
    eval: Any | None
    format: str
    detection: str
    template: str
    fingerprint: str
    summary: DataSummary  # of the training rows, as tokenized
    eval_conversations: list[list[dict]] = field(default_factory=list)  # canonical eval rows, for generation checks
    facts: list[RowFacts] = field(default_factory=list)  # per training row (before any mixing)
    skipped: list[str] = field(default_factory=list)  # why each row left out under on_bad_row: skip was
    mixture: list[SourceReport] | None = None  # data.sources: what each source contributed
    eval_by_source: dict[str, Any] = field(default_factory=dict)  # data.sources: each source's held-out rows

    @property
    def num_train(self) -> int:
        return len(self.train)


def detect(raw: RawData, section: DataSection) -> Detection:
    if section.format != "auto":
        return Detection(section.format, "set in the recipe (data.format)")
    sample = [raw.train[i] for i in range(min(DETECTION_ROWS, len(raw.train)))]
    return detect_format(sample, raw.source)


WHERE = "_where"  # column naming each canonical row's source line, for errors raised after the split


def canonicalize(raw: RawData, section: DataSection, fmt: str, skipped: list[str] | None = None):
    """Every row in canonical form. A bad row stops everything naming its line/row, or with
    ``data.on_bad_row: skip`` is left out and its reason appended to ``skipped``."""
    if len(raw.train) == 0:
        raise DataError(f"{raw.source}: the dataset is empty")
    skipped = [] if skipped is None else skipped  # the reasons, also for the all-rows-skipped message

    def convert(row: dict, where: str) -> dict:
        canonical = to_canonical(row, fmt, where)
        if section.system_prompt and "messages" in canonical and canonical["messages"][0]["role"] != "system":
            canonical["messages"] = [{"role": "system", "content": section.system_prompt}, *canonical["messages"]]
        return {**canonical, WHERE: where}

    mapped = _map_rows(raw.train, lambda row, index: convert(row, describe_row(raw, index)), section, skipped)
    evaluation = None
    if raw.eval is not None:
        eval_raw = RawData(raw.eval, None, f"{raw.source}[{section.eval_split}]", raw.fingerprint, 0)
        evaluation = _map_rows(raw.eval, lambda row, index: convert(row, describe_row(eval_raw, index)), section, skipped)
    if len(mapped) == 0:
        raise DataError(f"{raw.source}: every row was skipped (data.on_bad_row: skip): {skipped[0]}")
    return mapped, evaluation


def _map_rows(dataset, function, section: DataSection, skipped: list[str] | None):
    """``dataset.map(function)``; under on_bad_row: skip, rows whose function raises DataError are dropped (a
    batched map may return fewer rows) and their reasons kept."""
    if section.on_bad_row == "error":
        return dataset.map(function, with_indices=True, remove_columns=dataset.column_names,
                           load_from_cache_file=False)
    reasons = skipped if skipped is not None else []

    def batch(rows: dict, indices: list[int]) -> dict:
        kept: dict[str, list] = {}
        for offset, index in enumerate(indices):
            try:
                result = function({key: values[offset] for key, values in rows.items()}, index)
            except DataError as exc:
                reasons.append(str(exc))
                continue
            for key, value in result.items():
                kept.setdefault(key, []).append(value)
        return kept

    return dataset.map(batch, batched=True, with_indices=True, remove_columns=dataset.column_names,
                       load_from_cache_file=False)


def split(train, evaluation, section: DataSection, seed: int):
    if evaluation is None and section.validation_fraction > 0 and len(train) >= 2:
        parts = train.train_test_split(test_size=section.validation_fraction, seed=seed, shuffle=True)
        train, evaluation = parts["train"], parts["test"]
    if section.max_samples is not None and len(train) > section.max_samples:
        train = train.select(range(section.max_samples))
    return train, evaluation


def template_options(section: DataSection, template: str) -> dict[str, Any]:
    """The keyword options every conversation is tokenized with (training, preview and check alike)."""
    return {"chat_template_kwargs": section.chat_template_kwargs, "train_on": section.train_on,
            "template_name": template, "responses_only": section.loss_on == "responses"}


def tokenize(dataset, tokenizer, section: DataSection, template: str = "the chat template",
             facts: list[RowFacts] | None = None, skipped: list[str] | None = None):
    """input_ids + assistant_masks per row; each row's facts are appended to ``facts`` (for the summary)."""
    options = template_options(section, template)

    def encode(row: dict, index: int) -> dict:
        where = row.get(WHERE) or f"row {index + 1}"
        try:
            encoded = encode_row(tokenizer, row, **options)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if facts is not None:
            facts.append(row_facts(where, encoded, section.max_length))
        return {"input_ids": encoded.input_ids, "assistant_masks": encoded.assistant_masks}

    return _map_rows(dataset, encode, section, skipped)


def prepare_datasets(section: DataSection, tokenizer: Any, seed: int) -> PreparedData:
    """Load, detect, convert, split (seeded) and tokenize; several sources are each prepared so, then mixed.
    Raises DataError naming the source, file and row on bad input."""
    if section.sources is None:
        return _prepare_one(section, tokenizer, seed)
    from datasets import concatenate_datasets

    from fnsft.data.mix import prepare_mixture

    mixed, reports, evals = prepare_mixture(section, tokenizer, seed, _prepare_one)
    parts: list[PreparedData] = mixed["prepared"]
    facts = [fact for part in parts for fact in part.facts]
    skipped = [reason for part in parts for reason in part.skipped]
    formats: dict[str, int] = {}
    for part in parts:
        formats[part.format] = formats.get(part.format, 0) + part.num_train
    summary = summarize(facts, formats=formats, template=parts[0].template, chat_template_kwargs=
                        section.chat_template_kwargs, train_on=section.train_on, max_length=section.max_length,
                        skipped=skipped)
    return PreparedData(
        train=mixed["train"],
        eval=concatenate_datasets(list(evals.values())) if evals else None,
        format="+".join(dict.fromkeys(part.format for part in parts)),
        detection="; ".join(f"{r.name}: {part.detection}" for r, part in zip(reports, parts, strict=True)),
        template=parts[0].template,
        fingerprint=mixed["fingerprint"],
        eval_conversations=[c for part in parts for c in part.eval_conversations],
        summary=summary,
        facts=facts,
        mixture=reports,
        eval_by_source=evals,
    )


def _prepare_one(section: DataSection, tokenizer: Any, seed: int) -> PreparedData:
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    raw = load_raw(section)
    detection = detect(raw, section)
    skipped: list[str] = []
    train, evaluation = canonicalize(raw, section, detection.format, skipped)
    train, evaluation = split(train, evaluation, section, seed)
    template = configure_template(tokenizer, section.chat_template)
    eval_conversations = [row["messages"] for row in evaluation] if evaluation is not None and "messages" in evaluation.column_names else []
    facts: list[RowFacts] = []
    tokenized = tokenize(train, tokenizer, section, template, facts, skipped)
    if len(tokenized) == 0:
        raise DataError(f"{raw.source}: every row was skipped (data.on_bad_row: skip): {skipped[0]}")
    has_eval = evaluation is not None and len(evaluation) > 0
    tokenized_eval = tokenize(evaluation, tokenizer, section, template, None, skipped) if has_eval else None
    for name, dataset in (("training", tokenized), ("evaluation", tokenized_eval)):
        if dataset is not None:
            check_trainable(dataset, section, f"{raw.source} ({name} rows)")
    summary = _summary(facts, section, detection.format, template, skipped)
    return PreparedData(
        train=tokenized,
        eval=tokenized_eval,
        format=detection.format,
        detection=detection.reason,
        template=template,
        fingerprint=raw.fingerprint,
        eval_conversations=eval_conversations,
        summary=summary,
        facts=facts,
        skipped=skipped,
    )


def check_trainable(dataset, section: DataSection, source: str) -> None:
    """Some example must keep a loss token within max_length: the trainer drops examples truncated to prompt only,
    and with none left it fails deep inside torch (``num_samples=0``)."""
    if section.packing:
        return
    limit = section.max_length
    if not any(any(mask[:limit]) for mask in dataset["assistant_masks"]):
        raise DataError(
            f"{source}: all {len(dataset)} examples are longer than data.max_length={limit} tokens before their first "
            "response token, so nothing is left to train on; raise data.max_length or shorten the prompts"
        )


def preview(section: DataSection, rows: int = DETECTION_ROWS) -> tuple[Detection, RawData, list[dict]]:
    """For --dry-run: detect the format and convert the first rows, without tokenizing everything."""
    raw = load_raw(section)
    detection = detect(raw, section)
    sample = [to_canonical(raw.train[i], detection.format, describe_row(raw, i)) for i in range(min(rows, len(raw.train)))]
    if not sample:
        raise DataError(f"{raw.source}: the dataset is empty")
    return detection, raw, sample


def check_dataset(section: DataSection, tokenizer: Any) -> tuple[DataSummary, list[RowFacts]]:
    """``fnsft data check``: every row (before the train/eval split) tokenized and masked as training does."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    raw = load_raw(section)
    detection = detect(raw, section)
    skipped: list[str] = []
    rows, _ = canonicalize(raw, section, detection.format, skipped)
    template = configure_template(tokenizer, section.chat_template)
    facts: list[RowFacts] = []
    tokenize(rows, tokenizer, section, template, facts, skipped)
    return _summary(facts, section, detection.format, template, skipped), facts


def _summary(facts: list[RowFacts], section: DataSection, fmt: str, template: str, skipped: list[str]) -> DataSummary:
    return summarize(facts, formats={fmt: len(facts)}, template=template,
                     chat_template_kwargs=section.chat_template_kwargs, train_on=section.train_on,
                     max_length=section.max_length, skipped=skipped)


def sample_rows(section: DataSection, count: int) -> tuple[list[dict], list[str]]:
    """The first ``count`` rows in canonical form and where each is (for ``fnsft data preview``)."""
    _, raw, sample = preview(section, count)
    return sample, [describe_row(raw, i) for i in range(len(sample))]
