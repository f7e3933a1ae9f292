"""`fnsft reproduce` and dataset pinning: the same recipe and seed give the same weights; changed inputs are caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.reproduce import fact_differences

runner = CliRunner()


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def original(tmp_path_factory, tiny_llama_dir) -> Path:
    """A finished LoRA run (4 steps) whose dataset file the tests may change afterwards."""
    root = tmp_path_factory.mktemp("reproduce")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Add one to {i}.", "output": str(i + 1)}) + "\n" for i in range(32)))
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"""version: 1
model: {{name_or_path: {tiny_llama_dir}}}
data: {{path: {data}, validation_fraction: 0.25, max_length: 64}}
training: {{max_steps: 4, per_device_train_batch_size: 4, learning_rate: 1.0e-2, save_steps: 2, gradient_checkpointing: false}}
output: {{dir: {root / "run"}}}
"""
    )
    result = runner.invoke(app, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return root / "run"


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_reproduce_gives_bitwise_identical_weights(original):
    target = original.with_name("again")
    result = runner.invoke(app, ["reproduce", str(original), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert "weights match" in result.output
    assert manifest(target)["weights_sha256"] == manifest(original)["weights_sha256"]
    pinned = yaml.safe_load((target / "recipe.yaml").read_text())["data"]["fingerprint"]
    assert pinned == manifest(original)["dataset"]["fingerprint"]  # the re-run pins the recorded data
    assert fact_differences(manifest(original), manifest(target)) == []


def test_fact_differences_name_each_changed_fact(original):
    recorded = manifest(original)
    now = json.loads(json.dumps(recorded))
    now["packages"]["torch"] = "0.0.1"
    now["hardware"]["cpu_count"] = 999
    now["base_model"]["identity"]["files_digest"] = "other"
    now["weights_sha256"] = "0" * 64  # an outcome, not a fact: not listed
    facts = [d.fact for d in fact_differences(recorded, now)]
    assert facts == ["base_model.identity.files_digest", "hardware.cpu_count", "packages.torch"]


def test_changed_base_model_is_refused(original, tmp_path):
    run = tmp_path / "tampered"
    shutil.copytree(original, run)
    recorded = manifest(run)
    recorded["base_model"]["identity"]["files_digest"] = "not-the-model-that-was-used"
    (run / "manifest.json").write_text(json.dumps(recorded))
    result = runner.invoke(app, ["reproduce", str(run)])
    assert result.exit_code == 2 and "base model differs" in flat(result.output), result.output
    assert not (tmp_path / "tampered-reproduce").exists()


def test_changed_dataset_is_an_error_unless_allowed_then_reported(original):
    data = Path(yaml.safe_load((original / "recipe.yaml").read_text())["data"]["path"])
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({**row, "output": row["output"] + "!"}) + "\n" for row in rows))  # every answer

    refused = runner.invoke(app, ["reproduce", str(original), "-o", str(original.with_name("refused"))])
    assert refused.exit_code == 2, refused.output
    assert "the data changed" in flat(refused.output) and "Traceback" not in refused.output
    assert not original.with_name("refused").exists()

    allowed = runner.invoke(
        app, ["reproduce", str(original), "-o", str(original.with_name("allowed")), "--allow-changed-inputs"]
    )
    assert allowed.exit_code == 1, allowed.output
    assert "weights differ" in allowed.output and "dataset.fingerprint" in allowed.output


def test_reproduce_needs_a_finished_run(tmp_path):
    result = runner.invoke(app, ["reproduce", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished fnsft run" in result.output


def test_an_empty_reproduction_dir_left_by_an_interrupted_start_is_reused(tmp_path):
    from fnsft.reproduce import default_output_dir
    from fnsft.rundir import RunDir
    from fnsft.train.outdir import LOCK

    run = RunDir.at(tmp_path / "RUN")
    assert default_output_dir(run) == tmp_path / "RUN-reproduce"
    (tmp_path / "RUN-reproduce").mkdir()
    (tmp_path / "RUN-reproduce" / LOCK).write_text("{}")  # what a killed start leaves at most
    assert default_output_dir(run) == tmp_path / "RUN-reproduce"
    (tmp_path / "RUN-reproduce" / "recipe.yaml").write_text("version: 1\n")
    assert default_output_dir(run) == tmp_path / "RUN-reproduce-2"
