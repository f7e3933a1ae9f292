"""Worst batch first: the trainer's first micro-batch is the longest, the order is seeded, and --probe measures it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.train.order import LongestBatchFirstSampler, longest_batch_first_trainer, longest_first

runner = CliRunner()


def test_longest_first_moves_the_longest_rows_to_the_front_and_keeps_the_rest_in_order():
    lengths = [5, 9, 2, 9, 7, 1]
    assert longest_first([0, 1, 2, 3, 4, 5], lengths, first=3) == [1, 3, 4, 0, 2, 5]
    assert longest_first([5, 4, 3, 2, 1, 0], lengths, first=2) == [3, 1, 5, 4, 2, 0]


def test_sampler_is_a_seeded_permutation_per_epoch():
    lengths = list(range(50))
    sampler = LongestBatchFirstSampler(lengths, first=4, seed=7)
    first = list(sampler)
    assert sorted(first) == lengths and first[:4] == [49, 48, 47, 46]
    assert list(LongestBatchFirstSampler(lengths, first=4, seed=7)) == first  # same seed, same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second[:4] == first[:4] and second != first  # a new shuffle behind the same worst batch


def _varied_rows(n: int = 24) -> list[dict]:
    """Answers of very different lengths, so the batches differ in tokens; the longest rows are scattered."""
    return [{"instruction": f"Count to {k}.", "output": " ".join(str(i) for i in range(1, (k * 7) % 23 + 2))}
            for k in range(n)]


@pytest.fixture
def varied_recipe(tmp_path, tiny_llama_dir):
    data = tmp_path / "varied.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _varied_rows()))

    def make(out: str, extra: str = "") -> str:
        path = tmp_path / f"{out}.yaml"
        path.write_text(f"""version: 1
model:
  name_or_path: {tiny_llama_dir}
data:
  path: {data}
  validation_fraction: 0
  max_length: 128
training:
  num_train_epochs: 1
  per_device_train_batch_size: 4
  learning_rate: 1.0e-2
  logging_steps: 1
  save_steps: 100
  gradient_checkpointing: false
{extra}output:
  dir: {tmp_path / out}
""")
        return str(path)

    return make


@pytest.fixture
def received_batches(monkeypatch):
    """Tokens (non-padding) and padded length of every micro-batch the trainer's training_step is given."""
    from trl import SFTTrainer

    seen: list[tuple[int, int]] = []
    for cls in (longest_batch_first_trainer(), SFTTrainer):
        original = cls.__dict__.get("training_step") or SFTTrainer.training_step

        def recording(self, model, inputs, *args, _original=original, **kwargs):
            mask = inputs.get("attention_mask")
            tokens = int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            seen.append((tokens, inputs["input_ids"].shape[1]))
            return _original(self, model, inputs, *args, **kwargs)

        monkeypatch.setattr(cls, "training_step", recording)
    return seen




def test_first_optimizer_step_sees_the_longest_batch(varied_recipe, received_batches, tmp_path):
    result = runner.invoke(app, ["train", varied_recipe("ordered")])
    assert result.exit_code == 0, result.output
    assert len(received_batches) == 6  # 24 rows / 4 per micro-batch, one epoch
    tokens = [t for t, _ in received_batches]
    lengths = [length for _, length in received_batches]
    assert tokens[0] == max(tokens) and lengths[0] == max(lengths)
    assert tokens[0] > sorted(tokens)[-2]  # strictly heaviest: the data makes the top-4 rows stand out

    received_batches.clear()
    plain = runner.invoke(app, ["train", varied_recipe("plain", "  longest_batch_first: false\n")])
    assert plain.exit_code == 0, plain.output
    plain_tokens = [t for t, _ in received_batches]
    assert sorted(plain_tokens) != sorted(tokens), (plain_tokens, tokens)  # a different order: the reordering acts


def test_same_recipe_and_seed_give_bitwise_the_same_weights_with_reordering(varied_recipe, tmp_path):
    hashes = []
    for out in ("first", "second"):
        result = runner.invoke(app, ["train", varied_recipe(out)])
        assert result.exit_code == 0, result.output
        hashes.append(json.loads((tmp_path / out / "manifest.json").read_text())["weights_sha256"])
    assert hashes[0] == hashes[1]


def test_probe_prints_measured_vs_predicted_and_leaves_no_run(varied_recipe, tmp_path):
    result = runner.invoke(app, ["train", varied_recipe("probed"), "--probe"])
    assert result.exit_code == 0, result.output
    assert "probe: 1 optimizer step (forward + backward + optimizer) on the longest micro-batch" in result.output
    line = next(text for text in result.output.splitlines() if "peak RSS (process)" in text)
    measured = float(line.split("measured ")[1].split(" GiB")[0])
    predicted = float(line.split("predicted ")[1].split(" GiB")[0])
    assert measured > 0.3 and predicted > 0.3  # a real process: torch + transformers alone are ~0.5 GiB
    assert not (tmp_path / "probed").exists()
    assert "warmup" not in result.output  # its one step is not a one-step warmup at learning rate 0


def test_out_of_memory_names_the_step_the_breakdown_and_what_makes_it_fit():
    from fnsft.recipe.schema import Recipe
    from fnsft.train.oom import out_of_memory_error

    recipe = Recipe(model={"name_or_path": "meta-llama/Llama-3.1-8B"}, data={"path": "train.jsonl"},
                    method={"name": "full"}).resolved()
    error = out_of_memory_error(recipe, 0, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                budget=24 * 1024**3)
    text = str(error)
    assert text.startswith("out of GPU memory in the first step (the longest batch goes first): CUDA out of memory")
    assert "optimizer_states" in text and "device used" in text and "of 24.00 GiB" in text
    assert "to make it fit (cheapest first):" in text and "QLoRA" in text
    assert error.exit_code == 2
