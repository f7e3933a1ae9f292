"""The closed sets of names that several packages share: one ``Literal`` per concept, defined here only.

A leaf module (no fnsft imports), so the recipe schema, the estimator and the trainer can all use the same names.
"""

from __future__ import annotations

from typing import Literal

#: Fine-tuning methods: LoRA adapters, LoRA on a 4-bit (or 8-bit) quantized base, or every weight.
MethodName = Literal["lora", "qlora", "full"]
#: Floating-point formats of weights and compute.
Dtype = Literal["bf16", "fp16", "fp32"]
#: A recipe's precision: a dtype, or auto (bf16 on capable GPUs, fp32 on CPU).
Precision = Literal["auto", Dtype]
#: The estimator's precision modes: a dtype for weights and compute, or fp32 weights with 16-bit autocast.
EstimatePrecision = Literal[Dtype, "bf16-mixed", "fp16-mixed"]
#: Optimizers a recipe can name (transformers' ``optim`` values).
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "paged_adamw_8bit",
    "paged_adamw_32bit",
    "adafactor",
    "sgd",
]
#: The estimator's optimizers: a recipe's, plus ``adamw`` (the command line's short name for adamw_torch).
EstimateOptimizer = Literal["adamw", Optimizer]
#: Optimizers with 32-bit AdamW states that the 8-bit AdamW can stand in for (same algorithm, quantized states).
FULL_PRECISION_ADAMW: tuple[EstimateOptimizer, ...] = ("adamw", "adamw_torch", "adamw_torch_fused", "paged_adamw_32bit")
#: How a neuron mask is applied: lesion zeroes the selected neurons, preserve keeps only them.
MaskMode = Literal["lesion", "preserve"]
