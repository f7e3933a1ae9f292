"""Activations: predicted saved-for-backward bytes vs the bytes really saved, counted with
torch.autograd.graph.saved_tensors_hooks (unique storages, parameters excluded; with checkpointing, the layer
inputs the checkpoint holds). Every grid point must be within 10 %, both for the whole forward and for the part
inside the decoder layers (which the 49k-vocabulary log-probs would otherwise hide on tiny models).
"""

from __future__ import annotations

import itertools

import pytest

from fnsft.estimate import build_input
from fnsft.estimate.memory import activation_parts

torch = pytest.importorskip("torch")

TOLERANCE = 0.10


def _measure(model_dir, method, precision, batch, seq, checkpointing):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fnsft.estimate.measure import saved_tensor_bytes

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa")
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    return saved_tensor_bytes(model, ids)


def _check(model_dir, method, precision, batch, seq, checkpointing):
    measured = _measure(model_dir, method, precision, batch, seq, checkpointing)
    predicted = activation_parts(build_input(
        model=str(model_dir), method=method, precision=precision, batch_size=batch, seq_len=seq,
        gradient_checkpointing=checkpointing, lora_r=8, lora_dropout=0.05, device="cpu",
    ), checkpointing)
    assert predicted.total == pytest.approx(measured.total, rel=TOLERANCE)
    assert predicted.in_layers == pytest.approx(measured.in_layers, rel=TOLERANCE)
    assert predicted.log_probs == measured.log_probs
    return predicted, measured


GRID = list(itertools.product([1, 3], [16, 48], [False, True], ["lora", "full"]))


@pytest.mark.parametrize(("batch", "seq", "checkpointing", "method"), GRID)
def test_llama_fp32_grid(tiny_model_factory, batch, seq, checkpointing, method):
    _check(tiny_model_factory("llama"), method, "fp32", batch, seq, checkpointing)


@pytest.mark.parametrize("arch", ["qwen2", "gemma"])
@pytest.mark.parametrize(("precision", "checkpointing", "method"),
                         list(itertools.product(["fp32", "bf16"], [False, True], ["lora", "full"])))
def test_other_architectures_and_bf16(tiny_model_factory, arch, precision, checkpointing, method):
    _check(tiny_model_factory(arch), method, precision, 2, 32, checkpointing)


def test_checkpointing_saves_memory_in_the_layers(tiny_model_factory):
    """A sanity check that the measurement itself sees checkpointing (not a tautology of the formula)."""
    plain = _measure(tiny_model_factory("llama"), "full", "fp32", 2, 32, False)
    checkpointed = _measure(tiny_model_factory("llama"), "full", "fp32", 2, 32, True)
    assert checkpointed.in_layers < plain.in_layers / 5


@pytest.mark.slow
@pytest.mark.parametrize(("batch", "seq", "checkpointing", "method"),
                         list(itertools.product([1, 4], [64, 256], [False, True], ["lora", "full"])))
def test_smollm2_grid(smollm2_dir, batch, seq, checkpointing, method):
    _check(smollm2_dir, method, "fp32", batch, seq, checkpointing)
