import json

import pytest
from typer.testing import CliRunner

from fnsft.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["mask", *map(str, args)])


@pytest.fixture(scope="module")
def cli_mask(tiny_llama_dir, text_jsonl, tmp_path_factory):
    target = tmp_path_factory.mktemp("cli") / "m.json"
    result = invoke("build", "--model", tiny_llama_dir, "--data", text_jsonl, "-o", target, "--components", "3",
                    "--samples", "40", "--threshold", "percentile=95", "--seed", "5")
    assert result.exit_code == 0, result.output
    return target, result.output


def test_build_writes_a_mask_and_prints_the_table(cli_mask, text_jsonl):
    path, output = cli_mask
    mask = json.loads(path.read_text())
    assert mask["data"]["source"] == str(text_jsonl) and mask["data"]["format"] == "text"
    assert mask["data"]["samples"] == 40 and len(mask["components"]) == 3
    assert "union" in output and f"wrote {path}" in output


def test_show_and_match(cli_mask, tmp_path):
    path, _ = cli_mask
    result = invoke("show", path, "--png", tmp_path / "heat.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "heat.png").stat().st_size > 1000 and "component" in result.output
    result = invoke("match", path, path, "--iou", "0.5")
    assert result.exit_code == 0, result.output
    assert "3/3 components of A match" in result.output


def test_eval_writes_report(cli_mask, tiny_llama_dir, text_jsonl, tmp_path):
    path, _ = cli_mask
    result = invoke("eval", path, "--model", tiny_llama_dir, "--data", text_jsonl, "--samples", "4", "--draws", "2",
                    "-o", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "lesion.json").read_text())
    assert len(report["conditions"]) == 1 + 3 + 1 + 2 + 1 and (tmp_path / "lesion.png").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layers", "0-7"], "out of range"),
        (["--layers", "x"], "not a layer number"),
        (["--threshold", "p=9"], "threshold"),
        (["--capture", "attention"], "--capture"),
        (["--components", "0"], "--components must be positive"),
        (["--components", "40", "--max-tokens", "100"], "need at least 400"),
    ],
)
def test_build_bad_input_exits_2_with_one_line(tiny_llama_dir, text_jsonl, tmp_path, extra, message):
    result = invoke("build", "--model", tiny_llama_dir, "--data", text_jsonl, "-o", tmp_path / "x.json", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.json").exists()


def test_missing_inputs_and_mismatched_model_exit_2(cli_mask, tiny_model_factory, text_jsonl, tmp_path):
    path, _ = cli_mask
    assert "give a recipe file" in invoke("build", "--data", text_jsonl).output
    result = invoke("show", tmp_path / "nope.json")
    assert result.exit_code == 2 and "not found" in result.output
    result = invoke("eval", path, "--model", tiny_model_factory("gemma"), "--data", text_jsonl)
    assert result.exit_code == 2 and "does not match this model" in result.output


def test_build_from_a_recipe_uses_its_model_data_and_seed(tiny_llama_dir, text_jsonl, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nmodel:\n  name_or_path: {tiny_llama_dir}\ndata:\n  path: {text_jsonl}\ntraining:\n  seed: 9\n")
    target = tmp_path / "r.json"
    result = invoke("build", recipe, "-o", target, "--components", "2", "--samples", "10", "--layers", "-1")
    assert result.exit_code == 0, result.output
    mask = json.loads(target.read_text())
    assert mask["method"]["seed"] == 9 and mask["layers"] == [1] and mask["data"]["samples"] == 10
