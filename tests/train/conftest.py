from __future__ import annotations

import json
from pathlib import Path

import pytest


def alpaca_rows(n: int = 32) -> list[dict]:
    return [{"instruction": f"What number comes after {i}?", "output": str(i + 1)} for i in range(n)]


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows()))
    return path


@pytest.fixture
def tiny_recipe(tmp_path, tiny_llama_dir, alpaca_file):
    """Write a recipe for a few real training steps on the tiny llama; extra YAML can be appended."""

    def make(extra: str = "", name: str = "recipe.yaml", out: str = "run") -> Path:
        path = tmp_path / name
        path.write_text(
            f"""version: 1
model:
  name_or_path: {tiny_llama_dir}
data:
  path: {alpaca_file}
  validation_fraction: 0.25
  max_length: 64
training:
  max_steps: 4
  per_device_train_batch_size: 4
  learning_rate: 1.0e-2
  logging_steps: 1
  save_steps: 2
  gradient_checkpointing: false
output:
  dir: {tmp_path / out}
{extra}"""
        )
        return path

    return make
