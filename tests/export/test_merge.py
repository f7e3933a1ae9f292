"""Shard-wise LoRA merge: equal to PEFT's in-memory merge, sharded, in the base dtype, refusing what it cannot do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from export_runs import compare_logits, prompt_logits, reference_merged_model
from transformers import AutoModelForCausalLM

from fnsft.errors import ExportError, NotYetSupported
from fnsft.export.merge import merge_lora, plan_shards, weight_entries


def test_shard_merge_equals_peft_merge_and_unload(small_run_factory, tmp_path):
    run, base = small_run_factory("llama")
    target = tmp_path / "merged"
    files = merge_lora(base, run.adapter, target, max_shard_bytes=64 * 1024)
    names = {f.path.name for f in files}
    index = json.loads((target / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and shards <= names  # really sharded, and the index names the files written
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    merged = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    expected = prompt_logits(reference_merged_model(run, base), run.adapter)
    measured = compare_logits(expected, prompt_logits(merged, target))
    assert measured["max_abs_error"] < 1e-5
    base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    assert compare_logits(expected, prompt_logits(base_model, base))["max_abs_error"] > 1e-2  # the adapter mattered


def test_merge_keeps_the_base_dtype(small_run_factory, tmp_path):
    run, base = small_run_factory("llama")
    bf16_base = tmp_path / "base-bf16"
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(bf16_base)
    shutil.copy(base / "tokenizer.json", bf16_base / "tokenizer.json")
    shutil.copy(base / "tokenizer_config.json", bf16_base / "tokenizer_config.json")
    target = tmp_path / "merged"
    merge_lora(bf16_base, run.adapter, target)
    from safetensors import safe_open

    with safe_open(str(target / "model.safetensors"), framework="pt") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118
        q_proj = handle.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert dtypes == {"BF16"}
    with safe_open(str(bf16_base / "model.safetensors"), framework="pt") as handle:
        assert not torch.equal(q_proj, handle.get_tensor("model.layers.0.self_attn.q_proj.weight"))


def test_adapter_of_another_base_is_refused_and_nothing_is_left(small_run_factory, tmp_path):
    with pytest.raises(ExportError, match="does not match the base"):
        merge_lora(small_run_factory("gemma")[1], small_run_factory("llama")[0].adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    assert not any(tmp_path.iterdir())  # the staging directory was removed too


def test_dora_adapters_are_refused_with_a_message(small_run_factory, tmp_path):
    run, base = small_run_factory("llama")
    adapter = tmp_path / "adapter"
    shutil.copytree(run.adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(NotYetSupported, match="DoRA"):
        merge_lora(base, adapter, tmp_path / "merged")


def test_plan_shards_respects_the_limit(small_run_factory):
    entries = weight_entries(small_run_factory("qwen2")[1])
    shards = plan_shards(entries, 64 * 1024)
    assert [e.name for shard in shards for e in shard] == [e.name for e in entries]
    biggest = max(e.nbytes for e in entries)
    assert all(sum(e.nbytes for e in shard) <= max(64 * 1024, biggest) for shard in shards)
