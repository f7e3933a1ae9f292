"""End to end: a real `fnsft train` LoRA run → `fnsft export --merge --gguf f32` → logits identical to the merge."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fnsft.cli import app


@pytest.fixture
def trained_run(tmp_path, tiny_llama_dir):
    import json

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1)}) + "\n" for i in range(16)))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "--model_name_or_path", str(tiny_llama_dir), "--dataset_name_or_path", str(data),
        "--output_dir", str(out), "--max_steps", "3", "--learning_rate", "1e-2", "--no-gradient-checkpointing",
    ])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_train_then_export_gguf_round_trips(trained_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = CliRunner().invoke(app, ["export", str(trained_run), "--merge", "--gguf", "f32"])
    assert result.exit_code == 0, result.output
    exports = trained_run / "exports"
    gguf = next(exports.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(exports / "merged")
    ids = tokenizer("12+1=", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(exports / "merged", dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(exports, gguf_file=gguf.name, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(merged(ids).logits, loaded(ids).logits)
