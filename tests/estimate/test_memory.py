"""Estimator logic: quantization storage, sharding, bad input, and the guide's memory table."""

from __future__ import annotations

import pytest

from fnsft.errors import EstimateError, NotYetSupported
from fnsft.estimate import build_input, estimate
from fnsft.estimate.memory import nf4_bytes

GB = 10**9


def test_nf4_storage_is_about_4_127_bits_with_double_quant():
    numel = 4096 * 4096
    packed, constants = nf4_bytes(numel, double_quant=True)
    assert 4.12 < 8 * (packed + constants) / numel < 4.14
    packed, constants = nf4_bytes(numel, double_quant=False)
    assert 8 * (packed + constants) / numel == pytest.approx(4.5, abs=0.001)


def test_qlora_keeps_embeddings_and_head_unquantized():
    result = estimate(build_input(model="meta-llama/Meta-Llama-3-8B", method="qlora"))
    embedding_and_head = 2 * 128256 * 4096
    assert result.weights_unquantized >= embedding_and_head * 2  # bf16
    assert result.weights == result.weights_quantized + result.quantization_constants + result.weights_unquantized


def test_mixtral_experts_are_not_linear_modules():
    """transformers 5 stores experts as 3D parameters: bitsandbytes leaves them 16-bit, LoRA all-linear skips them."""
    qlora = estimate(build_input(model="mistralai/Mixtral-8x7B-v0.1", method="qlora", seq_len=512))
    assert qlora.weights_unquantized > 80 * GB


def test_zero3_divides_model_states_by_gpu_count():
    base = dict(model="meta-llama/Llama-2-7b-hf", method="full", batch_size=1, seq_len=512)
    single = estimate(build_input(**base))
    sharded = estimate(build_input(**base, num_gpus=8, sharding="zero3"))
    assert sharded.weights == single.weights // 8
    assert sharded.optimizer_states == single.optimizer_states // 8
    assert sharded.communication > 0 and sharded.total < single.total / 3


def test_checkpointing_cuts_activations():
    base = dict(model="meta-llama/Llama-3.1-8B", method="lora", batch_size=4, seq_len=2048)
    on = estimate(build_input(**base, gradient_checkpointing=True))
    off = estimate(build_input(**base, gradient_checkpointing=False))
    assert on.activations < off.activations / 5
    assert on.activations_without_checkpointing == off.activations


def test_large_vocabulary_logits_are_visible():
    """Gemma's 256k vocabulary: with full logits the b·s·V buffers dominate; TRL's chunked head avoids them."""
    base = dict(model="google/gemma-2b", method="lora", batch_size=8, seq_len=4096)
    full_logits = estimate(build_input(**base, loss="full_logits"))
    assert full_logits.logits_saved == 4 * 8 * 4096 * 256000
    assert full_logits.logits_transient >= 2 * 8 * 4096 * 256000
    chunked = estimate(build_input(**base))
    assert chunked.logits_saved == 0 and chunked.logits_transient < full_logits.logits_transient / 10


@pytest.mark.parametrize(("fields", "message"), [
    ({"batch_size": 0}, "batch_size"),
    ({"seq_len": -5}, "seq_len"),
    ({"lora_targets": ["nope_proj"]}, "nope_proj"),
    ({"sharding": "zero3"}, "num-gpus"),
    ({"offload": "params"}, "zero3"),
    ({"method": "qlora", "precision": "fp32"}, "16-bit"),
])
def test_nonsense_input_is_a_clear_error(fields, message):
    with pytest.raises(EstimateError, match=message):
        estimate(build_input(model="meta-llama/Llama-2-7b-hf", **fields))


def test_encoder_decoder_is_not_yet_supported():
    with pytest.raises(NotYetSupported, match="encoder-decoder"):
        estimate(build_input(model="google-t5/t5-small", seq_len=512))


def test_guide_table_7b():
    """The guide: PEFT 7B 4–8 GB with QLoRA; full 7B 32–64 GB with its memory-saving settings
    (bf16, gradient checkpointing, 8-bit AdamW, micro-batch 1)."""
    qlora = estimate(build_input(model="meta-llama/Llama-2-7b-hf", method="qlora", batch_size=1, seq_len=512))
    assert 4 * GB <= qlora.total <= 8 * GB
    full = estimate(build_input(model="meta-llama/Llama-2-7b-hf", method="full", optimizer="adamw_8bit",
                                batch_size=1, seq_len=512))
    assert 32 * GB <= full.total <= 64 * GB


