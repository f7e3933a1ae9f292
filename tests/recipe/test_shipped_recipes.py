"""Every YAML in recipes/ validates, opens with the command to run, and follows the guide's advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from fnsft.recipe.load import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"quickstart", "peft-7b", "qlora-7b", "full-7b", "full-1b", "qlora-13b"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates_and_documents_its_command(path):
    recipe = load_recipe(path).resolved()
    head = path.read_text().splitlines()[:6]
    assert any(f"fnsft train recipes/{path.name}" in line for line in head), "first lines must give the command"
    training = recipe.training
    if recipe.method.name == "full":
        assert 1e-5 <= training.learning_rate <= 1e-4
        assert training.gradient_checkpointing
        assert training.warmup_ratio >= 0.1 and training.weight_decay == pytest.approx(0.01)
    elif path.stem != "quickstart":
        assert 1e-4 <= training.learning_rate <= 5e-4
        assert recipe.method.lora.r == 16 and recipe.method.lora.alpha == 32
