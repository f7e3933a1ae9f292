"""Activations: predicted saved-for-backward bytes vs the bytes really saved, counted with
torch.autograd.graph.saved_tensors_hooks (unique storages, parameters excluded; with checkpointing, the layer
inputs the checkpoint holds). Every grid point must be within 10 %, both for the whole forward and for the part
inside the decoder layers (which the 49k-vocabulary log-probs would otherwise hide on tiny models).

Two loss paths: TRL's fused LM head (what SFTTrainer, hence `fnsft train`, runs: chunked log-probs) and the
model's own loss over full logits.
"""

from __future__ import annotations

import itertools

import pytest

from fnsft.estimate import build_input
from fnsft.estimate.memory import activation_parts

torch = pytest.importorskip("torch")

TOLERANCE = 0.10


def _measure(model_dir, method, precision, batch, seq, checkpointing, loss="chunked"):
    from fnsft.estimate.measure import activations_of

    return activations_of(model_dir, method, precision, batch, seq, checkpointing, loss)


def _check(model_dir, method, precision, batch, seq, checkpointing, loss="chunked"):
    measured = _measure(model_dir, method, precision, batch, seq, checkpointing, loss)
    predicted = activation_parts(build_input(
        model=str(model_dir), method=method, precision=precision, batch_size=batch, seq_len=seq,
        gradient_checkpointing=checkpointing, lora_r=8, lora_dropout=0.05, device="cpu", loss=loss,
    ), checkpointing)
    assert predicted.total == pytest.approx(measured.total, rel=TOLERANCE)
    assert predicted.in_layers == pytest.approx(measured.in_layers, rel=TOLERANCE)
    assert predicted.log_probs == measured.log_probs
    return predicted, measured


GRID = list(itertools.product([1, 3], [16, 48], [False, True], ["lora", "full"]))


@pytest.mark.parametrize(("batch", "seq", "checkpointing", "method"), GRID)
def test_llama_fp32_grid(tiny_model_factory, batch, seq, checkpointing, method):
    _check(tiny_model_factory("llama"), method, "fp32", batch, seq, checkpointing)


@pytest.mark.parametrize(("checkpointing", "method"), list(itertools.product([False, True], ["lora", "full"])))
def test_llama_full_logits_loss(tiny_model_factory, checkpointing, method):
    predicted, measured = _check(tiny_model_factory("llama"), method, "fp32", 2, 32, checkpointing, "full_logits")
    assert measured.log_probs == 4 * 2 * 32 * 49152  # the b·s·V fp32 log-softmax the chunked head avoids


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
