"""Read raw dataset rows from local files or the Hub with the `datasets` library.

Local json/jsonl/csv/parquet files (or a directory of them) load offline. A malformed JSON file is re-read line
by line on failure so the error names the exact line.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnsft.errors import DataError
from fnsft.hashing import files_sha256
from fnsft.recipe.schema import DataSection

BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class RawData:
    train: Any  # datasets.Dataset
    eval: Any | None
    source: str
    fingerprint: str
    line_offset: int  # row i of `train` is on line i + line_offset of a JSONL file (0 when unknown)


#: Nesting of a JSON value (``[[[...]]]``) beyond any dataset's; pyarrow's reader hangs or crashes far below 10^5.
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def data_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in BUILDERS:
            compressed = " (decompress it first)" if path.suffix in (".gz", ".bz2", ".xz", ".zst", ".zip") else ""
            raise DataError(f"{path}: unsupported data file type '{path.suffix}'{compressed}; use .json, .jsonl, .csv or .parquet")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: not a regular file or directory; give a .json/.jsonl/.csv/.parquet file")
    files = sorted(p for p in path.iterdir() if p.suffix in BUILDERS and p.is_file())
    if not files:
        raise DataError(f"{path}: no .json/.jsonl/.csv/.parquet files in this directory")
    return files


def check_text_file(file: Path, *, json_depth: bool) -> None:
    """Text data must be UTF-8 (the error names the line of the first bad byte), and JSON no deeper than
    MAX_JSON_DEPTH. Checked line by line before pyarrow reads the file."""
    with file.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{file}:{number}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8, e.g. iconv -f latin1 -t utf-8"
                ) from None
            if json_depth and _json_depth(line) > MAX_JSON_DEPTH:
                raise DataError(f"{file}:{number}: JSON nested deeper than {MAX_JSON_DEPTH} levels; flatten the row")


def _json_depth(line: bytes) -> int:
    """Deepest bracket nesting outside strings (approximate for malformed JSON, which fails later anyway)."""
    brackets = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b"", line))
    if not brackets:
        return 0
    steps = brackets.translate(_DEPTH_STEPS)
    return max(itertools.accumulate(step - 1 for step in steps))


_DEPTH_STEPS = bytes.maketrans(b"[{]}", bytes([2, 2, 0, 0]))  # +1 / -1, shifted by one to stay a byte


def files_fingerprint(files: list[Path]) -> str:
    return "sha256:" + files_sha256(files)


def check_dataset_pin(section: DataSection, fingerprint: str) -> None:
    """A recipe that pins ``data.fingerprint`` trains only on exactly that data.

    Raises:
        DataError: the dataset's fingerprint differs from the pinned one.
    """
    if section.fingerprint is not None and section.fingerprint != fingerprint:
        raise DataError(
            f"{section.describe()}: dataset fingerprint is {fingerprint}, but the recipe pins {section.fingerprint}: the "
            "data changed. Restore it, or remove data.fingerprint (--set data.fingerprint=null) to train on it anyway."
        )


def _locate_json_problem(file: Path) -> str:
    """Re-read a JSON/JSONL file to name the line that broke the fast loader."""
    text = file.read_text(encoding="utf-8", errors="replace")
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{file}:{exc.lineno}: invalid JSON at column {exc.colno}: {exc.msg}"
        return f"{file}: the JSON array's rows do not share one set of fields with consistent types"
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{file}:{number}: invalid JSON at column {exc.colno}: {exc.msg} (each line holds one whole JSON object)"
        if not isinstance(value, dict):
            return f"{file}:{number}: each line must be a JSON object, got {type(value).__name__}"
    return f"{file}: rows have inconsistent field types (e.g. a field that is text in one row and a list in another)"


def _has_non_object_rows(file: Path) -> bool:
    """A row that is not a JSON object. pyarrow's JSON reader crashes the whole process (segfault) on some of
    them, e.g. a JSONL file holding a lone ``null`` (found by tests/test_fuzz.py), so look before it reads."""
    blank = b" \t\r\n\xef\xbb\xbf"  # whitespace and a UTF-8 byte-order mark
    with file.open("rb") as handle:
        head = handle.read(4096).lstrip(blank)[:1]
        if file.suffix == ".json" or head == b"[":  # one JSON document: an array of rows (or an object)
            return bool(head) and head not in (b"[", b"{")
        handle.seek(0)
        for line in handle:
            start = line.lstrip(blank)[:1]
            if start and start != b"{":
                return True
    return False


def _nul_field_name(features: Any, where: str = "") -> str | None:
    """A field name holding a NUL character, anywhere in the nested features. Arrow cuts such names at the NUL, so
    reading the rows later fails deep inside datasets with a bare KeyError/ValueError (found by test_fuzz.py)."""
    if isinstance(features, dict):
        for name, inner in features.items():
            if "\x00" in name:
                return f"{where}{name!r}"
            found = _nul_field_name(inner, f"{where}{name}.")
            if found:
                return found
    elif isinstance(features, list | tuple):
        return next((found for item in features if (found := _nul_field_name(item, where))), None)
    elif hasattr(features, "feature"):  # datasets.List / Sequence
        return _nul_field_name(features.feature, where)
    return None


def _load_local(path: Path, section: DataSection) -> RawData:
    from datasets import load_dataset
    from datasets.utils import logging as datasets_logging

    files = data_files(path)
    builders = {BUILDERS[f.suffix] for f in files}
    if len(builders) > 1:
        raise DataError(f"{path}: mixed file types ({', '.join(sorted(builders))}); keep one kind per directory")
    builder = builders.pop()
    if builder in ("json", "csv"):
        for file in files:
            check_text_file(file, json_depth=builder == "json")
    if builder == "json":
        for file in files:
            if _has_non_object_rows(file):
                raise DataError(_locate_json_problem(file))
    verbosity = datasets_logging.get_verbosity()
    # its JSON reader logs the parser error (rows counted from 0) before raising; the DataError names the line
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    try:
        dataset = load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as exc:  # datasets wraps parser errors in several types; find the line ourselves
        if builder == "json":
            problems = [_locate_json_problem(f) for f in files]
            raise DataError(problems[0]) from None
        raise DataError(f"{path}: cannot read {builder} data: {str(exc).splitlines()[0]}") from None
    finally:
        datasets_logging.set_verbosity(verbosity)
    bad_name = _nul_field_name(dataset.features)
    if bad_name is not None:
        raise DataError(f"{path}: field name {bad_name} contains a NUL character; rename the field")
    line_offset = 1 if builder == "json" and len(files) == 1 and files[0].suffix == ".jsonl" else 0
    if builder == "csv":
        line_offset = 2  # header line
    return RawData(dataset, None, str(path), files_fingerprint(files), line_offset)


def single_path(section: DataSection) -> str:
    """The one dataset's path or Hub id (a recipe with data.sources loads each source as a section of its own)."""
    if section.path is None:
        raise AssertionError("data.path is unset: data.sources are loaded one source at a time")
    return section.path


