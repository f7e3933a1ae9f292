"""fnsft's GGUF files against llama.cpp itself (slow; skipped unless $FNSFT_LLAMA_CPP_PYTHON names an interpreter
with llama-cpp-python, which fnsft never needs: `just test-llamacpp`).

1. Quantization: each block encoder equals ggml's ``ggml_quantize_chunk`` on rows that reach every branch; every file type fnsft writes equals, tensor by tensor and block by block, what llama.cpp's
   ``llama_model_quantize`` makes from fnsft's F32 file of the same model (same type chosen per tensor, same bytes).
2. Inference: llama.cpp loads fnsft's f16 / q8_0 / q4_k_m files; its tokenization, next-token argmax and greedy
   replies agree with transformers on the HF model, and its generation (and create_chat_completion with the
   GGUF's chat template) stops at the end-of-turn token where transformers' does.
"""

from __future__ import annotations

import json

import pytest
from export_runs import KQUANT_SIZES, build_small_vocab_model
from llamacpp_harness import (
    ENCODER_TYPES,
    SMOLLM2_CHATS,
    TINY_CHATS,
    awkward_rows,
    encoder_differences,
    fit_chat_model,
    hf_reference,
    inference_parity,
    llama_cpp_interpreter,
    quantize_parity,
    write_fnsft,
)

from fnsft.export.quant_types import QUANT_TYPES

pytestmark = pytest.mark.slow

#: Types checked on SmolLM2 in the test (bench/llamacpp_parity.py does all of them): the ones users download.
SMOLLM2_TYPES = ["f16", "q8_0", "q4_k_m"]


@pytest.fixture(scope="module")
def llama_cpp_python() -> str:
    python, detail = llama_cpp_interpreter()
    if python is None:
        pytest.skip(detail)
    return python


@pytest.fixture(scope="module")
def tiny_chat_models(tmp_path_factory):
    """Call with 'mistral' (untied output) or 'llama' (tied): a 256/512-wide model trained on TINY_CHATS."""
    root = tmp_path_factory.mktemp("llamacpp-models")

    def make(arch: str):
        base = build_small_vocab_model(arch, root / f"{arch}-base", **KQUANT_SIZES)
        return fit_chat_model(base, root / arch)

    return make


def test_block_encoders_equal_ggml_quantize_chunk(llama_cpp_python):
    differences = encoder_differences(llama_cpp_python, awkward_rows(256), ENCODER_TYPES)
    print(f"\n(blocks, differing blocks): {json.dumps(differences)}")
    assert {name: differing for name, (_, differing) in differences.items()} == dict.fromkeys(ENCODER_TYPES, 0)


def _assert_identical(qtype: str, result: dict) -> None:
    summary = {key: result[key] for key in ("types", "blocks", "differing_blocks", "type_mismatches",
                                            "metadata_differences")}
    print(f"\n{qtype}: {json.dumps(summary)}")
    assert not result["type_mismatches"], result["type_mismatches"]
    assert result["differing_blocks"] == 0, result["tensors_differing"][:3]
    assert not result["metadata_differences"], result["metadata_differences"]


@pytest.mark.parametrize("arch", ["mistral", "llama"])
def test_fnsft_quantizes_like_llama_cpp_on_tiny_models(llama_cpp_python, tiny_chat_models, arch, tmp_path):
    qtypes = [qtype for qtype in QUANT_TYPES if qtype != "f32"]
    results = quantize_parity(llama_cpp_python, tiny_chat_models(arch), tmp_path, qtypes)
    for qtype in qtypes:
        _assert_identical(qtype, results[qtype])
    # the models are wide enough that the super-block types are really used, not their 32-block fallbacks
    assert {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} <= {t for r in results.values() for t in r["types"]}


def test_fnsft_quantizes_smollm2_like_llama_cpp(llama_cpp_python, smollm2_dir, tmp_path):
    for qtype, result in quantize_parity(llama_cpp_python, smollm2_dir, tmp_path, SMOLLM2_TYPES).items():
        _assert_identical(qtype, result)


#: (minimum top-1 agreement with transformers on the HF model over the prompt positions, maximum mean KL in
#: nats) per type. Measured (llama-cpp-python 0.3.36), tiny model: 1.0 / 0.966 / 0.966, KL 1e-8 / 3e-7 / 1e-5;
#: SmolLM2: 1.0 / 0.919 / 0.910, KL 1.4e-5 / 0.0085 / 0.105 (its quantized greedy replies drift from the
#: f32 model's after a few tokens: the quantization, not llama.cpp, which keeps f16 replies token for token).
INFERENCE_LIMITS = {"f16": (0.99, 1e-3), "q8_0": (0.85, 0.05), "q4_k_m": (0.8, 0.3)}


def _check_inference(python, model_dir, questions, tmp_path, max_new_tokens: int, replies_must_match: tuple):
    reference = hf_reference(model_dir, questions, max_new_tokens)
    assert all(prompt["stopped"] for prompt in reference["prompts"]), "the HF model itself must end its replies"
    for qtype, (min_top1, max_kl) in INFERENCE_LIMITS.items():
        path = tmp_path / f"{qtype}.gguf"
        write_fnsft(model_dir, path, qtype)
        result = inference_parity(python, path, reference, max_new_tokens)
        path.unlink()
        print(f"\n{qtype}: {json.dumps(result)}")
        assert result["chat_template_equal"] and result["eos_in_eog"], result
        assert result["top1_agreement"] >= min_top1 and result["mean_kl"] < max_kl, result
        for prompt in result["prompts"]:
            assert prompt["tokenization_equal"], prompt
            if qtype in replies_must_match:  # the same reply, ended by the end-of-turn token in both
                assert prompt["greedy_equal"] and prompt["chat_reply_equal"], prompt
                assert prompt["llama_cpp_stopped_at_eog"] and prompt["chat_finish_reason"] == "stop", prompt


def test_llama_cpp_runs_fnsft_files_of_a_tiny_model(llama_cpp_python, tiny_chat_models, tmp_path):
    _check_inference(llama_cpp_python, tiny_chat_models("mistral"), [q for q, _ in TINY_CHATS], tmp_path, 24,
                     replies_must_match=("f16", "q8_0", "q4_k_m"))


def test_llama_cpp_runs_fnsft_files_of_smollm2(llama_cpp_python, smollm2_dir, tmp_path):
    _check_inference(llama_cpp_python, smollm2_dir, SMOLLM2_CHATS, tmp_path, 48, replies_must_match=("f16",))
