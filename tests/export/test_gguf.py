"""GGUF export, verified by reading every file back (transformers' GGUF loader) and comparing logits.

The reference is PEFT's own merge of the run's adapter. Measured numbers are printed (`pytest -s`) for the report.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
from export_runs import PROMPTS, compare_logits, make_run_dir, prompt_logits, reference_merged_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fnsft.errors import ExportError
from fnsft.export.files import ensure_free_space
from fnsft.export.gguf_vocab import detect_pre_tokenizer
from fnsft.export.pipeline import export_run

#: (minimum argmax agreement, maximum |Δlogit|) per type; the tiny trained models' logits reach ~1.5.
THRESHOLDS = {"f16": (0.99, 5e-3), "bf16": (0.99, 5e-2), "q8_0": (0.99, 5e-2), "q4_0": (0.9, 0.5)}


def _gguf_logits(run, qtype: str):
    name = f"{run.root.name}-{qtype}.gguf"
    model = AutoModelForCausalLM.from_pretrained(run.exports, gguf_file=name, dtype=torch.float32).eval()
    return prompt_logits(model, run.adapter if run.adapter.is_dir() else run.model)


def _check_round_trip(expected, actual, qtype: str, label: str) -> None:
    measured = compare_logits(expected, actual)
    print(f"\n{label} {qtype}: {json.dumps(measured)}")
    if qtype == "f32":
        assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True)), measured
    else:
        min_agreement, max_error = THRESHOLDS[qtype]
        assert measured["argmax_agreement"] >= min_agreement, measured
        assert 0 < measured["max_abs_error"] < max_error, measured


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma2"])
def test_lora_run_round_trips_through_transformers(arch, small_run_factory):
    run, base = small_run_factory(arch)
    qtypes = ["f32", "f16", "q8_0"] + (["bf16", "q4_0"] if arch == "llama" else [])
    result = export_run(run.root, gguf_types=qtypes)
    written = {f.path.name for f in result.files}
    assert {f"{run.root.name}-{q}.gguf" for q in qtypes} | {"Modelfile"} <= written
    expected = prompt_logits(reference_merged_model(run, base), run.adapter)
    for qtype in qtypes:
        _check_round_trip(expected, _gguf_logits(run, qtype), qtype, arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_real_tokenizer_tiny_models_round_trip(arch, lora_run_factory, tiny_model_factory):
    """The same check with the fixtures' 49k SmolLM2 vocabulary (slow: ~10 s per GGUF load)."""
    run = lora_run_factory(arch)
    export_run(run.root, gguf_types=["f32", "q8_0"])
    expected = prompt_logits(reference_merged_model(run, tiny_model_factory(arch)), run.adapter)
    for qtype in ("f32", "q8_0"):
        _check_round_trip(expected, _gguf_logits(run, qtype), qtype, f"{arch} (49k vocab)")


def test_gemma_round_trips_through_the_gguf_reader(small_run_factory):
    """transformers 5.24 reads Gemma 2/3 GGUF but not Gemma 1: rebuild it with transformers' own name map instead."""
    from gguf import GGUFReader, dequantize
    from transformers.modeling_gguf_pytorch_utils import Gemma2TensorProcessor, get_gguf_hf_weights_map

    run, base = small_run_factory("gemma")
    export_run(run.root, gguf_types=["f32", "q8_0"])
    expected = prompt_logits(reference_merged_model(run, base), run.adapter)
    config = AutoConfig.from_pretrained(run.exports / "merged")
    for qtype in ("f32", "q8_0"):
        reader = GGUFReader(run.exports / f"{run.root.name}-{qtype}.gguf")
        assert reader.fields["general.architecture"].contents() == "gemma"
        assert reader.fields["gemma.attention.key_length"].contents() == config.head_dim
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        processor = Gemma2TensorProcessor(config={})  # the same "norm − 1" undo transformers applies to Gemma 2
        names = get_gguf_hf_weights_map(model, processor, model_type="gemma")
        state = {}
        for tensor in reader.tensors:
            weights = processor.process(weights=dequantize(tensor.data, tensor.tensor_type), name=tensor.name).weights
            state[names[tensor.name]] = torch.from_numpy(np.ascontiguousarray(weights)).reshape(
                tuple(reversed([int(d) for d in tensor.shape])))
        assert set(model.load_state_dict(state, strict=False).missing_keys) <= {"lm_head.weight"}
        model.tie_weights()
        _check_round_trip(expected, prompt_logits(model.eval(), run.adapter), qtype, "gemma")


