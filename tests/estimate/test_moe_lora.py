"""LoRA on MoE models: the estimator's trainable count is what PEFT's get_peft_model trains (real tiny models).

transformers 5 stacks the experts into 3-D parameters and makes the router a TopKRouter module (neither is an
nn.Linear); PEFT converts its old module names for some model types only, so what "all-linear" wraps differs
between Mixtral, Qwen2-MoE and Qwen3-MoE. Counting real trainable parameters catches any drift in either.
"""

from __future__ import annotations

import pytest

from fnsft.estimate.arch import shape_from_config
from fnsft.estimate.memory import EstimateInput, estimate

SIZES = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=256)
CONFIGS = {
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                      shared_expert_intermediate_size=128),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64),
}


def _peft_trainable(model_type: str, targets, r: int = 8) -> tuple[int, int, dict]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, **SIZES, **CONFIGS[model_type])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets,
                                                  task_type="CAUSAL_LM"))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad), total, config.to_dict()


@pytest.mark.parametrize(("model_type", "targets"), [
    ("mixtral", "all-linear"), ("qwen2_moe", "all-linear"), ("qwen3_moe", "all-linear"),
    ("mixtral", ["q_proj", "v_proj", "gate"]), ("mixtral", ["w1", "w3", "w2"]),
    ("qwen3_moe", ["o_proj", "gate_proj", "up_proj", "down_proj"]),
])
def test_lora_trainable_count_matches_peft(model_type, targets):
    trainable, total, config = _peft_trainable(model_type, targets)
    shape = shape_from_config(config, model_type, "config")
    predicted = estimate(EstimateInput(model=shape, method="lora", lora_r=8, lora_dropout=0.0, lora_targets=targets,
                                       precision="fp32", device="cpu", batch_size=1, seq_len=64))
    assert predicted.total_params == total
    assert predicted.trainable_params == trainable
    assert predicted.adapter == 4 * trainable  # fp32 adapters
    assert not predicted.warnings


def test_router_and_experts_are_lora_targets_only_where_peft_converts_them():
    for model_type, wrapped in (("mixtral", True), ("qwen3_moe", True), ("qwen2_moe", False)):
        config = {"model_type": model_type, **SIZES, **CONFIGS[model_type]}
        router = next(layer for layer in shape_from_config(config, model_type, "config").blocks[0].linears
                      if layer.name == "gate")
        assert router.peft_parameter is wrapped and not router.is_linear_module  # never quantized by bitsandbytes


def test_dropout_with_moe_parameter_targets_is_a_warning():
    config = {"model_type": "mixtral", **SIZES, **CONFIGS["mixtral"]}
    inp = EstimateInput(model=shape_from_config(config, "mixtral", "config"), method="lora", lora_dropout=0.05)
    assert any("lora_dropout 0" in warning for warning in estimate(inp).warnings)
