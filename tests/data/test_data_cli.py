"""`fnsft data preview|check` on real files with a real tokenizer (no weights loaded)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]

SHAREGPT = [
    {"conversations": [
        {"from": "human", "value": "Is the capital Paris or Lyon?"}, {"from": "gpt", "value": "Paris"},
        {"from": "human", "value": "And of Italy?"}, {"from": "gpt", "value": "Rome"},
    ]},
    {"conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi\n"}]},
]
MESSAGES = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "no reply here"}]},
    {"messages": [{"role": "user", "content": "long"}, {"role": "assistant", "content": "word " * 80}]},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_preview_json_gives_text_spans_ids_and_mask(tiny_llama_dir, tmp_path):
    data = _jsonl(tmp_path / "chat.jsonl", SHAREGPT)
    result = runner.invoke(app, ["data", "preview", "--model", str(tiny_llama_dir), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["row"] for row in rows] == [f"{data}:1 (row 1)", f"{data}:2 (row 2)"]
    first = rows[0]
    trained = [first["text"][a:b] for a, b in first["trained_spans"]]
    assert trained == ["Paris<|im_end|>\n", "Rome<|im_end|>\n"]
    assert len(first["input_ids"]) == len(first["mask"]) and set(first["mask"]) == {0, 1}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    trained_text = tokenizer.decode([t for t, bit in zip(first["input_ids"], first["mask"], strict=True) if bit])
    assert trained_text == "Paris<|im_end|>\nRome<|im_end|>\n"
    assert rows[1]["text"][slice(*rows[1]["trained_spans"][0])] == "hi\n<|im_end|>\n"


def test_preview_plain_markers_and_html_page(tiny_llama_dir, tmp_path):
    data = _jsonl(tmp_path / "chat.jsonl", SHAREGPT)
    page = tmp_path / "preview.html"
    result = runner.invoke(app, ["data", "preview", "--model", str(tiny_llama_dir), "--data", str(data),
                                 "--rows", "1", "--html", str(page), "--ids"])
    assert result.exit_code == 0, result.output
    assert "user\nIs the capital Paris or Lyon?<|im_end|>" in result.stdout
    assert "[[Paris<|im_end|>\n]]" in result.stdout and "row 2" not in result.stdout
    assert "ids:  " in result.stdout and "*" in result.stdout
    html = page.read_text(encoding="utf-8")
    assert '<span class="t">Paris&lt;|im_end|&gt;\n</span>' in html and "<script" not in html


def test_check_counts_skipped_cut_and_trained(tiny_llama_dir, tmp_path):
    data = _jsonl(tmp_path / "messages.jsonl", MESSAGES)
    plot = tmp_path / "lengths.png"
    result = runner.invoke(app, ["data", "check", "--model", str(tiny_llama_dir), "--data", str(data),
                                 "--plot", str(plot)])
    assert result.exit_code == 2 and "messages.jsonl:2 (row 2): the conversation has no assistant turn" in result.output
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"version: 1\nmodel: {{name_or_path: {tiny_llama_dir}}}\n"
                      f"data: {{path: {data}, max_length: 64, on_bad_row: skip}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    result = runner.invoke(app, ["data", "check", str(recipe), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "rows: 2 (messages 2); skipped: 1" in result.output
    assert "rows cut by max_length: 1" in result.output
    assert "replies with their end-of-turn marker trained: 100%" in result.output
    assert "messages.jsonl:3 (row 3)" in result.output  # named in the cut-rows warning
    assert "messages.jsonl:2 (row 2): the conversation has no assistant turn" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_and_preview_on_the_quickstart_recipe():
    recipe = REPO / "recipes" / "quickstart.yaml"
    result = runner.invoke(app, ["data", "check", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "rows: 600 (alpaca 600); skipped: 0" in result.output
    assert "rows with none: 0" in result.output
    result = runner.invoke(app, ["data", "preview", str(recipe), "--rows", "1", "--json"])
    row = json.loads(result.stdout)
    assert row["text"][slice(*row["trained_spans"][0])] == "866<|im_end|>\n"


def test_preview_without_model_or_recipe_is_one_line_exit_2():
    result = runner.invoke(app, ["data", "preview", "--data", "x.jsonl"])
    assert result.exit_code == 2 and "give a recipe file, or both --model and --data" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_html_page_renders_in_headless_chromium(tiny_llama_dir, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    data = _jsonl(tmp_path / "chat.jsonl", SHAREGPT)
    page = tmp_path / "preview.html"
    result = runner.invoke(app, ["data", "preview", "--model", str(tiny_llama_dir), "--data", str(data),
                                 "--html", str(page)])
    assert result.exit_code == 0, result.output
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=900,700", page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 20  # text, not a blank page
    highlight = (0x9B, 0xE2, 0x9B)
    assert any(colour == highlight for _, colour in colours), "the trained-token highlight is not drawn"
