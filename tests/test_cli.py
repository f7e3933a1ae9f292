"""The CLI shell: all subcommands listed, fast start without heavy imports, env, recipe schema/validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "bitsandbytes")

PROBE = """
import sys
from typer.testing import CliRunner
from fnsft.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(result.exit_code, ','.join(heavy))
"""


def _heavy_modules_after(*args: str) -> tuple[int, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.strip().splitlines()[-1]
    code, _, modules = out.partition(" ")
    return int(code), modules


def test_help_lists_all_six_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("estimate", "train", "migrate-config", "mask", "export", "push"):
        assert name in result.output


@pytest.mark.parametrize("args", [("--help",), ("estimate", "recipes/full-7b.yaml"), ("train", "--help")])
def test_fast_paths_import_no_heavy_library(args):
    code, modules = _heavy_modules_after(*args)
    assert code == 0
    assert modules == "", f"imported {modules}"


def test_recipe_schema_and_validate():
    schema = runner.invoke(app, ["recipe", "schema"])
    assert schema.exit_code == 0 and json.loads(schema.output)["title"] == "Recipe"
    shipped = sorted(str(p) for p in (ROOT / "recipes").glob("*.yaml"))
    assert runner.invoke(app, ["recipe", "validate", *shipped]).exit_code == 0


def test_recipe_validate_reports_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel: {name_or_path: m}\ndata: {path: d}\ntrainig: {}\n")
    result = runner.invoke(app, ["recipe", "validate", str(bad)])
    assert result.exit_code == 2 and "did you mean 'training'" in result.output


def test_env_reports_versions_as_json():
    result = runner.invoke(app, ["env", "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["packages"]["trl"] and "cuda_available" in info["devices"]


def test_env_prints_a_table_one_package_per_row():
    import re

    result = runner.invoke(app, ["env"], env={"COLUMNS": "100"})
    info = json.loads(runner.invoke(app, ["env", "--json"]).output)
    assert result.exit_code == 0 and "{" not in result.output  # no raw JSON blob
    for name, version in info["packages"].items():
        assert re.search(rf"│\s+{re.escape(name)}\s+│\s+{re.escape(version)}\s+│", result.output), name
