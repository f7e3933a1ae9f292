"""K-quant block encoders (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) in vectorized numpy, after llama.cpp's reference code.

Each function follows ``quantize_row_qN_K_ref`` in ggml's ``ggml-quants.c`` (the path ``llama-quantize`` takes
without an importance matrix): the same scale search (``make_qkx2_quants`` / ``make_q3_quants`` /
``make_qx_quants``), the same round-half-to-even (``nearest_int``), float32 arithmetic in the same order and the
same bit packing. Loops run over the elements of one sub-block (16 or 32) and over the search steps; every step
is vectorized across all sub-blocks of a chunk of rows. Sub-block arrays are laid out (elements, sub-blocks) so
that a sum over axis 0 adds elements one after the other, as the C loops do. Byte equality with llama.cpp is
expected but not guaranteed: a C compiler may fuse multiply-adds, which changes the last bit of some sums.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
#: Bytes of one 256-value super-block.
BLOCK_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
GROUP_MAX_EPS = np.float32(1e-15)
#: Values quantized per call, so temporaries stay a few MB whatever the tensor size.
CHUNK_VALUES = 1 << 20

F32 = np.float32


def _columns(x: np.ndarray, n: int) -> np.ndarray:
    """(blocks, 256) → (n, sub-blocks): one column per sub-block of n values."""
    return np.ascontiguousarray(x.reshape(-1, n).T)


def _rows(columns: np.ndarray, n_blocks: int) -> np.ndarray:
    return columns.T.reshape(n_blocks, QK_K)


def _fp16(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML_FP32_TO_FP16 (round to nearest even), and its value back as float32."""
    half = values.astype(np.float16)
    return half, half.astype(F32)


def make_qkx2_quants(x, weights, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool):
    """Scale and min of each column (an asymmetric quantizer to 0..nmax); returns (scale, the_min, L)."""
    nmax_f, rmin_f, rdelta_f = F32(nmax), F32(rmin), F32(rdelta)
    low = np.minimum(x.min(axis=0), F32(0))
    high = x.max(axis=0)
    sum_w = weights.sum(axis=0)
    sum_x = (weights * x).sum(axis=0)
    flat = high == low
    span = np.where(flat, F32(1), high - low)

    def error(scale, levels, minimum):
        diff = scale * levels + minimum - x
        return (weights * (np.abs(diff) if use_mad else diff * diff)).sum(axis=0)

    iscale = nmax_f / span
    scale = F32(1) / iscale
    levels = np.clip(np.rint(iscale * (x - low)), 0, nmax_f)
    best = error(scale, levels, low)
    for step in range(nstep + 1):
        iscale = (rmin_f + rdelta_f * F32(step) + nmax_f) / (high - low)
        trial = np.clip(np.rint(iscale * (x - low)), 0, nmax_f)
        weighted = weights * trial
        sum_l = weighted.sum(axis=0)
        sum_l2 = (weighted * trial).sum(axis=0)
        sum_xl = (weighted * x).sum(axis=0)
        det = sum_w * sum_l2 - sum_l * sum_l
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
        positive = this_min > 0
        this_min = np.where(positive, F32(0), this_min)
        this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
        current = error(this_scale, trial, this_min)
        better = (det > 0) & (current < best) & ~flat
        levels = np.where(better, trial, levels)
        best = np.where(better, current, best)
        scale = np.where(better, this_scale, scale)
        low = np.where(better, this_min, low)
    levels = np.where(flat, F32(0), levels)
    scale = np.where(flat, F32(0), scale)
    return scale, -low, levels


def _signed_max(x):
    """The value of largest magnitude in each column (the first one on ties), and that magnitude."""
    index = np.argmax(np.abs(x), axis=0)
    peak = np.take_along_axis(x, index[None, :], axis=0)[0]
    return peak, np.abs(peak)


def make_qx_quants(x, nmax: int):
    """Symmetric quantizer to -nmax..nmax-1 with weights x² (``rmse_type`` 1), searching 18 nearby scales."""
    nmax_f = F32(nmax)
    peak, amax = _signed_max(x)
    zero = amax < GROUP_MAX_EPS
    peak = np.where(zero, F32(1), peak)
    weights = x * x

    def fit(iscale):
        levels = np.clip(np.rint(iscale * x), -nmax_f, nmax_f - 1)
        return levels, (weights * x * levels).sum(axis=0), (weights * levels * levels).sum(axis=0)

    levels, sumlx, suml2 = fit(-nmax_f / peak)
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0))
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        trial, sumlx, suml2 = fit(-(nmax_f + F32(0.1) * F32(step)) / peak)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        levels = np.where(better, trial, levels)
        scale = np.where(better, sumlx / np.where(better, suml2, F32(1)), scale)
        best = np.where(better, scale * sumlx, best)
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), levels + nmax_f)


