"""`fnsft export` through the CLI: exit codes, the summary table, one-line errors."""

from __future__ import annotations

from typer.testing import CliRunner

from fnsft.cli import app


def test_export_prints_a_summary_table(small_run_factory):
    run, _base = small_run_factory("qwen2")
    result = CliRunner().invoke(app, ["export", str(run.root), "--merge", "--gguf", "q4_0", "--gguf", "f16"])
    assert result.exit_code == 0, result.output
    assert f"{run.root.name}-q4_0.gguf" in result.output and "model.safetensors" in result.output
    assert "total" in result.output and (run.exports / "Modelfile").is_file()


def test_export_errors_are_one_line_with_exit_code_2(small_run_factory, tmp_path):
    run, _base = small_run_factory("qwen2")
    nothing = CliRunner().invoke(app, ["export", str(run.root)])
    assert nothing.exit_code == 2 and "nothing to export" in nothing.output
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--merge"])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
    bad = CliRunner().invoke(app, ["export", str(run.root), "--gguf", "q3"])
    assert bad.exit_code == 2 and "unknown GGUF type 'q3'" in bad.output and "Traceback" not in bad.output
