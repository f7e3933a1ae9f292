"""Properties of migrate-config over arbitrary valid recipes (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fnsft.errors import RecipeError
from fnsft.migrate.files import migrate_file
from fnsft.migrate.rules import (
    LR_SIGNIFICANT_DIGITS,
    MAX_FULL_WARMUP,
    WARMUP_STEP,
    AlreadyMigrated,
    effective_batch,
    migrate,
    spread_over_gpus,
)
from fnsft.recipe.load import validate
from fnsft.recipe.schema import Recipe

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Rounding the lr to 3 significant digits twice (there and back) moves it by at most about 1%.
LR_ROUND_TRIP_TOLERANCE = 2 * 0.5 * 10 ** (1 - LR_SIGNIFICANT_DIGITS)

MODEL_NAMES = ["meta-llama/Llama-2-7b-hf", "Qwen/Qwen2.5-0.5B", "org/m-1.5B", "microsoft/DialoGPT-medium",
               "./local/model", "org/Mixtral-8x7B", "HuggingFaceTB/SmolLM2-135M-Instruct"]


def _optional(strategy):
    return st.none() | strategy


@st.composite
def recipes(draw, methods: tuple[str, ...] = ("lora", "qlora", "full")) -> Recipe:
    """Valid recipes: every method, unset or set method-dependent values, any batch layout and GPU count."""
    training = {
        "per_device_train_batch_size": draw(st.integers(1, 64)),
        "gradient_accumulation_steps": draw(st.integers(1, 64)),
        "learning_rate": draw(_optional(st.floats(1e-6, 1e-2))),
        "warmup_ratio": draw(_optional(st.floats(0, 0.95))),
        "weight_decay": draw(_optional(st.floats(0, 0.5))),
        "save_steps": draw(st.integers(1, 5000)),
        "gradient_checkpointing": draw(st.booleans()),
    }
    method = {"name": draw(st.sampled_from(methods))}
    if draw(st.booleans()):
        method["lora"] = {"r": draw(st.integers(1, 256)), "alpha": draw(st.integers(1, 512))}
    if method["name"] == "qlora" and draw(st.booleans()):
        method["quantization"] = {"bits": draw(st.sampled_from([4, 8]))}
    data = {
        "model": {"name_or_path": draw(st.sampled_from(MODEL_NAMES))},
        "data": {"path": "d.jsonl"},
        "method": method,
        "training": {k: v for k, v in training.items() if v is not None},
        "output": {"dir": draw(st.from_regex(r"[a-z]{1,8}(/[a-z_-]{1,10}){0,2}", fullmatch=True))},
        "distributed": {"num_processes": draw(st.integers(1, 8)), "num_nodes": draw(st.integers(1, 2))},
    }
    return Recipe.model_validate(data)


def _family(method: str) -> str:
    return "full" if method == "full" else "peft"


@SETTINGS
@given(recipe=recipes(), to=st.sampled_from(["full", "peft", "qlora"]))
def test_migration_is_valid_keeps_the_effective_batch_or_says_why(recipe, to):
    try:
        result = migrate(recipe, to)
    except AlreadyMigrated:
        assert recipe.method.name == {"peft": "lora"}.get(to, to)
        return
    Recipe.model_validate(result.recipe.model_dump())  # valid, also once serialized
    assert effective_batch(result.recipe) == effective_batch(recipe)
    resolved = result.recipe.resolved().training
    if _family(recipe.method.name) != _family(result.recipe.method.name):
        # The method-dependent values are explicit: the target's defaults must not leak in.
        assert {"learning_rate", "warmup_ratio", "weight_decay"} <= result.recipe.training.model_fields_set
    assert 0 <= resolved.warmup_ratio < 1


@SETTINGS
@given(recipe=recipes(methods=("lora", "qlora")))
def test_peft_full_peft_round_trip_returns_the_training_values(recipe):
    start = recipe.resolved().training
    there = migrate(recipe, "full").recipe
    back = migrate(there, "peft" if recipe.method.name == "lora" else "qlora").recipe.resolved().training
    assert back.learning_rate == pytest.approx(start.learning_rate, rel=LR_ROUND_TRIP_TOLERANCE)
    assert (back.per_device_train_batch_size * back.gradient_accumulation_steps
            == start.per_device_train_batch_size * start.gradient_accumulation_steps)
    if start.warmup_ratio + WARMUP_STEP <= MAX_FULL_WARMUP:  # documented: the full warmup is capped at 0.5
        assert back.warmup_ratio == pytest.approx(start.warmup_ratio, abs=1e-6)


@SETTINGS
@given(recipe=recipes(methods=("full",)))
def test_full_peft_full_round_trip_returns_the_training_values(recipe):
    start = recipe.resolved().training
    back = migrate(migrate(recipe, "peft").recipe, "full").recipe.resolved().training
    assert back.learning_rate == pytest.approx(start.learning_rate, rel=LR_ROUND_TRIP_TOLERANCE)
    assert (back.per_device_train_batch_size * back.gradient_accumulation_steps
            == start.per_device_train_batch_size * start.gradient_accumulation_steps)
    if WARMUP_STEP <= start.warmup_ratio <= MAX_FULL_WARMUP:  # documented: PEFT warmup ≥ 0, full warmup ≤ 0.5
        assert back.warmup_ratio == pytest.approx(start.warmup_ratio, abs=1e-6)


@SETTINGS
@given(recipe=recipes(), gpus=st.integers(1, 16))
def test_spreading_over_gpus_keeps_the_effective_batch_or_refuses_clearly(recipe, gpus):
    try:
        spread, _ = spread_over_gpus(recipe, gpus)
    except RecipeError as exc:
        assert "cannot be" in str(exc)
        return
    assert effective_batch(spread) == effective_batch(recipe)


def _yaml_with_comments(recipe: Recipe) -> str:
    """The recipe as YAML with a distinct comment on every scalar line."""
    lines = []
    text = YAML(typ="safe", pure=True)
    import io

    out = io.StringIO()
    text.default_flow_style = False
    text.dump(recipe.model_dump(mode="json", exclude_unset=True), out)
    for number, line in enumerate(out.getvalue().splitlines()):
        lines.append(f"{line}  # note-{number}" if not line.rstrip().endswith(":") else line)
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes(), to=st.sampled_from(["full", "peft", "qlora"]))
def test_files_keep_user_comments_validate_and_the_input_is_untouched(recipe, to):
    source_text = _yaml_with_comments(recipe)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(source_text)
        try:
            result = migrate_file(path, to, command="test")
        except AlreadyMigrated:
            return
        assert path.read_text() == source_text
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["recipe.yaml"]  # migrate_file writes nothing
    reread = validate(YAML(typ="rt").load(result.text), "migrated")
    assert reread == result.recipe
    removed = [c.path for c in result.changes if c.action == "remove"]
    for path, note in _notes_by_path(source_text):
        if not any(path == r or path.startswith(r + ".") for r in removed):
            assert note in result.text, (path, note)


def _notes_by_path(text: str) -> list[tuple[str, str]]:
    """(dotted key path, comment) for each commented line of a block-style YAML text."""
    stack: list[tuple[int, str]] = []
    found = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("-", "#")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = line.split(":")[0].strip()
        stack.append((indent, key))
        if "#" in line:
            found.append((".".join(k for _, k in stack), line.split("#", 1)[1].strip()))
    return found
