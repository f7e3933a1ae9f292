"""Q4_0, Q5_0 and Q5_1 (the 32-value block types K-quant files fall back to) exactly as ggml's reference code.

gguf's numpy quantizers compute the same values, but pick a block's max/min differently when zeros of both signs
are involved: ggml keeps the first element that compares strictly larger (Q5_1's min and max, starting from
±FLT_MAX) or the first of largest magnitude starting from +0 (Q4_0/Q5_0), numpy's ``min``/``argmax`` do not
see the sign of a zero. The scale then differs only in the sign of a zero (same dequantized values), but the
bytes differ from llama.cpp's; measured on rows with negative zeros (bench/llamacpp_parity.py). Q4_0 and Q5_0
only need ``-0.0`` turned into ``+0.0`` before gguf's quantizer; Q5_1 is written out here.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
BLOCK = 32
Q5_1_BYTES = 24
CHUNK_BLOCKS = 1 << 15


def _first(blocks: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The first element of each block that compares equal to ``value`` (keeps that element's sign of zero)."""
    return np.take_along_axis(blocks, np.argmax(blocks == value, axis=1)[:, None], axis=1)


def _q5_1(blocks: np.ndarray) -> np.ndarray:
    """``quantize_row_q5_1_ref``: d and m as fp16, the fifth bits in a little-endian uint32, then the low nibbles."""
    low = _first(blocks, blocks.min(axis=1, keepdims=True))
    high = _first(blocks, blocks.max(axis=1, keepdims=True))
    d = (high - low) / F32(31)
    with np.errstate(divide="ignore"):
        inverse = np.where(d == 0, F32(0), F32(1) / d)
    q = np.trunc((blocks - low) * inverse + F32(0.5)).astype(np.uint8)
    qs = (q[:, :16] & 0xF) | ((q[:, 16:] & 0xF) << 4)
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(BLOCK, dtype=np.uint32)
    qh = np.bitwise_or.reduce(bits, axis=1).astype("<u4").view(np.uint8).reshape(-1, 4)
    return np.concatenate([d.astype(np.float16).view(np.uint8), low.astype(np.float16).view(np.uint8), qh, qs],
                          axis=1)


def quantize_legacy(data: np.ndarray, type_name: str) -> np.ndarray:
    """Quantize float32 rows (last dimension a multiple of 32) to "Q4_0", "Q5_0" or "Q5_1", as uint8 rows."""
    from gguf import GGMLQuantizationType, quants

    if data.shape[-1] % BLOCK:
        raise ValueError(f"{type_name} needs rows that are a multiple of {BLOCK} values, not {data.shape[-1]}")
    data = np.ascontiguousarray(data, dtype=F32)
    if type_name != "Q5_1":
        return quants.quantize(data + F32(0), GGMLQuantizationType[type_name])  # -0.0 + 0.0 is +0.0
    blocks = data.reshape(-1, BLOCK)
    out = np.empty((blocks.shape[0], Q5_1_BYTES), dtype=np.uint8)
    for start in range(0, blocks.shape[0], CHUNK_BLOCKS):  # temporaries stay a few MB whatever the tensor size
        out[start:start + CHUNK_BLOCKS] = _q5_1(blocks[start:start + CHUNK_BLOCKS])
    return out.reshape(*data.shape[:-1], data.shape[-1] // BLOCK * Q5_1_BYTES)


TYPES = ("Q4_0", "Q5_0", "Q5_1")
