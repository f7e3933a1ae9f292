"""Which GGML type each tensor is stored in, per GGUF file type (after llama.cpp's ``llama_tensor_get_type``).

The quantized file types follow ``src/llama-quant.cpp`` for dense (non-MoE, non-Falcon) models without an
importance matrix: the output matrix (and the token embedding when it is tied to it) goes to Q6_K (Q8_0 stays
Q8_0), ``_M`` mixtures give half of the ``attn_v``/``ffn_down`` layers more bits (``use_more_bits``), a 70B
(80-layer GQA llama, 80-layer qwen2) gets ``attn_v`` one step up, and a row length that is not a multiple of the
block falls back to a 32-block type (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0), or to F16 when
not even 32 divides it. 1-D tensors (norms, biases) stay F32, as in llama.cpp's converter. bench/llamacpp_parity.py
checks every type against ``llama_model_quantize`` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: File types fnsft writes itself, in numpy.
PLAIN_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
K_TYPES = ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k")
QUANT_TYPES = PLAIN_TYPES + K_TYPES
QK_K = 256

#: The base GGML type of each quantized file type (before the per-tensor rules).
_BASE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q2_k": "Q2_K", "q3_k_s": "Q3_K", "q3_k_m": "Q3_K", "q3_k_l": "Q3_K", "q4_k_s": "Q4_K",
         "q4_k_m": "Q4_K", "q5_k_s": "Q5_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_BLOCK = {"Q4_0": 32, "Q5_0": 32, "Q5_1": 32, "Q8_0": 32, "Q2_K": QK_K, "Q3_K": QK_K, "Q4_K": QK_K,
          "Q5_K": QK_K, "Q6_K": QK_K}
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What the mixture rules look at besides the tensor itself."""

    n_layers: int
    n_gqa: int  # attention heads per key/value head
    tied_output: bool  # no output.weight: the token embedding doubles as the output matrix
    seventy_b: bool = False  # llama.cpp's LLM_TYPE_70B: its attn_v gets one step more (8 heads share it)


def _use_more_bits(layer: int, n_layers: int) -> bool:
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _mixture(name: str, file_type: str, base: str, model: ModelShape, ncols: int) -> str:
    """``llama_tensor_get_type_impl`` for the quantized file types on a dense model."""
    match = _LAYER.match(name)
    layer, n = (int(match.group(1)) if match else 0), model.n_layers
    if name == "output.weight" or (model.tied_output and name == "token_embd.weight"):
        return "Q8_0" if ncols % _BLOCK[base] else ("Q6_K" if base != "Q8_0" else base)
    if name.endswith("attn_v.weight"):
        rules = {
            "q2_k": "Q4_K" if model.n_gqa >= 4 else "Q3_K",
            "q3_k_m": "Q5_K" if layer < 2 else "Q4_K",
            "q3_k_l": "Q5_K",
            "q4_k_m": "Q6_K" if _use_more_bits(layer, n) else base,
            "q5_k_m": "Q6_K" if _use_more_bits(layer, n) else base,
            "q4_k_s": "Q5_K" if layer < 4 else base,
        }
        chosen = rules.get(file_type, base)
        return "Q5_K" if model.seventy_b and chosen in ("Q3_K", "Q4_K") else chosen
    if "ffn_down" in name:
        rules = {
            "q2_k": "Q3_K",
            "q3_k_m": "Q5_K" if layer < n // 16 else "Q4_K",
            "q3_k_l": "Q5_K",
            "q4_k_m": "Q6_K" if _use_more_bits(layer, n) else base,
            "q5_k_m": "Q6_K" if _use_more_bits(layer, n) else base,
            "q4_k_s": "Q5_K" if layer < n // 8 else base,
        }
        return rules.get(file_type, base)
    if name.endswith("attn_output.weight"):
        return {"q2_k": "Q3_K", "q3_k_m": "Q4_K", "q3_k_l": "Q5_K"}.get(file_type, base)
    return base


def tensor_type_name(name: str, shape: tuple[int, ...], file_type: str, model: ModelShape) -> str:
    """The GGML type name (as in ``gguf.GGMLQuantizationType``) of one tensor in a file of ``file_type``."""
    ncols = shape[-1]
    if len(shape) < 2 or file_type == "f32":
        return "F32"
    if file_type in ("f16", "bf16"):
        return file_type.upper()
    chosen = _mixture(name, file_type, _BASE[file_type], model, ncols)
    if ncols % _BLOCK[chosen]:
        chosen = _FALLBACK.get(chosen, "F16")
    if ncols % _BLOCK.get(chosen, 1):
        chosen = "F16"
    return chosen


def file_type_name(file_type: str) -> str:
    """The ``gguf.LlamaFileType`` member name of a file type ("q4_k_m" → "MOSTLY_Q4_K_M")."""
    return {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16"}.get(file_type, f"MOSTLY_{file_type.upper()}")
