"""Several datasets in one run: the mixing plan, and a real run mixed 3:1 by tokens on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fnsft.data.mix import plan, shares
from fnsft.errors import DataError, RecipeError
from fnsft.recipe.load import load_recipe


def test_proportional_by_tokens_meets_the_shares():
    counts = [[10 + (i % 7) for i in range(300)], [30 + (i % 11) for i in range(100)]]
    picked = plan(counts, [3, 1], mode="proportional", seed=0)
    totals = [sum(counts[s][j] for j in rows) for s, rows in enumerate(picked)]
    assert totals[0] / sum(totals) == pytest.approx(0.75, abs=0.01)
    assert picked == plan(counts, [3, 1], mode="proportional", seed=0)  # seeded: the same rows every time
    assert picked != plan(counts, [3, 1], mode="proportional", seed=1)


def test_a_small_source_is_repeated_and_a_large_one_thinned_never_silently():
    counts = [[1] * 40, [1] * 400]  # rows: source 0 must grow to half of 440, source 1 shrink to the other half
    small, large = plan(counts, [1, 1], mode="proportional", seed=3)
    assert len(small) == 220 and len(large) == 220
    assert len(set(small)) == 40  # every row of the small source used, 5.5 times on average
    assert max(small.count(row) for row in set(small)) - min(small.count(row) for row in set(small)) <= 1
    assert len(set(large)) == 220  # the large source leaves 180 rows out (reported as unused_rows)


def test_a_source_that_counts_for_nothing_gets_no_rows():
    assert plan([[0, 0], [3, 4]], [1, 1], mode="proportional", seed=0)[0] == []


def test_temperature_and_concat():
    sizes = [100, 900]
    assert shares([1, 1], sizes, "temperature", 1.0) == pytest.approx([0.1, 0.9])
    flat = shares([1, 1], sizes, "temperature", 1e9)
    assert flat == pytest.approx([0.5, 0.5], abs=1e-6)
    picked = plan([[1] * 100, [1] * 900], [5, 1], mode="concat", seed=0)
    assert [sorted(rows) for rows in picked] == [list(range(100)), list(range(900))]


def _rows(prefix: str, n: int, words: int) -> list[dict]:
    return [{"instruction": f"{prefix} question {i}", "input": "", "output": " ".join([f"{prefix}{i}"] * words)}
            for i in range(n)]


def _mixed_recipe(tmp_path: Path, tiny_llama_dir: Path, out: str, weights=(3, 1)) -> Path:
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["instruction"]},
                                                     {"role": "assistant", "content": r["output"]}]}) + "\n"
                            for r in _rows("c", 60, 3)))
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in _rows("a", 60, 6)))
    recipe = tmp_path / f"{out}.yaml"
    recipe.write_text(f"""version: 1
model:
  name_or_path: {tiny_llama_dir}
data:
  sources:
    - {{path: {chat}, weight: {weights[0]}}}
    - {{path: {alpaca}, weight: {weights[1]}, name: instructions}}
  mix: proportional
  mix_by: tokens
  validation_fraction: 0.2
  max_length: 64
training:
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1.0e-2
  logging_steps: 1
  save_steps: 3
  gradient_checkpointing: false
output:
  dir: {tmp_path / out}
""")
    return recipe


def test_a_mixed_run_trains_the_requested_shares_twice_the_same(tiny_llama_dir, tmp_path):
    from fnsft.train.run import run_training

    runs = [run_training(load_recipe(_mixed_recipe(tmp_path, tiny_llama_dir, name))) for name in ("mix-a", "mix-b")]
    manifests = [json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("mix-a", "mix-b")]
    assert manifests[0]["weights_sha256"] == manifests[1]["weights_sha256"]  # bitwise the same weights
    sources = manifests[0]["dataset"]["sources"]
    assert [s["name"] for s in sources] == ["chat", "instructions"]
    assert sources[0]["requested_share"] == pytest.approx(0.75)
    assert sources[0]["realised_share"] == pytest.approx(0.75, abs=0.01)
    assert sources[0]["format"] == "messages" and sources[1]["format"] == "alpaca"
    assert sources[0]["repeated_rows"] > 0 and sources[1]["unused_rows"] > 0  # chat's rows are shorter: repeated
    assert sources[0]["eval_rows"] == 12 and sources[1]["eval_rows"] == 12  # held out per source
    metrics = json.loads((tmp_path / "mix-a" / "metrics.json").read_text())
    assert set(metrics["eval_loss_before_by_source"]) == {"chat", "instructions"}
    assert set(metrics["eval_loss_after_by_source"]) == {"chat", "instructions"}
    assert runs[0].metrics["eval_loss_after_by_source"] == runs[1].metrics["eval_loss_after_by_source"]


def test_bad_mixtures_name_the_source(tiny_llama_dir, tmp_path):
    recipe = _mixed_recipe(tmp_path, tiny_llama_dir, "bad")
    with pytest.raises(RecipeError, match="weight"):
        load_recipe(recipe, sets=["data.sources=[{path: a.jsonl, weight: 0}]"])
    with pytest.raises(RecipeError, match="data.path .* or data.sources"):
        load_recipe(recipe, sets=[f"data.path={tmp_path / 'chat.jsonl'}"])
    (tmp_path / "empty.jsonl").write_text("")
    from fnsft.data.prepare import prepare_datasets
    from fnsft.models import load_tokenizer, resolve_model
    from fnsft.recipe.schema import ModelSection

    tokenizer = load_tokenizer(resolve_model(ModelSection(name_or_path=str(tiny_llama_dir))),
                               ModelSection(name_or_path=str(tiny_llama_dir)))
    broken = load_recipe(recipe, sets=[f"data.sources=[{{path: {tmp_path / 'chat.jsonl'}}}, "
                                       f"{{path: {tmp_path / 'empty.jsonl'}, name: nothing}}]"])
    with pytest.raises(DataError, match=r"data.sources\[1\] \(nothing\)"):
        prepare_datasets(broken.data, tokenizer, seed=0)
