"""The top-level handler: an FnsftError is one line and exit 2, anything else one line and exit 1 with a pointer
to --traceback; --traceback / FNSFT_TRACEBACK=1 show the exception an FnsftError replaced."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fnsft.cli import TRACEBACK_ENV, app
from fnsft.errors import ExitStatus, FnsftError


@pytest.fixture(autouse=True)
def no_traceback_env(monkeypatch):
    monkeypatch.setenv(TRACEBACK_ENV, "0")  # undone after the test, also when --traceback set it to 1


def test_exit_status_values():
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 130, 143]
    assert FnsftError("x").exit_code == ExitStatus.BAD_INPUT == 2


def _explode(*args, **kwargs):
    raise RuntimeError("boom\nsecond line")


def test_unexpected_exception_is_one_line_exit_1(monkeypatch, tmp_path):
    monkeypatch.setattr("fnsft.recipe.load.load_recipe", _explode)
    result = CliRunner().invoke(app, ["recipe", "show", str(tmp_path / "r.yaml")])
    assert result.exit_code == ExitStatus.UNEXPECTED
    assert "unexpected RuntimeError: boom (run with --traceback for details)" in " ".join(result.output.split())
    assert "Traceback" not in result.output and "second line" not in result.output


@pytest.mark.parametrize("how", ["flag", "env"])
def test_traceback_shows_the_hidden_library_exception(monkeypatch, tmp_path, how):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: {name_or_path: m}\ndata: {path: d}\ntraining: {seed: -1}\n")
    args = ["recipe", "show", str(bad)]
    if how == "flag":
        args.append("--traceback")
    else:
        monkeypatch.setenv(TRACEBACK_ENV, "1")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" in result.output and "pydantic_core._pydantic_core.ValidationError" in result.output
    assert "which fnsft reported as:" in result.output