def make_q3_quants(x, nmax: int):
    """``make_q3_quants(..., do_rmse=true)``: rounding, then up to 5 passes of one-value-at-a-time refinement."""
    nmax_f = F32(nmax)
    peak, amax = _signed_max(x)
    zero = amax < GROUP_MAX_EPS
    iscale = -nmax_f / np.where(zero, F32(1), peak)
    levels = np.clip(np.rint(iscale * x), -nmax_f, nmax_f - 1)
    weights = x * x
    sumlx = (weights * x * levels).sum(axis=0)
    suml2 = (weights * levels * levels).sum(axis=0)
    active = ~zero
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(5):
            changed = np.zeros_like(active)
            for i in range(x.shape[0]):
                w, xi, li = weights[i], x[i], levels[i]
                slx = sumlx - w * xi * li
                sl2 = suml2 - w * li * li
                new = np.clip(np.rint(xi * sl2 / slx), -nmax_f, nmax_f - 1)
                slx_new = slx + w * xi * new
                sl2_new = sl2 + w * new * new
                accept = active & (slx > 0) & (new != li) & (sl2_new > 0)
                accept &= slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new
                levels[i] = np.where(accept, new, li)
                sumlx = np.where(accept, slx_new, sumlx)
                suml2 = np.where(accept, sl2_new, suml2)
                changed |= accept
            active &= changed
            if not active.any():
                break
    scale = np.where(suml2 > 0, sumlx / np.where(suml2 > 0, suml2, F32(1)), F32(0))
    return np.where(zero, F32(0), scale), np.where(zero, F32(0), levels + nmax_f)


def _requantize(x_cols, levels, d_sub, dm_sub, lo: int, hi: int, offset: int):
    """Final levels from the stored (fp16-rounded) scales; sub-blocks whose scale is 0 keep their search levels."""
    keep = d_sub == 0
    safe = np.where(keep, F32(1), d_sub)
    fresh = np.clip(np.rint((x_cols + dm_sub) / safe), lo, hi) + offset
    return np.where(keep, levels, fresh)


