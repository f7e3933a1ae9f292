"""Data files that are not UTF-8 JSON/CSV of a sane shape are refused before pyarrow reads them, naming the line."""

from __future__ import annotations

import gzip
import json

import pytest

from fnsft.data.load import MAX_JSON_DEPTH, _json_depth, load_raw
from fnsft.data.prepare import prepare_datasets
from fnsft.data.templates import configure_template
from fnsft.errors import DataError
from fnsft.recipe.schema import DataSection

ROW = {"instruction": "What comes after 1?", "output": "2"}


def _raw(path, **kwargs):
    return load_raw(DataSection(path=str(path), **kwargs))


def test_compressed_and_unknown_file_types(tmp_path):
    gz = tmp_path / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(json.dumps(ROW).encode()))
    with pytest.raises(DataError, match=r"unsupported data file type '\.gz' \(decompress it first\)"):
        _raw(gz)
    txt = tmp_path / "train.txt"
    txt.write_text(json.dumps(ROW))
    with pytest.raises(DataError, match=r"unsupported data file type '\.txt'"):
        _raw(txt)


def test_device_file_is_not_a_dataset():
    with pytest.raises(DataError, match="/dev/null: not a regular file or directory"):
        _raw("/dev/null")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_latin1_file_names_the_line(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        text = json.dumps(ROW) + "\n" + json.dumps({"instruction": "Café?", "output": "é"}, ensure_ascii=False) + "\n"
    else:
        text = "instruction,output\nok,fine\nCafé,é\n"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=f"train{suffix}:{2 if suffix == '.jsonl' else 3}: not UTF-8 text"):
        _raw(path)


def test_deeply_nested_json_is_refused_before_pyarrow(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + '{"instruction": ' + "[" * 200_000 + "]" * 200_000 + ', "output": "a"}\n')
    with pytest.raises(DataError, match=f"deep.jsonl:2: JSON nested deeper than {MAX_JSON_DEPTH} levels"):
        _raw(path)


def test_json_depth_ignores_brackets_in_strings():
    assert _json_depth(b'{"a": "[[[[[[", "b": [[1], {"c": "}}"}]}') == 3
    assert _json_depth(b"no brackets") == 0


def test_binary_chat_template_is_named(tmp_path):
    template = tmp_path / "template.jinja"
    template.write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match="template.jinja: not a text file"):
        configure_template(object(), str(template))


def test_all_rows_longer_than_max_length_is_a_data_error(tmp_path, smol_tokenizer_dir):
    from transformers import AutoTokenizer

    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps({"instruction": "word " * 200, "output": "x"}) + "\n" for _ in range(6)))
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    with pytest.raises(DataError, match="all 5 examples are longer than data.max_length=64 tokens"):
        prepare_datasets(DataSection(path=str(path), max_length=64, validation_fraction=0.1), tokenizer, seed=0)