def _load_hub(section: DataSection) -> RawData:
    from datasets import load_dataset

    from fnsft.hub_access import check_hub_dataset

    name = single_path(section)
    check_hub_dataset(name)
    try:
        train = load_dataset(name, section.config_name, split=section.split, revision=section.revision)
        evaluation = (
            load_dataset(name, section.config_name, split=section.eval_split, revision=section.revision)
            if section.eval_split
            else None
        )
    except Exception as exc:
        raise DataError(f"{section.path}: cannot load this dataset from the Hub: {str(exc).splitlines()[0]}") from None
    fingerprint = f"hub:{section.path}@{section.revision or 'default'}:{train._fingerprint}"
    return RawData(train, evaluation, name, fingerprint, 0)


def is_hub_dataset(section: DataSection) -> bool:
    """Not a local path: a Hub dataset id (a missing local path is refused by load_raw)."""
    name = single_path(section)
    path = Path(name).expanduser()
    return not path.exists() and not name.startswith((".", "/", "~")) and path.suffix not in BUILDERS


def load_raw(section: DataSection) -> RawData:
    path = Path(single_path(section)).expanduser()
    if path.exists():
        if section.eval_split:
            raise DataError(f"{section.path}: data.eval_split needs a Hub dataset; for local files use validation_fraction")
        return _load_local(path, section)
    if not is_hub_dataset(section):
        raise DataError(f"{section.path}: dataset file not found")
    return _load_hub(section)


def describe_row(raw: RawData, index: int) -> str:
    if raw.line_offset:
        return f"{raw.source}:{index + raw.line_offset} (row {index + 1})"
    return f"{raw.source} row {index + 1}"
