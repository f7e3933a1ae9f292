"""Exact parts, exact: predicted weights / trainable / gradients / optimizer states equal, to the byte, the real
tensors after one real optimizer step on tiny llama, qwen2 and gemma models (full, LoRA, QLoRA; AdamW and 8-bit).

The setup (fnsft.estimate.measure.exact_parts_after_step) mirrors TRL's SFTTrainer: PEFT defaults (fp32
adapters), and for a 4-bit base the adapters cast to bf16.
"""

from __future__ import annotations

import pytest

from fnsft.estimate import build_input, estimate

pytest.importorskip("torch")

# (arch, method, precision, optimizer): every combination on llama, the distinct code paths on qwen2 and gemma.
CASES = [
    ("llama", "full", "fp32", "adamw_torch"),
    ("llama", "full", "bf16", "adamw_torch"),
    ("llama", "full", "fp32", "adamw_8bit"),
    ("llama", "lora", "fp32", "adamw_torch"),
    ("llama", "lora", "bf16", "adamw_torch"),
    ("llama", "lora", "bf16", "adamw_8bit"),
    ("llama", "qlora", "bf16", "adamw_torch"),
] + [(arch, *case) for arch in ("qwen2", "gemma") for case in [
    ("full", "bf16", "adamw_8bit"), ("lora", "bf16", "adamw_torch"), ("qlora", "bf16", "adamw_8bit"),
]]


@pytest.mark.parametrize(("arch", "method", "precision", "optimizer_name"), CASES)
def test_exact_parts_match_real_tensors(tiny_model_factory, arch, method, precision, optimizer_name):
    from fnsft.estimate.measure import exact_parts_after_step

    model_dir = tiny_model_factory(arch)
    measured = exact_parts_after_step(model_dir, method, precision, optimizer_name, lora_r=8)
    predicted = estimate(build_input(
        model=str(model_dir), method=method, precision=precision, optimizer=optimizer_name, lora_r=8,
        batch_size=2, seq_len=16, device="cpu",
    ))
    for key, value in measured.items():
        assert getattr(predicted, key) == value, key


@pytest.mark.parametrize(("arch", "modules"), [("llama", ["embed_tokens"]), ("qwen2", ["embed_tokens", "lm_head"])])
def test_lora_modules_to_save_are_trained_copies(tiny_model_factory, arch, modules):
    """PEFT's modules_to_save: a trainable copy (weights' dtype) with its gradient and AdamW states, original kept."""
    from fnsft.estimate.measure import exact_parts_after_step

    model_dir = tiny_model_factory(arch)
    measured = exact_parts_after_step(model_dir, "lora", "fp32", "adamw_torch", lora_r=8, modules_to_save=modules)
    predicted = estimate(build_input(model=str(model_dir), method="lora", precision="fp32", lora_r=8,
                                     lora_modules_to_save=modules, batch_size=2, seq_len=16, device="cpu"))
    for key, value in measured.items():
        if key != "total_params":  # the copies are counted once in the model's parameters by PEFT, not here
            assert getattr(predicted, key) == value, key


@pytest.mark.parametrize(("method", "precision"), [("full", "fp32"), ("full", "bf16"), ("lora", "fp32")])
def test_optimizer_in_backward_keeps_one_gradient_alive(tiny_model_factory, method, precision):
    """Real per-parameter AdamW steps in post-accumulate-grad hooks: the peak of live gradients is the largest one."""
    from fnsft.estimate.measure import gradients_with_optimizer_in_backward

    model_dir = tiny_model_factory("llama")
    measured = gradients_with_optimizer_in_backward(model_dir, method, precision)
    base = dict(model=str(model_dir), method=method, precision=precision, lora_r=8, batch_size=2, seq_len=16,
                device="cpu")
    predicted, plain = estimate(build_input(**base, optimizer_in_backward=True)), estimate(build_input(**base))
    assert measured["gradients_left"] == 0
    assert predicted.gradients == measured["gradients"] < plain.gradients
    assert predicted.optimizer_states == measured["optimizer_states"] == plain.optimizer_states
