"""Recipe loading: strict keys with did-you-mean, file:line errors, floats, overrides and their precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnsft.errors import RecipeError
from fnsft.recipe.load import apply_overrides, load_recipe, parse_scalar
from fnsft.recipe.schema import METHOD_DEFAULTS

BASE = """version: 1
model:
  name_or_path: some/model
data:
  path: data.jsonl
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_minimal_recipe_gets_lora_defaults_from_the_guide(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE)).resolved()
    assert recipe.method.name == "lora"
    assert (recipe.method.lora.r, recipe.method.lora.alpha) == (16, 32)
    assert recipe.training.learning_rate == METHOD_DEFAULTS["lora"]["learning_rate"]
    assert recipe.training.gradient_checkpointing is True
    assert recipe.model.trust_remote_code is False


def test_scientific_notation_loads_as_float(tmp_path):
    recipe = load_recipe(write(tmp_path, BASE + "training:\n  learning_rate: 2e-4\n"))
    assert recipe.training.learning_rate == pytest.approx(2e-4)
    assert isinstance(recipe.training.learning_rate, float)


def test_unknown_key_names_line_and_suggests(tmp_path):
    path = write(tmp_path, BASE + "training:\n  learning_rate: 1e-4\n  lerning_rate: 3\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert f"{path}:8: unknown key 'training.lerning_rate' (did you mean 'learning_rate'?)" in str(info.value)


def test_unknown_section_suggests(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'trainig' \\(did you mean 'training'\\?\\)"):
        load_recipe(write(tmp_path, BASE + "trainig:\n  seed: 1\n"))


def test_wrong_type_names_line(tmp_path):
    path = write(tmp_path, BASE + "training:\n  per_device_train_batch_size: many\n")
    with pytest.raises(RecipeError, match=f"{path}:7: training.per_device_train_batch_size"):
        load_recipe(path)


def test_invalid_yaml_names_line(tmp_path):
    path = write(tmp_path, BASE + "training:\n  seed: [1, 2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:\d+:\d+: invalid YAML"):
        load_recipe(path)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_non_mapping_recipes(tmp_path, text):
    with pytest.raises(RecipeError):
        load_recipe(write(tmp_path, text))


def test_missing_file_and_missing_section(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="missing required key 'data'"):
        load_recipe(write(tmp_path, "version: 1\nmodel:\n  name_or_path: m\n"))


def test_duplicate_keys_are_errors(tmp_path):
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_recipe(write(tmp_path, BASE + "training:\n  seed: 1\n  seed: 2\n"))


def test_precedence_file_then_flags_then_set(tmp_path):
    path = write(tmp_path, BASE + "training:\n  learning_rate: 3e-4\n  seed: 1\n")
    recipe = load_recipe(path, flags={"learning_rate": 1e-4, "seed": 5}, sets=["training.seed=7"])
    assert recipe.training.learning_rate == pytest.approx(1e-4)
    assert recipe.training.seed == 7


def test_guide_flags_map_to_methods(tmp_path):
    path = write(tmp_path, BASE)
    assert load_recipe(path, flags={"no_peft": True}).resolved().training.learning_rate == METHOD_DEFAULTS["full"]["learning_rate"]
    assert load_recipe(path, flags={"use_4bit": True}).method.name == "qlora"
    assert load_recipe(path, flags={"lora_target_modules": ["q_proj", "v_proj"]}).method.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(RecipeError, match="conflict"):
        load_recipe(path, flags={"no_peft": True, "use_4bit": True})


def test_set_rejects_unknown_paths_with_suggestion(tmp_path):
    with pytest.raises(RecipeError, match="unknown key 'lerning_rate' in training \\(did you mean 'learning_rate'\\?\\)"):
        load_recipe(write(tmp_path, BASE), sets=["training.lerning_rate=1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(write(tmp_path, BASE), sets=["training.seed"])


def test_flags_alone_build_a_recipe():
    recipe = load_recipe(None, flags={"model_name_or_path": "m", "dataset_name_or_path": "d.jsonl"})
    assert recipe.model.name_or_path == "m"
    with pytest.raises(RecipeError, match="dataset_name_or_path"):
        load_recipe(None, flags={"model_name_or_path": "m"})


def test_parse_scalar_reads_yaml_types():
    assert parse_scalar("1e-4") == pytest.approx(1e-4)
    assert parse_scalar("true") is True
    assert parse_scalar("[a, b]") == ["a", "b"]
    assert parse_scalar("cosine") == "cosine"


def test_apply_overrides_rejects_unknown_flag():
    with pytest.raises(RecipeError, match="did you mean 'lora_r'"):
        apply_overrides({}, {"lora_rr": 8})
