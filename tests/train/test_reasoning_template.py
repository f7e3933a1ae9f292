"""A reasoning template end to end: Qwen3's template (from TRL's folder) with enable_thinking off, last turn only."""

from __future__ import annotations

import json
from importlib import resources

from typer.testing import CliRunner

from fnsft.cli import app


def _conversation(i: int) -> dict:
    return {"messages": [
        {"role": "user", "content": f"What comes after {i}?"},
        {"role": "assistant", "content": f"<think>{i} plus one</think>{i + 1}"},
        {"role": "user", "content": f"And after {i + 1}?"},
        {"role": "assistant", "content": f"{i + 2}"},
    ]}


def test_qwen3_template_last_turn_without_thinking_trains(tiny_recipe, tmp_path):
    template = tmp_path / "qwen3.jinja"
    template.write_text(resources.files("trl").joinpath("chat_templates", "qwen3.jinja").read_text())
    data = tmp_path / "chat.jsonl"
    rows = [_conversation(i) for i in range(24)] + [{"messages": [{"role": "user", "content": "no reply"}]}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = tiny_recipe().read_text().replace(
        "data:\n", f"data:\n  chat_template: {template}\n  chat_template_kwargs: {{enable_thinking: false}}\n"
        "  train_on: last_turn\n  on_bad_row: skip\n", 1)
    path = tmp_path / "reasoning.yaml"
    path.write_text(recipe.replace(str(tmp_path / "train.jsonl"), str(data)))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "train_on: last_turn" in result.output and "enable_thinking=False" in result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    summary = manifest["dataset"]["summary"]
    assert summary["chat_template_kwargs"] == {"enable_thinking": False}
    assert summary["train_on"] == "last_turn" and summary["skipped_rows"] == 1
    assert summary["marker_share"] == 1.0 and summary["zero_trained_rows"] == 0
    assert summary["rewritten_turns"] == 0  # the first reply loses its reasoning in the render, but is not trained
    assert 0 < summary["trained_share"] < 0.3
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["global_step"] == 4
