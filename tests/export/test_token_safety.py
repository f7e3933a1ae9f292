"""A planted Hub token never reaches an export's files, a push dry-run's output, or the model card."""

from __future__ import annotations

from typer.testing import CliRunner

from fnsft.cli import app

FAKE_TOKEN = "hf_fnsftPlantedSecret0123456789abcdef"


def test_export_and_push_dry_run_never_write_the_token(small_run_factory, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run, _base = small_run_factory("llama")
    runner = CliRunner()
    export = runner.invoke(app, ["export", str(run.root), "--merge", "--gguf", "f16"])
    assert export.exit_code == 0, export.output
    push = runner.invoke(app, ["push", str(run.root), "--repo-id", "someone/model", "--merged", "--dry-run"])
    assert push.exit_code == 0, push.output
    assert FAKE_TOKEN not in export.output + push.output
    for path in run.root.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), f"token found in {path}"
