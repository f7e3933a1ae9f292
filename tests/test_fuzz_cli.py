"""Property-based fuzzing of the whole CLI surface: recipe files, --set values, dataset files, model directories
and run directories handed to train --dry-run, recipe, estimate, export, push and reproduce.

The contract: every example ends with exit 0 or 2 (reproduce may also exit 1: "weights differ"), never with an
exception the top-level handler had to call unexpected, within a time bound, and leaves no staging behind.
A small-example version runs in the fast suite; 1,000+ examples in the slow one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import BASE_RECIPE, _dump, json_values, mutated_recipes, odd_text
from typer.testing import CliRunner

from fnsft.cli import app

#: Seconds one CLI call may take; far above what any refusal needs (a hang is what this catches).
TIME_BOUND = 60
SET_KEYS = ["training.learning_rate", "training.seed", "training.num_train_epochs", "data.max_length", "method.name",
            "training.per_device_train_batch_size", "model.name_or_path", "data.path", "nope.x", "training"]

set_values = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), odd_text)
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(json_values, max_size=4).map(lambda rows: "\n".join(json.dumps(r, allow_nan=True) for r in rows).encode()),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"{\"a\": " + b"[" * 5000 + b"]" * 5000 + b"}\n", "é,ü\n1,2\n".encode("latin-1"),
                     b'{"instruction": "x", "output": "y"}\n{"messages": [{"role": "user", "content": "x"}]}\n']),
)
data_suffixes = st.sampled_from([".jsonl", ".json", ".csv", ".parquet", ".txt", ".jsonl.gz", ""])


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


@st.composite
def cli_calls(draw, root: Path, tiny_model: Path) -> list[str]:
    """One CLI invocation with the files it names written under ``root``."""
    surface = draw(st.sampled_from(["recipe", "set", "data", "model", "run"]))
    if surface == "recipe":
        text = draw(st.one_of(st.text(max_size=300), mutated_recipes().map(_dump)))
        return ["recipe", draw(st.sampled_from(["validate", "show"])), str(_write(root / "r.yaml", text))]
    if surface == "set":
        recipe = _write(root / "r.yaml", _dump(BASE_RECIPE))
        return ["recipe", "show", str(recipe), *sum((["--set", v] for v in draw(st.lists(set_values, min_size=1, max_size=3))), [])]
    if surface == "data":
        data = _write(root / f"data{draw(data_suffixes)}", draw(file_bytes))
        doc = {**BASE_RECIPE, "model": {"name_or_path": str(tiny_model)}, "data": {"path": str(data), "max_length": 64},
               "output": {"dir": str(root / "run")}}
        return ["train", str(_write(root / "r.yaml", _dump(doc))), "--dry-run"]
    if surface == "model":
        model = root / "model"
        model.mkdir()
        config = draw(st.one_of(json_values, st.fixed_dictionaries({
            "model_type": st.sampled_from(["llama", "qwen2", "gpt2", "bert", "x"]),
            "hidden_size": st.one_of(st.integers(-2, 2**40), json_values), "num_hidden_layers": st.integers(-2, 10**9),
            "num_attention_heads": st.integers(-1, 64), "intermediate_size": st.integers(0, 4096),
            "vocab_size": st.integers(0, 10**6)})))
        _write(model / "config.json", json.dumps(config, allow_nan=True))
        if draw(st.booleans()):
            _write(model / "model.safetensors", draw(st.binary(max_size=200)))
        return ["estimate", "--model", str(model)]
    run = root / "run"
    recipe = {**BASE_RECIPE, "model": {"name_or_path": str(root / "no-model")}, "output": {"dir": str(run)}}
    _write(run / "recipe.yaml", draw(st.one_of(st.just(_dump(recipe)), st.text(max_size=200))))
    _write(run / "manifest.json", draw(st.one_of(json_values.map(lambda v: json.dumps(v, allow_nan=True)),
                                                 st.binary(max_size=100))))
    for folder in draw(st.lists(st.sampled_from(["adapter", "model", "exports"]), unique=True, max_size=3)):
        (run / folder).mkdir()
    command = draw(st.sampled_from([["export", str(run), "--merge", "--no-verify"], ["reproduce", str(run)],
                                    ["push", str(run), "--repo-id", "me/x", "--dry-run"],
                                    ["push", str(run), "--repo-id", "me/x", "--dry-run", "--gguf"]]))
    return command


def check_call(args: list[str], root: Path) -> None:
    before = {p for p in root.rglob("*")}
    started = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started
    allowed = (0, 1, 2) if args[0] == "reproduce" else (0, 2)
    assert result.exit_code in allowed, (args, result.output[-2000:])
    assert "unexpected " not in result.output or "--traceback" not in result.output, (args, result.output[-2000:])
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output, args
    assert elapsed < TIME_BOUND, (args, elapsed)
    left = [p for p in root.rglob("*") if p not in before and p.name.startswith(".")]
    assert left == [], (args, left)  # no staging or temporary files left behind
    if args[0] == "train":
        assert not (root / "run").exists(), args  # --dry-run writes nothing


def _run_example(tmp_path_factory, tiny_llama_dir, data) -> None:
    root = tmp_path_factory.mktemp("cli")
    check_call(data.draw(cli_calls(root, tiny_llama_dir)), root)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(data=st.data())
def test_cli_surface_never_tracebacks(tmp_path_factory, tiny_llama_dir, data):
    _run_example(tmp_path_factory, tiny_llama_dir, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_cli_surface_never_tracebacks_at_scale(tmp_path_factory, tiny_llama_dir, data):
    _run_example(tmp_path_factory, tiny_llama_dir, data)


