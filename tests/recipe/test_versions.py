"""Schema upgrades: the v0 (predecessor flat flag YAML) → v1 table, the upgrade chain, and load_recipe through it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ruamel.yaml.comments import CommentedMap

from fnsft.errors import RecipeError
from fnsft.recipe import versions
from fnsft.recipe.fields import FLAG_PATHS
from fnsft.recipe.load import load_recipe, parse_yaml_file
from fnsft.recipe.roundtrip import dump
from fnsft.recipe.schema import CURRENT_VERSION
from fnsft.recipe.versions import KeyChange, KeyStatus, detect_version, plan_upgrade, upgrade, v0_rules

GOLDEN_V0 = sorted((Path(__file__).parent / "golden" / "v0").glob("*.yaml"))


@pytest.mark.parametrize("path", GOLDEN_V0, ids=lambda p: p.stem)
def test_every_v0_golden_loads_and_reports_its_unmapped_keys(path, caplog):
    raw = parse_yaml_file(path)
    with caplog.at_level(logging.WARNING, logger="fnsft.recipe.versions"):
        recipe = load_recipe(path)
    result = plan_upgrade(raw, str(path))
    assert result.from_version == 0 and recipe.version == CURRENT_VERSION
    reported = {change.old for change in result.changes}
    assert reported == set(raw) - {"version"}  # every key is accounted for, none silently dropped
    lost = [c for c in result.unmapped if c.value not in (None, False)]
    assert lost, "each golden v0 file has at least one key without an equivalent"
    for change in lost:
        assert change.old in caplog.text
    assert "fnsft migrate-config" in caplog.text  # the warning says how to save the upgraded file


def test_v0_values_land_in_the_right_places():
    recipe = load_recipe(GOLDEN_V0[[p.stem for p in GOLDEN_V0].index("full_finetuning_config")])
    assert recipe.method.name == "full"
    assert recipe.training.learning_rate == 5e-5  # the predecessor's string "5e-5" is a float again
    assert (recipe.training.per_device_train_batch_size, recipe.training.gradient_accumulation_steps) == (2, 2)
    assert recipe.output.report_to == ["wandb"] and recipe.output.run_name == "full-ft"
    assert recipe.mask is not None and recipe.mask.mode == "lesion" and recipe.mask.components == [0, 1]


def test_predecessor_quantization_rules():
    both = versions.v0_to_v1({"model_name_or_path": "m", "use_4bit": True, "use_8bit": True}, "f")
    assert both[0]["method"]["name"] == "qlora" and both[0]["method"]["quantization"]["bits"] == 8  # 8-bit won
    full = versions.v0_to_v1({"model_name_or_path": "m", "no_peft": True, "use_4bit": True}, "f")
    assert full[0]["method"]["name"] == "full" and "quantization" not in full[0]["method"]
    assert any(c.old == "use_4bit" and c.status == KeyStatus.REMOVED for c in full[1])


def test_every_guide_flag_is_in_the_v0_table_from_flag_paths():
    rules = v0_rules()
    for flag, path in FLAG_PATHS.items():
        assert flag in rules and rules[flag].new == path


def test_unknown_v0_key_gets_a_did_you_mean():
    _, changes = versions.v0_to_v1({"model_name_or_path": "m", "learnig_rate": 1e-4}, "f")
    unknown = next(c for c in changes if c.old == "learnig_rate")
    assert unknown.status == KeyStatus.UNKNOWN and "learning_rate" in unknown.note


def test_unmappable_value_is_a_clear_error_with_file_and_line(tmp_path):
    bad = tmp_path / "old.yaml"
    bad.write_text("model_name_or_path: m\ndataset_name_or_path: d\ntorch_dtype: float64\n")
    with pytest.raises(RecipeError, match=r"old\.yaml:3: torch_dtype: .*float64.* no equivalent"):
        load_recipe(bad)


@pytest.mark.parametrize(
    ("data", "version"),
    [
        ({"version": 1, "model": {}}, 1),
        ({"model": {"name_or_path": "m"}}, CURRENT_VERSION),  # un-versioned with sections: current
        ({"model_name_or_path": "m", "lora_r": 8}, 0),  # un-versioned flat flags: the predecessor's
        ({"version": 0, "model_name_or_path": "m"}, 0),
        ({"something": 1}, CURRENT_VERSION),  # unknown: validation reports it with did-you-mean
    ],
)
def test_detect_version(data, version):
    assert detect_version(data, "f") == version


@pytest.mark.parametrize("bad", [7, -1, "one", 1.5, True])
def test_unsupported_versions_are_refused(bad):
    with pytest.raises(RecipeError, match="version"):
        upgrade({"version": bad}, "f.yaml")


def test_the_chain_runs_every_step_in_order():
    """The mechanism with made-up steps v1→v2→v3: each step sees the previous one's output."""

    def step(version):
        def run(data, source):
            return {**data, "version": version + 1, f"by_{version}": True}, [
                KeyChange(old=f"k{version}", status=KeyStatus.MOVED, new=[f"k{version + 1}"])]
        return run

    result = plan_upgrade({"version": 1}, "f", steps={1: step(1), 2: step(2)}, target=3)
    assert result.data == {"version": 3, "by_1": True, "by_2": True}
    assert [c.old for c in result.changes] == ["k1", "k2"]
    with pytest.raises(RecipeError, match="not supported"):
        plan_upgrade({"version": 0}, "f", steps={1: step(1)}, target=2)


def test_current_version_passes_through_untouched():
    data = CommentedMap({"version": 1, "model": {"name_or_path": "m"}})
    assert upgrade(data, "f") == (data, [])


def test_v0_comments_follow_their_keys():
    path = next(p for p in GOLDEN_V0 if p.stem == "peft_training_config")
    data, _ = versions.v0_to_v1(parse_yaml_file(path), str(path))
    text = dump(data)
    assert text.startswith("# PEFT training configuration")  # the header stays on top
    assert "    # LoRA\n    r: 16" in text  # the line above lora_r is now above method.lora.r
    assert "base model" in text.split("name_or_path:")[1].split("\n")[0]  # end-of-line comments move too
    assert "upgraded from model_name_or_path" in text


def test_errors_point_at_the_old_keys_line_after_an_upgrade(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model_name_or_path: m\ndataset_name_or_path: d\n# rank\nlora_r: -1\n")
    with pytest.raises(RecipeError, match=r"old\.yaml:4: method\.lora\.r: Input should be greater than 0"):
        load_recipe(old)


def test_an_override_that_adds_a_key_still_gets_a_clear_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: m\ndata:\n  path: d\ntraining:\n  seed: 1\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:5: training\.weight_decay"):
        load_recipe(recipe, sets=["training.weight_decay=-1"])  # a key added in memory has no line of its own
