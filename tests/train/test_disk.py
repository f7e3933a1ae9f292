"""The disk a run needs, predicted from what it will serialize, against what real saves and a real run write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fnsft.cli import app
from fnsft.recipe.schema import Recipe
from fnsft.train.disk import SaveSizes, optimizer_file_bytes, predict_disk, saved_weights_bytes, tokenizer_bytes


def on_disk(root: Path) -> int:
    """Bytes the files under root take on the filesystem (allocated blocks, what free space loses)."""
    return sum(f.stat().st_blocks * 512 for f in root.rglob("*") if f.is_file())


def _saved(model, directory: Path) -> int:
    model.save_pretrained(directory)
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


@pytest.mark.parametrize("case", ["full", "lora", "lora-resized-vocabulary"])
def test_weights_and_optimizer_state_are_predicted_from_what_is_serialized(tiny_llama_dir, tmp_path, case):
    """A resized vocabulary makes PEFT save both embedding matrices beside the adapter (save_embedding_layers
    "auto"): the prediction follows the state dict that save_pretrained writes, so it sees them too."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    if case == "lora-resized-vocabulary":
        model.resize_token_embeddings(vocab + 64)
    if case != "full":
        model = get_peft_model(model, LoraConfig(r=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    predicted, written = saved_weights_bytes(model, case != "full"), _saved(model, tmp_path / "saved")
    assert written <= predicted <= written + 256  # exact but for the JSON header's digits
    if case == "lora-resized-vocabulary":
        assert written > 2 * (vocab + 64) * hidden * 4  # embed_tokens and the tied lm_head, each written

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    written = (tmp_path / "optimizer.pt").stat().st_size
    assert written <= optimizer_file_bytes("adamw_torch", model) <= 1.2 * written


def test_tokenizer_files_are_measured(tiny_llama_dir):
    from transformers import AutoTokenizer

    measured = tokenizer_bytes(AutoTokenizer.from_pretrained(tiny_llama_dir))
    source = sum(f.stat().st_size for f in tiny_llama_dir.glob("*") if f.name.startswith(("tokenizer", "chat_")))
    assert source <= measured <= source + 3 * 4096  # each file rounded up to a block


def _recipe(**training) -> Recipe:
    return Recipe.model_validate({"model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"},
                                  "training": {"logging_steps": 1, **training}}).resolved()


def test_the_peak_holds_one_checkpoint_more_than_the_limit_during_a_rotation():
    sizes = SaveSizes(weights=10 << 20, optimizer=20 << 20, tokenizer=4 << 20)
    rotating = predict_disk(_recipe(max_steps=10, save_steps=2, save_total_limit=2), sizes, train_rows=100)
    assert rotating.saves == 5 and rotating.checkpoints_at_peak == 3
    assert rotating.peak == 3 * rotating.checkpoint  # more than 2 checkpoints and the (smaller) final adapter
    unlimited = predict_disk(_recipe(max_steps=10, save_steps=2, save_total_limit=None), sizes, train_rows=100)
    assert unlimited.peak == 5 * unlimited.checkpoint + unlimited.final
    uneven = predict_disk(_recipe(max_steps=9, save_steps=4, save_total_limit=None), sizes, train_rows=100)
    assert uneven.saves == 3  # steps 4, 8 and the end of training


@pytest.mark.parametrize("method", ["lora", "full"])
def test_predicted_disk_covers_what_a_real_run_writes(tiny_recipe, tmp_path, monkeypatch, method):
    """A real run with three saves and save_total_limit 1: the disk peaks while the trainer has written a
    checkpoint and not yet deleted the older one, measured there (just before each rotation) and at the end."""
    import transformers.trainer as hf_trainer

    run = tmp_path / "run"
    sizes: list[int] = []
    rotate = hf_trainer.rotate_checkpoints

    def measured_rotation(*args, **kwargs):
        sizes.append(on_disk(run))
        return rotate(*args, **kwargs)

    monkeypatch.setattr(hf_trainer, "rotate_checkpoints", measured_rotation)
    result = CliRunner().invoke(app, ["train", str(tiny_recipe(f"method:\n  name: {method}\n")), "--max_steps", "6",
                                      "--set", "training.save_total_limit=1"])
    assert result.exit_code == 0, result.output
    sizes.append(on_disk(run))
    assert len(sizes) == 4 and len(list((run / "checkpoints").glob("checkpoint-*"))) == 1
    predicted = json.loads((run / "manifest.json").read_text())["disk"]["predicted"]
    assert predicted["checkpoints_at_peak"] == 2
    actual = max(sizes)
    assert actual <= predicted["peak"] <= 1.3 * actual, (actual, predicted)
