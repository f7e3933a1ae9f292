"""Read raw dataset rows from local files or the Hub with the `datasets` library.

Local json/jsonl/csv/parquet files (or a directory of them) load offline. A malformed JSON file is re-read line
by line on failure so the error names the exact line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnsft.errors import DataError
from fnsft.recipe.schema import DataSection

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class RawData:
    train: Any  # datasets.Dataset
    eval: Any | None
    source: str
    fingerprint: str
    line_offset: int  # row i of `train` is on line i + line_offset of a JSONL file (0 when unknown)


def data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in BUILDERS)
    if not files:
        raise DataError(f"{path}: no .json/.jsonl/.csv/.parquet files in this directory")
    return files


def files_fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _locate_json_problem(file: Path) -> str:
    """Re-read a JSON/JSONL file to name the line that broke the fast loader."""
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{file}:{exc.lineno}: invalid JSON: {exc.msg}"
        return f"{file}: the JSON array's rows do not share one set of fields with consistent types"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{file}:{number}: invalid JSON: {exc.msg}"
        if not isinstance(value, dict):
            return f"{file}:{number}: each line must be a JSON object, got {type(value).__name__}"
    return f"{file}: rows have inconsistent field types (e.g. a field that is text in one row and a list in another)"


def _load_local(path: Path, section: DataSection) -> RawData:
    from datasets import load_dataset

    files = data_files(path)
    builders = {BUILDERS[f.suffix] for f in files}
    if len(builders) > 1:
        raise DataError(f"{path}: mixed file types ({', '.join(sorted(builders))}); keep one kind per directory")
    builder = builders.pop()
    try:
        dataset = load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # datasets wraps parser errors in several types; find the line ourselves
        if builder == "json":
            problems = [_locate_json_problem(f) for f in files]
            raise DataError(problems[0]) from None
        raise DataError(f"{path}: cannot read {builder} data: {str(exc).splitlines()[0]}") from None
    line_offset = 1 if builder == "json" and len(files) == 1 and files[0].suffix == ".jsonl" else 0
    if builder == "csv":
        line_offset = 2  # header line
    return RawData(dataset, None, str(path), files_fingerprint(files), line_offset)


def _load_hub(section: DataSection) -> RawData:
    import os

    from datasets import load_dataset

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(
            f"{section.path}: not a local file or directory, and Hub access is off (HF_HUB_OFFLINE=1). "
            "Give a local .json/.jsonl/.csv/.parquet path."
        )
    try:
        train = load_dataset(section.path, section.config_name, split=section.split, revision=section.revision)
        evaluation = (
            load_dataset(section.path, section.config_name, split=section.eval_split, revision=section.revision)
            if section.eval_split
            else None
        )
    except Exception as exc:
        raise DataError(f"{section.path}: cannot load this dataset from the Hub: {str(exc).splitlines()[0]}") from None
    fingerprint = f"hub:{section.path}@{section.revision or 'default'}:{train._fingerprint}"
    return RawData(train, evaluation, section.path, fingerprint, 0)


def load_raw(section: DataSection) -> RawData:
    path = Path(section.path).expanduser()
    if path.exists():
        if section.eval_split:
            raise DataError(f"{section.path}: data.eval_split needs a Hub dataset; for local files use validation_fraction")
        return _load_local(path, section)
    if section.path.startswith((".", "/", "~")) or path.suffix in BUILDERS:
        raise DataError(f"{section.path}: dataset file not found")
    return _load_hub(section)


def describe_row(raw: RawData, index: int) -> str:
    if raw.line_offset:
        return f"{raw.source}:{index + raw.line_offset} (row {index + 1})"
    return f"{raw.source} row {index + 1}"
