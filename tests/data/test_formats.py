"""Format detection and conversion: every supported format, and bad rows named by line/row."""

from __future__ import annotations

import json

import pytest

from fnsft.data.formats import detect_format, to_canonical
from fnsft.data.prepare import preview
from fnsft.errors import DataError
from fnsft.recipe.schema import DataSection

ROWS = {
    "alpaca": {"instruction": "Add", "input": "2 and 3", "output": "5"},
    "sharegpt": {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    "messages": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                              {"role": "assistant", "content": "a"}]},
    "prompt_completion": {"prompt": "2+2=", "completion": "4"},
    "text": {"text": "plain text"},
}


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_detects_and_converts_each_format(fmt):
    assert detect_format([ROWS[fmt]], "x").format == fmt
    canonical = to_canonical(ROWS[fmt], fmt, "row 1")
    if fmt == "text":
        assert canonical == {"text": "plain text"}
    else:
        assert canonical["messages"][-1]["role"] == "assistant"


def test_alpaca_input_joins_instruction():
    messages = to_canonical(ROWS["alpaca"], "alpaca", "row 1")["messages"]
    assert messages[0] == {"role": "user", "content": "Add\n\n2 and 3"}
    assert messages[1] == {"role": "assistant", "content": "5"}


def test_undetectable_format_lists_the_options():
    with pytest.raises(DataError, match="cannot detect the dataset format.*alpaca"):
        detect_format([{"question": "q", "answer": "a"}], "data.jsonl")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_row_missing_field_names_the_line(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [ROWS["alpaca"], {"instruction": "x", "output": None, "input": ""}])
    section = DataSection(path=str(path))
    from fnsft.data.load import load_raw
    from fnsft.data.prepare import canonicalize

    raw = load_raw(section)
    with pytest.raises(DataError, match=r"d.jsonl:2 \(row 2\): missing field 'output'"):
        canonicalize(raw, section, "alpaca")


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS["text"]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        preview(DataSection(path=str(path)))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="dataset file not found"):
        preview(DataSection(path=str(tmp_path / "nope.jsonl")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        preview(DataSection(path=str(empty)))


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(DataError, match="Hub access is off"):
        preview(DataSection(path="tatsu-lab/alpaca"))


def test_wrong_role_is_named(tmp_path):
    bad = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    with pytest.raises(DataError, match=r"row 1: messages\[0\].role is 'human'"):
        to_canonical(bad, "messages", "row 1")


def test_conversation_without_assistant_turn_is_rejected():
    with pytest.raises(DataError, match="no assistant turn"):
        to_canonical({"messages": [{"role": "user", "content": "u"}]}, "messages", "row 3")


def test_a_file_mixing_formats_blames_the_first_row_of_the_other_format(tmp_path):
    """datasets gives every row every column (None where a row lacks it): detection reads the filled ones."""
    from fnsft.data.load import load_raw
    from fnsft.data.prepare import canonicalize, detect
    from fnsft.errors import DataError
    from fnsft.recipe.schema import DataSection

    path = tmp_path / "mixed.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n'
                    '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}\n')
    section = DataSection(path=str(path))
    raw = load_raw(section)
    detection = detect(raw, section)
    assert detection.format == "alpaca"
    with pytest.raises(DataError, match=r"mixed\.jsonl:3 \(row 3\): missing field 'instruction'"):
        canonicalize(raw, section, detection.format)