def _pack_2bit(levels: np.ndarray) -> np.ndarray:
    """qs of Q2_K/Q3_K: byte l of each 128-value half holds values l, l+32, l+64, l+96 (2 bits each)."""
    q = levels.astype(np.uint8).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """The 12 scale bytes of Q4_K/Q5_K: eight 6-bit scales and eight 6-bit mins."""
    out = np.zeros((ls.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """C's conversion of an int to uint8_t (wraps modulo 256)."""
    return (values.astype(np.int64) & 0xFF).astype(np.uint8)


def _q2_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    cols = _columns(x, 16)
    scales, mins, levels = make_qkx2_quants(cols, np.abs(cols), 3, -0.5, 0.1, 15, True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    q4 = F32(15)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(max_scale[:, None] > 0, np.rint((q4 / max_scale)[:, None] * scales), F32(0))
        lm = np.where(max_min[:, None] > 0, np.rint((q4 / max_min)[:, None] * mins), F32(0))
    sc = _to_uint8(ls) | (_to_uint8(lm) << 4)
    d16, d = _fp16(np.where(max_scale > 0, max_scale / q4, F32(0)))
    m16, dmin = _fp16(np.where(max_min > 0, max_min / q4, F32(0)))
    d_sub = (d[:, None] * (sc & 0xF).astype(F32)).reshape(1, -1)
    dm_sub = (dmin[:, None] * (sc >> 4).astype(F32)).reshape(1, -1)
    levels = _rows(_requantize(cols, levels, d_sub, dm_sub, 0, 3, 0), nb)
    return np.concatenate([sc, _pack_2bit(levels), d16.view(np.uint8).reshape(nb, 2),
                           m16.view(np.uint8).reshape(nb, 2)], axis=1)


def _q3_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    cols = _columns(x, 16)
    scales, levels = make_q3_quants(cols, 4)
    scales = scales.reshape(nb, 16)
    max_scale, _ = _signed_max(scales.T)
    has = max_scale != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(has, F32(-32) / max_scale, F32(0))
        inv = np.where(has, F32(1) / iscale, F32(0))
    ls = np.where(has[:, None], np.clip(np.rint(iscale[:, None] * scales), -32, 31) + 32, F32(0)).astype(np.uint8)
    packed = np.zeros((nb, 12), dtype=np.uint8)
    packed[:, :8] = (ls[:, :8] & 0xF) | ((ls[:, 8:] & 0xF) << 4)
    high = (ls >> 4).reshape(nb, 4, 4)  # [j // 4, j % 4]
    packed[:, 8:] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
    d16, d = _fp16(inv)
    d_sub = (d[:, None] * (ls.astype(F32) - 32)).reshape(1, -1)
    levels = _rows(_requantize(cols, levels, d_sub, F32(0), -4, 3, 4), nb).astype(np.uint8)
    high_bit = (levels > 3).reshape(nb, 8, 32)  # value j → hmask byte j % 32, bit j // 32
    hmask = np.zeros((nb, 32), dtype=np.uint8)
    for bit in range(8):
        hmask |= high_bit[:, bit].astype(np.uint8) << bit
    levels = np.where(levels > 3, levels - 4, levels)
    return np.concatenate([hmask, _pack_2bit(levels), packed, d16.view(np.uint8).reshape(nb, 2)], axis=1)


def _q45_k(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The shared part of Q4_K and Q5_K: d, dmin (fp16 bytes), the 12 scale bytes and the levels."""
    nb = x.shape[0]
    cols = _columns(x, 32)
    av_x = np.sqrt((cols * cols).sum(axis=0) / F32(32))
    scales, mins, levels = make_qkx2_quants(cols, av_x + np.abs(cols), nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
    ls = np.minimum(_to_uint8(np.rint(inv_scale[:, None] * scales)), 63)
    lm = np.minimum(_to_uint8(np.rint(inv_min[:, None] * mins)), 63)
    d16, d = _fp16(max_scale / F32(63))
    m16, dmin = _fp16(max_min / F32(63))
    d_sub = (d[:, None] * ls.astype(F32)).reshape(1, -1)
    dm_sub = (dmin[:, None] * lm.astype(F32)).reshape(1, -1)
    levels = _rows(_requantize(cols, levels, d_sub, dm_sub, 0, nmax, 0), nb).astype(np.uint8)
    head = np.concatenate([d16.view(np.uint8).reshape(nb, 2), m16.view(np.uint8).reshape(nb, 2),
                           _pack_scale_min_k4(ls, lm)], axis=1)
    return head, levels.reshape(nb, 4, 2, 32), levels


def _q4_k(x: np.ndarray) -> np.ndarray:
    head, pairs, _ = _q45_k(x, 15, -1.0, 20)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(x.shape[0], 128)
    return np.concatenate([head, qs], axis=1)


def _q5_k(x: np.ndarray) -> np.ndarray:
    head, pairs, _ = _q45_k(x, 31, -0.5, 15)
    nb = x.shape[0]
    qh = np.zeros((nb, 32), dtype=np.uint8)
    for k in range(4):  # values 64k..64k+31 set bit 2k of qh, values 64k+32.. bit 2k+1
        qh |= (pairs[:, k, 0] >> 4) << (2 * k)
        qh |= (pairs[:, k, 1] >> 4) << (2 * k + 1)
    low = pairs & 0xF
    qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(nb, 128)
    return np.concatenate([head, qh, qs], axis=1)


def _q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    cols = _columns(x, 16)
    scales, levels = make_qx_quants(cols, 32)
    scales = scales.reshape(nb, 16)
    max_scale, _ = _signed_max(scales.T)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        iscale = np.where(zero, F32(0), F32(-128) / max_scale)
        d16, d = _fp16(np.where(zero, F32(0), F32(1) / iscale))
    sc = np.minimum(np.rint(iscale[:, None] * scales), 127).astype(np.int8)
    d_sub = (d[:, None] * sc.astype(F32)).reshape(1, -1)
    levels = _rows(_requantize(cols, levels, d_sub, F32(0), -32, 31, 32), nb).astype(np.uint8)
    q = levels.reshape(nb, 2, 4, 32)  # [half, quarter, l]
    ql = np.concatenate([(q[:, :, 0] & 0xF) | ((q[:, :, 2] & 0xF) << 4),
                         (q[:, :, 1] & 0xF) | ((q[:, :, 3] & 0xF) << 4)], axis=2).reshape(nb, 128)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4)
          | ((q[:, :, 3] >> 4) << 6)).reshape(nb, 64)
    block = np.concatenate([ql, qh, sc.view(np.uint8), d16.view(np.uint8).reshape(nb, 2)], axis=1)
    block[zero] = 0  # llama.cpp memsets an all-zero super-block
    return block


ENCODERS = {"Q2_K": _q2_k, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def quantize_k(data: np.ndarray, type_name: str) -> np.ndarray:
    """Quantize a float array whose last dimension is a multiple of 256 to ``type_name`` (e.g. "Q4_K").

    Returns uint8 of shape (*data.shape[:-1], data.shape[-1] // 256 * block bytes), the layout gguf writes.
    """
    if data.shape[-1] % QK_K:
        raise ValueError(f"{type_name} needs rows that are a multiple of {QK_K} values, not {data.shape[-1]}")
    encode = ENCODERS[type_name]
    blocks = np.ascontiguousarray(data, dtype=F32).reshape(-1, QK_K)
    out = np.empty((blocks.shape[0], BLOCK_BYTES[type_name]), dtype=np.uint8)
    step = max(1, CHUNK_VALUES // QK_K)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, blocks.shape[0], step):
            out[start:start + step] = encode(blocks[start:start + step])
    return out.reshape(*data.shape[:-1], data.shape[-1] // QK_K * BLOCK_BYTES[type_name])
