"""Raw rows → canonical rows → tokenized train/eval datasets ready for SFTTrainer.

Conversations are tokenized here (not by TRL) so that loss-on-responses works with any chat template: each
example carries ``input_ids`` and ``assistant_masks``; TRL folds the mask into ``labels`` and handles
truncation and packing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fnsft.data.formats import Detection, detect_format, to_canonical
from fnsft.data.load import RawData, describe_row, load_raw
from fnsft.data.templates import configure_template, tokenize_conversation, tokenize_text
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
    eval_conversations: list[list[dict]] = field(default_factory=list)  # canonical eval rows, for generation checks

    @property
    def num_train(self) -> int:
        return len(self.train)


def detect(raw: RawData, section: DataSection) -> Detection:
    if section.format != "auto":
        return Detection(section.format, "set in the recipe (data.format)")
    sample = [raw.train[i] for i in range(min(DETECTION_ROWS, len(raw.train)))]
    return detect_format(sample, raw.source)


def canonicalize(raw: RawData, section: DataSection, fmt: str):
    """Every row in canonical form; the first bad row stops everything with its line/row number."""
    if len(raw.train) == 0:
        raise DataError(f"{raw.source}: the dataset is empty")

    def convert(row: dict, index: int) -> dict:
        canonical = to_canonical(row, fmt, describe_row(raw, index))
        if section.system_prompt and "messages" in canonical and canonical["messages"][0]["role"] != "system":
            canonical["messages"] = [{"role": "system", "content": section.system_prompt}, *canonical["messages"]]
        return canonical

    mapped = raw.train.map(convert, with_indices=True, remove_columns=raw.train.column_names, desc=None)
    evaluation = None
    if raw.eval is not None:
        eval_raw = RawData(raw.eval, None, f"{raw.source}[{section.eval_split}]", raw.fingerprint, 0)
        evaluation = raw.eval.map(
            lambda row, index: to_canonical(row, fmt, describe_row(eval_raw, index)),
            with_indices=True,
            remove_columns=raw.eval.column_names,
        )
    return mapped, evaluation


def split(train, evaluation, section: DataSection, seed: int):
    if evaluation is None and section.validation_fraction > 0 and len(train) >= 2:
        parts = train.train_test_split(test_size=section.validation_fraction, seed=seed, shuffle=True)
        train, evaluation = parts["train"], parts["test"]
    if section.max_samples is not None and len(train) > section.max_samples:
        train = train.select(range(section.max_samples))
    return train, evaluation


def tokenize(dataset, tokenizer, section: DataSection):
    responses_only = section.loss_on == "responses"

    def encode(row: dict) -> dict:
        if row.get("messages"):
            conversation = tokenize_conversation(tokenizer, row["messages"])
            mask = conversation.assistant_masks if responses_only else [1] * len(conversation.input_ids)
            return {"input_ids": conversation.input_ids, "assistant_masks": mask}
        ids = tokenize_text(tokenizer, row["text"])
        return {"input_ids": ids, "assistant_masks": [1] * len(ids)}

    return dataset.map(encode, remove_columns=dataset.column_names)


def prepare_datasets(section: DataSection, tokenizer: Any, seed: int) -> PreparedData:
    """Load, detect, convert, split (seeded) and tokenize. Raises DataError naming file/row on bad input."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    raw = load_raw(section)
    detection = detect(raw, section)
    train, evaluation = canonicalize(raw, section, detection.format)
    train, evaluation = split(train, evaluation, section, seed)
    template = configure_template(tokenizer, section.chat_template)
    eval_conversations = [row["messages"] for row in evaluation] if evaluation is not None and "messages" in evaluation.column_names else []
    return PreparedData(
        train=tokenize(train, tokenizer, section),
        eval=tokenize(evaluation, tokenizer, section) if evaluation is not None and len(evaluation) else None,
        format=detection.format,
        detection=detection.reason,
        template=template,
        fingerprint=raw.fingerprint,
        eval_conversations=eval_conversations,
    )


def preview(section: DataSection, rows: int = DETECTION_ROWS) -> tuple[Detection, RawData, list[dict]]:
    """For --dry-run: detect the format and convert the first rows, without tokenizing everything."""
    raw = load_raw(section)
    detection = detect(raw, section)
    sample = [to_canonical(raw.train[i], detection.format, describe_row(raw, i)) for i in range(min(rows, len(raw.train)))]
    if not sample:
        raise DataError(f"{raw.source}: the dataset is empty")
    return detection, raw, sample
