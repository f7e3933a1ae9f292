"""Property-based fuzzing of what users hand to fnsft: recipe files and dataset rows.

The contract: bad input never produces a traceback. Each example either loads (a valid Recipe / canonical rows) or
raises the domain error (RecipeError / DataError), which the CLI prints as one line with exit code 2. Any other
exception fails the test. A few hundred examples run in the fast suite, 1,000+ each in the slow one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.data.formats import detect_format, to_canonical
from fnsft.errors import DataError, RecipeError
from fnsft.recipe.load import dump_recipe, load_recipe
from fnsft.recipe.schema import Recipe

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text that stresses parsers: control characters, surrogate-free odd unicode, right-to-left marks, huge runs.
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.sampled_from(["", " ", "\u202e", "\x00", "\ufeff", "null", "~", "yes", "1e-4", "-.inf", "0x1F", "{", "- a", "é" * 3]),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "x" * n),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), odd_text,
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=12)

BASE_RECIPE: dict[str, Any] = {
    "version": 1,
    "model": {"name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "trust_remote_code": False},
    "data": {"path": "data/train.jsonl", "format": "auto", "max_length": 512, "validation_fraction": 0.1},
    "method": {"name": "lora", "lora": {"r": 16, "alpha": 32, "target_modules": "auto"}},
    "training": {"num_train_epochs": 1, "learning_rate": 2.0e-4, "per_device_train_batch_size": 4, "seed": 42},
    "output": {"dir": "runs/x"},
}


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    return found


@st.composite
def mutated_recipes(draw) -> Any:
    """The base recipe with keys dropped, replaced by random values, or added with random names and values."""
    doc = json.loads(json.dumps(BASE_RECIPE))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            parent.pop(path[-1], None)
        elif action == "replace":
            parent[path[-1]] = draw(json_values)
        else:
            parent[draw(odd_text)] = draw(json_values)
    return draw(st.one_of(st.just(doc), json_values)) if draw(st.integers(0, 9)) == 0 else doc


def _dump(doc: Any) -> str:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, ValueError):
        return json.dumps(doc, allow_nan=True)  # JSON is YAML too; keys YAML cannot represent stay JSON


def check_recipe_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        recipe = load_recipe(path).resolved()
    except RecipeError as exc:
        assert str(exc).strip(), "a RecipeError must carry a message"
        return
    assert isinstance(recipe, Recipe)
    again = tmp_path / "again.yaml"
    again.write_text(dump_recipe(recipe), encoding="utf-8")
    assert load_recipe(again).resolved().to_dict() == recipe.to_dict(), "a valid recipe must survive dump + load"


def check_set_override(value: str) -> None:
    path = Path(__file__).resolve().parents[1] / "recipes"
    recipe_file = next(iter(sorted(path.glob("*.yaml"))), None)
    if recipe_file is None:
        pytest.skip("no shipped recipes")
    with contextlib.suppress(RecipeError):
        load_recipe(recipe_file, sets=[value])


@FAST
@given(text=st.text(max_size=300))
def test_recipe_loader_random_text(tmp_path, text):
    check_recipe_text(tmp_path, text)


@FAST
@given(doc=mutated_recipes())
def test_recipe_loader_mutated_documents(tmp_path, doc):
    check_recipe_text(tmp_path, _dump(doc))


@FAST
@given(key=st.sampled_from(["training.learning_rate", "data.max_length", "method.name", "model", "nope.x", "training"]), value=odd_text)
def test_recipe_set_overrides(key, value):
    check_set_override(f"{key}={value}")


FORMAT_KEYS = {
    "alpaca": ["instruction", "input", "output", "system"],
    "sharegpt": ["conversations"],
    "messages": ["messages"],
    "prompt_completion": ["prompt", "completion"],
    "text": ["text"],
}
turns = st.lists(
    st.one_of(
        st.fixed_dictionaries({"role": st.one_of(st.sampled_from(["user", "assistant", "system", "tool"]), json_values),
                               "content": st.one_of(odd_text, json_values)}),
        st.fixed_dictionaries({"from": st.one_of(st.sampled_from(["human", "gpt", "system"]), json_values),
                               "value": st.one_of(odd_text, json_values)}),
        json_values,
    ),
    max_size=4,
)


@st.composite
def rows_for(draw, fmt: str) -> dict | Any:
    """A row for ``fmt``: its keys (some dropped) with plausible or random values, plus random extra keys."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # not even a mapping
    row: dict[str, Any] = {}
    for key in FORMAT_KEYS[fmt]:
        if draw(st.integers(0, 5)) == 0:
            continue
        row[key] = draw(turns) if key in ("conversations", "messages") else draw(st.one_of(odd_text, json_values))
    row.update(draw(st.dictionaries(odd_text, json_values, max_size=2)))
    return row