def test_cpu_estimate_has_process_baseline_and_no_cuda_context():
    result = estimate(build_input(model="HuggingFaceTB/SmolLM2-135M", method="lora", device="cpu", precision="fp32",
                                  batch_size=2, seq_len=128))
    assert result.overhead > 0
    assert result.total < 4 * GB


GUIDE_RANGES_GB = {  # the guide's memory tables: recipe → (low, high) GB
    "qlora-7b.yaml": (4, 8), "qlora-13b.yaml": (8, 12), "full-7b.yaml": (32, 64), "full-1b.yaml": (8, 16),
}


@pytest.mark.parametrize("name", sorted(GUIDE_RANGES_GB))
def test_shipped_recipes_fall_inside_the_guide_ranges(name):
    from pathlib import Path

    from fnsft.estimate import inputs_from_recipe
    from fnsft.recipe.load import load_recipe

    path = Path(__file__).resolve().parents[2] / "recipes" / name
    if not path.is_file():
        pytest.skip(f"{name} not shipped yet")
    low, high = GUIDE_RANGES_GB[name]
    assert low * GB <= estimate(inputs_from_recipe(load_recipe(path))).total <= high * GB


def test_three_meters_add_up_on_cuda():
    """allocated + fragmentation = reserved; reserved + context + outside the allocator = device used = total."""
    result = estimate(build_input(model="meta-llama/Llama-3.1-8B", method="full", batch_size=1, seq_len=512))
    assert result.reserved == result.allocated + result.fragmentation > result.allocated
    assert result.device_used == result.reserved + result.context + result.outside_allocator == result.total
    assert result.fit_meter == "device_used"


def test_paged_optimizer_states_are_outside_torchs_allocator():
    """bitsandbytes pages the moments of tensors with >= 1e5 values (managed memory): device used, not allocated."""
    base = dict(model="meta-llama/Llama-3.1-8B", method="full", batch_size=1, seq_len=512)
    plain, paged = estimate(build_input(**base, optimizer="adamw_8bit")), estimate(
        build_input(**base, optimizer="paged_adamw_8bit"))
    assert plain.outside_allocator == 0
    big = [n for n in build_input(**base).model.tensor_sizes() if n >= 100_000]
    assert paged.outside_allocator == 2 * sum(big)  # two uint8 moments per value
    assert paged.optimizer_states == plain.optimizer_states  # same bytes, different allocator
    assert paged.allocated < plain.allocated and paged.device_used < plain.device_used  # no fragmentation on them


def test_cpu_meters_are_tensors_and_rss():
    result = estimate(build_input(model="HuggingFaceTB/SmolLM2-135M", method="lora", device="cpu", precision="fp32"))
    assert result.allocated == result.reserved and result.outside_allocator == 0
    assert result.device_used == result.allocated + result.context == result.total


def test_loss_variants_never_hold_the_full_logits():
    """liger (token chunks) and cce (on-chip blocks) keep far less than b·s·V; plain keeps the fp32 log-softmax."""
    base = dict(model="google/gemma-2-2b", method="lora", batch_size=8, seq_len=4096)
    plain = estimate(build_input(**base, loss="plain"))
    for loss in ("liger", "cce", "chunked"):
        result = estimate(build_input(**base, loss=loss))
        assert result.logits_saved == 0 and result.logits_transient < plain.logits_transient / 10, loss


def test_activation_offload_keeps_two_layers_on_the_gpu():
    base = dict(model="meta-llama/Llama-3.1-8B", method="lora", batch_size=4, seq_len=2048)
    kept, offloaded = estimate(build_input(**base)), estimate(build_input(**base, activation_offload=True))
    checkpoints = 32 * 2 * 4 * 2048 * 4096  # one bf16 layer input per layer
    assert offloaded.activations_offloaded == checkpoints - checkpoints * 2 // 32
    assert kept.activations - offloaded.activations == offloaded.activations_offloaded
    assert offloaded.cpu_offloaded == offloaded.activations_offloaded
