"""Exact parts, exact: predicted weights / trainable / gradients / optimizer states equal, to the byte, the real
tensors after one real optimizer step on tiny llama, qwen2 and gemma models (full, LoRA, QLoRA; AdamW and 8-bit).

The PEFT/TRL setup mirrors what TRL's SFTTrainer does: get_peft_model with PEFT's defaults (fp32 adapters), and
for a 4-bit base the adapters cast to bf16 (sft_trainer.py, "QLoRA ... converted to bf16").
"""

from __future__ import annotations

import logging

import pytest

from fnsft.estimate import build_input, estimate
from fnsft.estimate.measure import tensor_bytes as _storage_bytes

torch = pytest.importorskip("torch")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

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


def _quant_state_tensors(model):
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None:
            continue
        yield from (t for t in (state.absmax, state.code, state.offset) if t is not None)
        if state.state2 is not None:
            yield from (state.state2.absmax, state.state2.code)


def _train_one_step(model_dir, method, precision, optimizer_name):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    kwargs = {"dtype": dtype}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
        if method == "qlora":
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if optimizer_name == "adamw_8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(trainable, lr=1e-3)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return model, optimizer


@pytest.mark.parametrize(("arch", "method", "precision", "optimizer_name"), CASES)
def test_exact_parts_match_real_tensors(tiny_model_factory, arch, method, precision, optimizer_name):
    model_dir = tiny_model_factory(arch)
    model, optimizer = _train_one_step(model_dir, method, precision, optimizer_name)
    named = list(model.named_parameters())
    base = [p for name, p in named if "lora_" not in name]
    adapters = [p for name, p in named if "lora_" in name]
    trainable = [p for _, p in named if p.requires_grad]
    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]

    predicted = estimate(build_input(
        model=str(model_dir), method=method, precision=precision, optimizer=optimizer_name, lora_r=8,
        batch_size=2, seq_len=16, device="cpu",
    ))

    assert predicted.weights == _storage_bytes(base) + _storage_bytes(_quant_state_tensors(model))
    assert predicted.adapter == _storage_bytes(adapters)
    assert predicted.trainable_params == sum(p.numel() for p in trainable)
    packed = sum(p.numel() for p in base if p.dtype == torch.uint8)  # two 4-bit values per byte
    assert predicted.total_params == sum(p.numel() for p in base) + packed
    assert predicted.gradients == _storage_bytes(p.grad for p in trainable)
    assert predicted.optimizer_states == _storage_bytes(states)
    if method == "qlora":
        assert predicted.weights_quantized == _storage_bytes(p for p in base if p.dtype == torch.uint8)
