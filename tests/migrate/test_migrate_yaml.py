"""migrate-config on real files: golden outputs, comments and key order kept, every changed line commented.

Golden files live in tests/recipe/golden/expected/. After a deliberate rule change, regenerate them with
``FNSFT_UPDATE_GOLDEN=1 python -m pytest tests/migrate/test_migrate_yaml.py`` and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from fnsft.errors import RecipeError
from fnsft.migrate.files import migrate_file, upgrade_file
from fnsft.migrate.rules import AlreadyMigrated, StaleComments, effective_batch, format_value
from fnsft.recipe.load import load_recipe, validate

GOLDEN = Path(__file__).parents[1] / "recipe" / "golden"
SHIPPED = Path(__file__).parents[2] / "recipes"
RECIPES = sorted(SHIPPED.glob("*.yaml"))
V1_SOURCES = sorted((GOLDEN / "v1").glob("*.yaml"))
V0_SOURCES = sorted((GOLDEN / "v0").glob("*.yaml"))
TARGETS = ("full", "peft", "qlora")


def _check_golden(name: str, text: str) -> None:
    expected = GOLDEN / "expected" / name
    if os.environ.get("FNSFT_UPDATE_GOLDEN"):
        expected.write_text(text, encoding="utf-8")
    assert expected.is_file(), f"missing golden {expected}; run with FNSFT_UPDATE_GOLDEN=1 and review it"
    assert text == expected.read_text(encoding="utf-8")


def _migrate_or_skip(path: Path, to: str):
    try:
        return migrate_file(path, to, command=f"fnsft migrate-config {path.name} --to {to}")
    except AlreadyMigrated:
        return None


@pytest.mark.parametrize("source", V1_SOURCES + V0_SOURCES, ids=lambda p: f"{p.parent.name}/{p.stem}")
@pytest.mark.parametrize("to", TARGETS)
def test_golden_migrations(source, to, monkeypatch):
    monkeypatch.chdir(source.parent)  # the header names the source as given: keep it relative and stable
    result = _migrate_or_skip(Path(source.name), to)
    if result is None:
        assert load_recipe(source.name).method.name == {"peft": "lora"}.get(to, to)
        return
    _check_golden(f"{source.parent.name}-{source.stem}-to-{to}.yaml", result.text)


@pytest.mark.parametrize("source", V0_SOURCES, ids=lambda p: p.stem)
def test_golden_upgrades(source, monkeypatch):
    monkeypatch.chdir(source.parent)
    result = upgrade_file(Path(source.name), command=f"fnsft migrate-config {source.name} --upgrade")
    assert result.upgrade is not None and result.upgrade.from_version == 0
    _check_golden(f"v0-{source.stem}-upgrade.yaml", result.text)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_shipped_recipe_migrates_both_ways(recipe):
    original = load_recipe(recipe)
    for to in TARGETS:
        result = _migrate_or_skip(recipe, to)
        if result is None:
            continue
        reread = validate(YAML(typ="rt").load(result.text), f"{recipe} → {to}")
        assert reread == result.recipe
        assert effective_batch(reread) == effective_batch(original)


def test_comments_and_key_order_are_kept(tmp_path):
    source = GOLDEN / "v1" / "peft-7b.yaml"
    result = migrate_file(source, "full", command="fnsft migrate-config peft-7b.yaml --to full")
    user_comments = [c for c in re.findall(r"#\s*([^#\n]+?)\s*$", source.read_text(), re.M)]
    removed_with_sections = {"attention only", "4-bit base for memory efficiency"}  # lora/quantization are dropped
    for comment in set(user_comments) - removed_with_sections:
        assert comment in result.text, comment
    keys = [line.split(":")[0].strip() for line in result.text.splitlines() if re.match(r"^\s*[a-z_]+:", line)]
    original = [line.split(":")[0].strip() for line in source.read_text().splitlines() if re.match(r"^\s*[a-z_]+:", line)]
    kept = [k for k in keys if k in original]
    assert kept == [k for k in original if k in kept]  # the user's keys keep their order
    assert result.text.index("# where the run goes") < result.text.index("output:")


def test_every_changed_line_is_commented_and_the_header_names_source_and_command():
    result = migrate_file(GOLDEN / "v1" / "peft-7b.yaml", "full", command="fnsft migrate-config peft-7b.yaml --to full")
    lines = result.text.splitlines()
    assert lines[0].startswith("# fnsft migrate-config: lora → full from ") and "peft-7b.yaml" in lines[0]
    assert "made by `fnsft migrate-config peft-7b.yaml --to full`" in lines[1]
    for change in result.changes:
        leaf = change.path.split(".")[-1]
        if change.action == "remove":
            assert f"removed {leaf}:" in result.text
            continue
        line = next(line for line in lines if line.strip().startswith(f"{leaf}:"))
        assert f"was {format_value(change.old)}" in line and change.reason in line, line
    lr_line = next(line for line in lines if "learning_rate:" in line)
    # the user's comment described the old value: it is quoted after it, not left to describe the new one
    assert re.search(r'learning_rate: 2\.0e-5 +# was 2\.0e-4 — "guide: 1e-4\.\.5e-4 for PEFT"; full fine-tuning: '
                     r"lr ÷10 \(guide", lr_line)
    assert lr_line.count("#") == 1


def test_migrating_twice_replaces_the_notes_instead_of_piling_them_up(tmp_path):
    once = tmp_path / "full.yaml"
    once.write_text(migrate_file(GOLDEN / "v1" / "peft-7b.yaml", "full", command="c1").text)
    back = migrate_file(once, "peft", command="c2").text
    assert back.count("fnsft migrate-config:") == 2  # a fresh header, not the first run's too
    assert "describes the source" not in back  # the kept header names no full fine-tuning: nothing to mark
    assert back.count("fnsft migrate-config: made by") == 1
    assert "c1" not in back
    assert back.count("# was ") == sum(1 for line in back.splitlines() if "# was " in line)  # one note per line
    assert "full fine-tuning" not in back.replace("back from full", "")


def test_upgrade_of_a_current_file_reports_nothing_to_do():
    assert upgrade_file(GOLDEN / "v1" / "full-1b.yaml", command="c").upgrade is None


def test_invalid_recipe_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodel:\n  name_or_path: m\ndata:\n  path: d\ntraining:\n  learning_rate: -1\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml:7: training\.learning_rate"):
        migrate_file(bad, "full", command="c")
    unknown = tmp_path / "future.yaml"
    unknown.write_text("version: 7\nmodel:\n  name_or_path: m\n")
    with pytest.raises(RecipeError, match=r"future\.yaml:1: recipe version 7 is not supported"):
        migrate_file(unknown, "full", command="c")


def test_untouched_values_keep_their_exact_value(tmp_path):
    """ruamel alone re-spells 5.960464477539063e-08 as ...062e-08; a migration must not change untouched values."""
    source = tmp_path / "r.yaml"
    source.write_text("model: {name_or_path: m}\ndata: {path: d}\ntraining:\n  weight_decay: 5.960464477539063e-08\n"
                      "  max_grad_norm: 0.30000000000000004\n")
    result = migrate_file(source, "qlora", command="c")
    assert result.recipe.training.weight_decay == 5.960464477539063e-08
    assert "max_grad_norm: 0.30000000000000004" in result.text


def test_the_source_header_is_marked_as_the_source_recipes_after_a_method_change():
    result = migrate_file(GOLDEN / "v1" / "peft-7b.yaml", "full", command="c")
    lines = result.text.splitlines()
    assert lines[2] == "# fnsft migrate-config: the next line describes the source lora recipe (peft-7b.yaml), not this full one"
    assert lines[3] == "# LoRA on a 7B model, the guide's PEFT best practices."
    qlora = migrate_file(GOLDEN / "v1" / "peft-7b.yaml", "qlora", command="c").text  # LoRA is still true of QLoRA
    assert "describes the source" not in qlora and "# LoRA on a 7B model" in qlora


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_no_comment_of_a_shipped_recipe_is_left_describing_a_value_or_method_it_no_longer_has(recipe):
    """Every direction on recipes/*.yaml: a changed line's comment is quoted after its old value; a kept line
    naming the source's method is marked; every header line naming the source's method or file is announced."""
    source_method = load_recipe(recipe).method.name
    for to in TARGETS:
        result = _migrate_or_skip(recipe, to)
        if result is None:
            continue
        stale = StaleComments(source_method, result.recipe.method.name, recipe.name)
        lines = result.text.splitlines()
        changed = {c.path.split(".")[-1] for c in result.changes if c.action == "set" and c.changes_value}
        announced = False
        for line in lines:
            if line.startswith("# fnsft migrate-config:"):
                announced = announced or "describe" in line
            elif line.startswith("#"):  # the user's header
                announced = announced and stale.names_source(line)
                assert announced or not stale.names_source(line), f"{recipe.name} → {to}: {line}"
            elif "#" in line:
                key, _, comment = line.partition("#")
                notes = comment.split("  # ")
                if key.strip().rstrip(":").split(":")[0] in changed:
                    assert len(notes) == 1 and notes[0].startswith(" was "), f"{recipe.name} → {to}: {line}"
                elif stale.names_source(notes[-1]) and not notes[-1].startswith(" was "):
                    assert notes[0].strip() == f"written for the source {source_method} recipe", line


def test_comments_of_a_full_recipe_migrated_to_peft(tmp_path):
    """The shipped full-7b.yaml → PEFT, line by line: what the user would have seen as false before the fix."""
    text = migrate_file(SHIPPED / "full-7b.yaml", "peft", command="c").text
    assert ('learning_rate: 2.0e-4             # was 2.0e-5 — "guide: lower learning rates for full fine-tuning '
            '(1e-5 to 1e-4)"; PEFT: lr ×10') in text
    assert ("save_total_limit: 2               # written for the source full recipe  # each full checkpoint is "
            "~14 GB") in text
    assert "# fnsft migrate-config: the next 4 lines describe the source full recipe (full-7b.yaml), not this lora one" in text
    assert "  dir: runs/lora-7b " in text  # not runs/peft-7b: recipes/peft-7b.yaml trains there


def test_the_output_dir_is_one_no_other_recipe_beside_it_uses_and_that_does_not_exist(tmp_path, monkeypatch):
    text = migrate_file(SHIPPED / "peft-7b.yaml", "full", command="c").text
    assert "  dir: runs/peft-7b-to-full " in text  # runs/full-7b is recipes/full-7b.yaml's run
    for name in ("peft-7b.yaml", "full-7b.yaml"):
        (tmp_path / name).write_text((SHIPPED / name).read_text())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "peft-7b-to-full").mkdir(parents=True)  # an earlier migrated run
    assert "  dir: runs/peft-7b-to-full-2 " in migrate_file("peft-7b.yaml", "full", command="c").text
    # the file being rewritten does not claim its own directory: migrating again gives the same answer
    (tmp_path / "peft-7b-full.yaml").write_text(migrate_file("peft-7b.yaml", "full", command="c").text)
    again = migrate_file("peft-7b.yaml", "full", command="c", output=tmp_path / "peft-7b-full.yaml").text
    assert "  dir: runs/peft-7b-to-full-2 " in again
    (tmp_path / "full-7b.yaml").unlink()
    assert "  dir: runs/full-7b " in migrate_file("peft-7b.yaml", "full", command="c").text  # free again
