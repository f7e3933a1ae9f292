"""Recipe values that would hang, overflow or train to NaN are refused by the schema and the loader, fast."""

from __future__ import annotations

import time

import pytest

from fnsft.errors import RecipeError
from fnsft.recipe.load import MAX_RECIPE_BYTES, load_recipe

BASE = "version: 1\nmodel: {name_or_path: m}\ndata: {path: d.jsonl}\n"


def _load(tmp_path, text: str, sets=()):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path, sets=list(sets))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("training.seed=-1", "greater than or equal to 0"),
        ("training.seed=123456789012345678901234567890", "less than or equal to 4294967295"),
        ("training.num_train_epochs=.inf", "finite number"),
        ("training.learning_rate=.inf", "finite number"),
        ("training.learning_rate=.nan", "finite number"),
        ("training.max_grad_norm=.nan", "finite number"),
        ("training.per_device_train_batch_size=1e20", "training.per_device_train_batch_size"),
        ("training.per_device_train_batch_size=4294967296", "less than or equal to 2147483647"),
        ("training.max_steps=-5", "greater than or equal to -1"),
        ("method.lora.r=1000000000", "less than or equal to 65536"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path, override, message):
    with pytest.raises(RecipeError, match=message):
        _load(tmp_path, BASE, [override])


def test_alias_bomb_is_refused_quickly_without_printing_it(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    text = "version: 1\n" + "\n".join(lines) + "\nmodel: {name_or_path: *i}\ndata: {path: d}\n"
    assert len(text) < 1000  # 9^9 ≈ 3.9e8 strings once expanded
    started = time.monotonic()
    with pytest.raises(RecipeError, match="expands to more than 100,000 values") as caught:
        _load(tmp_path, text)
    assert time.monotonic() - started < 10
    assert len(str(caught.value)) < 300


def test_self_referencing_alias_is_refused(tmp_path):
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, BASE + "training: {seed: &x [*x]}\n")
    assert "training.seed" in str(caught.value) and len(str(caught.value)) < 300


def test_huge_recipe_file_is_refused_before_parsing(tmp_path):
    with pytest.raises(RecipeError, match="too large for a recipe"):
        _load(tmp_path, BASE + "# " + "x" * MAX_RECIPE_BYTES + "\n")


def test_huge_rejected_value_is_shown_cut(tmp_path):
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path, BASE + f"training: {{seed: [{', '.join(['1'] * 50_000)}]}}\n")
    assert "training.seed" in str(caught.value) and len(str(caught.value)) < 300