def check_rows(fmt: str, rows: list) -> None:
    try:
        detected = detect_format(rows, "fuzz.jsonl").format
    except DataError:
        detected = None
    for target in {fmt, detected} - {None}:
        for index, row in enumerate(rows):
            try:
                canonical = to_canonical(row, target, f"fuzz.jsonl:{index + 1}")
            except DataError as exc:
                assert f"fuzz.jsonl:{index + 1}" in str(exc), "a row error must name its row"
                continue
            assert set(canonical) in ({"messages"}, {"text"})
            for message in canonical.get("messages", []):
                assert isinstance(message["content"], str) and isinstance(message["role"], str)


@FAST
@given(data=st.data(), fmt=st.sampled_from(sorted(FORMAT_KEYS)))
def test_dataset_rows_convert_or_raise_data_error(data, fmt):
    check_rows(fmt, data.draw(st.lists(rows_for(fmt), min_size=1, max_size=4)))


def _write_jsonl(path: Path, rows: list) -> None:
    lines = []
    for row in rows:
        try:
            lines.append(json.dumps(row, allow_nan=True, ensure_ascii=False))
        except ValueError:
            lines.append(json.dumps(str(row)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")


@functools.cache
def _tokenizer(directory: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


def check_dataset_file(tmp_path: Path, tokenizer_dir: Path, rows: list) -> None:
    """The whole data path, file to tokens: loads and tokenizes, or exits 2 with one line."""
    from fnsft.data.prepare import prepare_datasets
    from fnsft.recipe.schema import DataSection

    path = tmp_path / "rows.jsonl"
    _write_jsonl(path, rows)
    tokenizer = _tokenizer(str(tokenizer_dir))
    try:
        prepared = prepare_datasets(DataSection(path=str(path), max_length=64), tokenizer, seed=0)
    except DataError as exc:
        assert str(exc).strip()
        return
    assert prepared.num_train >= 1 and prepared.fingerprint.startswith("sha256:")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(sorted(FORMAT_KEYS)))
def test_dataset_files_end_to_end(tmp_path, smol_tokenizer_dir, data, fmt):
    check_dataset_file(tmp_path, smol_tokenizer_dir, data.draw(st.lists(rows_for(fmt), min_size=1, max_size=5)))


def test_cli_reports_fuzzed_recipe_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_dump({**BASE_RECIPE, "training": {"learning_rate": math.inf, "\u202e": [None]}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["recipe", "validate", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3


@pytest.mark.slow
@SLOW
@given(text=st.text(max_size=2000))
def test_recipe_loader_random_text_at_scale(tmp_path, text):
    check_recipe_text(tmp_path, text)


@pytest.mark.slow
@SLOW
@given(doc=mutated_recipes())
def test_recipe_loader_mutated_documents_at_scale(tmp_path, doc):
    check_recipe_text(tmp_path, _dump(doc))


@pytest.mark.slow
@SLOW
@given(data=st.data(), fmt=st.sampled_from(sorted(FORMAT_KEYS)))
def test_dataset_rows_at_scale(data, fmt):
    check_rows(fmt, data.draw(st.lists(rows_for(fmt), min_size=1, max_size=8)))


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(sorted(FORMAT_KEYS)))
def test_dataset_files_end_to_end_at_scale(tmp_path, smol_tokenizer_dir, data, fmt):
    check_dataset_file(tmp_path, smol_tokenizer_dir, data.draw(st.lists(rows_for(fmt), min_size=1, max_size=8)))