def test_full_run_exports_its_model_as_is(small_run_factory, tmp_path):
    run = make_run_dir(tmp_path / "full-run", small_run_factory("llama")[1], method="full")
    result = export_run(run.root, merge=True, gguf_types=["f32"])
    assert not (run.exports / "merged").exists()
    assert any("already the full model" in note for note in result.notes)
    expected = prompt_logits(AutoModelForCausalLM.from_pretrained(run.model, dtype=torch.float32).eval(), run.model)
    _check_round_trip(expected, _gguf_logits(run, "f32"), "f32", "full llama")


@pytest.mark.parametrize("which", ["small", pytest.param("smollm2", marks=pytest.mark.slow)])
def test_tokenizer_metadata_is_complete(which, small_run_factory, lora_run_factory):
    from gguf import GGUFReader, TokenType

    run = small_run_factory("llama")[0] if which == "small" else lora_run_factory("llama")
    export_run(run.root, gguf_types=["q8_0"])
    path = run.exports / f"{run.root.name}-q8_0.gguf"
    original = AutoTokenizer.from_pretrained(run.adapter)
    fields = GGUFReader(path).fields
    tokenizer_json = json.loads((run.adapter / "tokenizer.json").read_text())
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == detect_pre_tokenizer(tokenizer_json) == "gpt-2"
    assert len(fields["tokenizer.ggml.merges"].contents()) == len(tokenizer_json["model"]["merges"])
    types = fields["tokenizer.ggml.token_type"].contents()
    specials = {i for i, t in original.added_tokens_decoder.items() if t.special}
    assert {i for i, t in enumerate(types) if t == TokenType.CONTROL} == specials
    assert fields["tokenizer.ggml.eos_token_id"].contents() == original.eos_token_id
    assert fields["tokenizer.ggml.bos_token_id"].contents() == original.bos_token_id
    assert fields["tokenizer.chat_template"].contents() == original.chat_template
    loaded = AutoTokenizer.from_pretrained(run.exports, gguf_file=path.name)
    for prompt in PROMPTS:
        assert loaded(prompt)["input_ids"] == original(prompt)["input_ids"]
    modelfile = (run.exports / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{run.root.name}-q8_0.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_pre_tokenizer_names_follow_llama_cpp():
    smollm = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]}}
    assert detect_pre_tokenizer(smollm) == "smollm"
    assert detect_pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}}) is None


def test_unsupported_architecture_fails_before_any_merge_work(small_run_factory, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2-base"
    GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=2, vocab_size=256, n_positions=64)).save_pretrained(base)
    llama_run, llama_base = small_run_factory("llama")
    run_dir = tmp_path / "gpt2-run"
    run_dir.mkdir()
    for name in ("manifest.json",):
        (run_dir / name).write_text((llama_run.root / name).read_text())
    (run_dir / "recipe.yaml").write_text((llama_run.root / "recipe.yaml").read_text().replace(
        str(llama_base), str(base)))
    os.symlink(llama_run.adapter, run_dir / "adapter")
    with pytest.raises(ExportError, match="does not support the 'gpt2' architecture; supported: gemma, gemma2, llama"):
        export_run(run_dir, merge=True, gguf_types=["q8_0"])
    assert not (run_dir / "exports").exists()


def test_k_quants_need_no_llama_cpp_and_a_missing_asked_for_one_fails_early(small_run_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing of llama.cpp anywhere
    run = small_run_factory("qwen2")[0]
    before = sorted(p.name for p in run.exports.iterdir()) if run.exports.exists() else []
    with pytest.raises(ExportError, match="--llama-quantize llama-quantize: no such executable"):
        export_run(run.root, merge=True, gguf_types=["q4_k_m"], llama_quantize="llama-quantize")
    assert (sorted(p.name for p in run.exports.iterdir()) if run.exports.exists() else []) == before
    export_run(run.root, gguf_types=["q4_k_m"], modelfile=False)
    assert (run.exports / f"{run.root.name}-q4_k_m.gguf").is_file()


def test_k_quants_run_the_given_llama_quantize(small_run_factory, tmp_path):
    """The subprocess wiring, with a stand-in binary that records its arguments (llama.cpp is not installed here)."""
    fake = tmp_path / "llama-quantize"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncp "$1" "$2"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    run = small_run_factory("llama")[0]
    export_run(run.root, gguf_types=["q4_k_m"], llama_quantize=str(fake), modelfile=False)
    source, target, qtype = (tmp_path / "args").read_text().split()
    assert qtype == "Q4_K_M" and source.endswith(".f16.gguf") and not os.path.exists(source)
    assert (run.exports / f"{run.root.name}-q4_k_m.gguf").is_file()


def test_disk_preflight_refuses_exports_that_cannot_fit(tmp_path):
    with pytest.raises(ExportError, match="not enough disk space"):
        ensure_free_space(tmp_path, 1 << 60, "a huge export")
