"""A line-by-line scalar transcription of ggml's ``quantize_row_q{2..6}_K_ref`` (ggml-quants.c), float32 throughout.

Slow (pure Python loops); the tests run it on a few super-blocks to check the vectorized encoders in
``fnsft.export.kquants`` value by value. It shares no code with them.
"""

from __future__ import annotations

import math

import numpy as np

f = np.float32
QK_K = 256
EPS = f(1e-15)


def nearest_int(v) -> int:
    return int(np.rint(f(v)))  # ggml's float trick rounds half to even


def fp16(v):
    h = np.float16(f(v))
    return h, f(h)


def make_qkx2_quants(n, nmax, x, weights, rmin, rdelta, nstep, use_mad):
    L = [0] * n
    mn, mx = x[0], x[0]
    sum_w = weights[0]
    sum_x = f(sum_w * x[0])
    for i in range(1, n):
        mn = min(mn, x[i])
        mx = max(mx, x[i])
        sum_w = f(sum_w + weights[i])
        sum_x = f(sum_x + f(weights[i] * x[i]))
    if mn > 0:
        mn = f(0)
    if mx == mn:
        return f(0), f(-mn), [0] * n
    iscale = f(f(nmax) / f(mx - mn))
    scale = f(f(1) / iscale)
    best = f(0)
    for i in range(n):
        L[i] = max(0, min(nmax, nearest_int(f(iscale * f(x[i] - mn)))))
        diff = f(f(f(scale * f(L[i])) + mn) - x[i])
        diff = abs(diff) if use_mad else f(diff * diff)
        best = f(best + f(weights[i] * diff))
    for step in range(nstep + 1):
        iscale = f(f(f(f(rmin) + f(f(rdelta) * f(step))) + f(nmax)) / f(mx - mn))
        aux = [0] * n
        sum_l = sum_l2 = sum_xl = f(0)
        for i in range(n):
            aux[i] = max(0, min(nmax, nearest_int(f(iscale * f(x[i] - mn)))))
            w = weights[i]
            sum_l = f(sum_l + f(w * f(aux[i])))
            sum_l2 = f(sum_l2 + f(f(w * f(aux[i])) * f(aux[i])))
            sum_xl = f(sum_xl + f(f(w * f(aux[i])) * x[i]))
        det = f(f(sum_w * sum_l2) - f(sum_l * sum_l))
        if det > 0:
            this_scale = f(f(f(sum_w * sum_xl) - f(sum_x * sum_l)) / det)
            this_min = f(f(f(sum_l2 * sum_x) - f(sum_l * sum_xl)) / det)
            if this_min > 0:
                this_min = f(0)
                this_scale = f(sum_xl / sum_l2)
            cur = f(0)
            for i in range(n):
                diff = f(f(f(this_scale * f(aux[i])) + this_min) - x[i])
                diff = abs(diff) if use_mad else f(diff * diff)
                cur = f(cur + f(weights[i] * diff))
            if cur < best:
                L, best, scale, mn = aux, cur, this_scale, this_min
    return scale, f(-mn), L


def _peak(x):
    amax, peak = f(0), f(0)
    for v in x:
        if abs(v) > amax:
            amax, peak = abs(v), v
    return amax, peak


def make_qx_quants(n, nmax, x):
    amax, peak = _peak(x)
    if amax < EPS:
        return f(0), [0] * n
    iscale = f(f(-nmax) / peak)
    sumlx = suml2 = f(0)
    L = [0] * n
    for i in range(n):
        lv = max(-nmax, min(nmax - 1, nearest_int(f(iscale * x[i]))))
        L[i] = lv + nmax
        w = f(x[i] * x[i])
        sumlx = f(sumlx + f(f(w * x[i]) * f(lv)))
        suml2 = f(suml2 + f(f(w * f(lv)) * f(lv)))
    scale = f(sumlx / suml2) if suml2 else f(0)
    best = f(scale * sumlx)
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = f(-f(f(nmax) + f(f(0.1) * f(step))) / peak)
        sumlx = suml2 = f(0)
        for i in range(n):
            lv = max(-nmax, min(nmax - 1, nearest_int(f(iscale * x[i]))))
            w = f(x[i] * x[i])
            sumlx = f(sumlx + f(f(w * x[i]) * f(lv)))
            suml2 = f(suml2 + f(f(w * f(lv)) * f(lv)))
        if suml2 > 0 and f(sumlx * sumlx) > f(best * suml2):
            L = [nmax + max(-nmax, min(nmax - 1, nearest_int(f(iscale * v)))) for v in x]
            scale = f(sumlx / suml2)
            best = f(scale * sumlx)
    return scale, L


def make_q3_quants(n, nmax, x):
    amax, peak = _peak(x)
    if amax < EPS:
        return f(0), [0] * n
    iscale = f(f(-nmax) / peak)
    L = [0] * n
    sumlx = suml2 = f(0)
    for i in range(n):
        L[i] = max(-nmax, min(nmax - 1, nearest_int(f(iscale * x[i]))))
        w = f(x[i] * x[i])
        sumlx = f(sumlx + f(f(w * x[i]) * f(L[i])))
        suml2 = f(suml2 + f(f(w * f(L[i])) * f(L[i])))
    for _ in range(5):
        changed = 0
        for i in range(n):
            w = f(x[i] * x[i])
            slx = f(sumlx - f(f(w * x[i]) * f(L[i])))
            if slx > 0:
                sl2 = f(suml2 - f(f(w * f(L[i])) * f(L[i])))
                new = max(-nmax, min(nmax - 1, nearest_int(f(f(x[i] * sl2) / slx))))
                if new != L[i]:
                    slx = f(slx + f(f(w * x[i]) * f(new)))
                    sl2 = f(sl2 + f(f(w * f(new)) * f(new)))
                    if sl2 > 0 and f(f(slx * slx) * suml2) > f(f(sumlx * sumlx) * sl2):
                        L[i], sumlx, suml2 = new, slx, sl2
                        changed += 1
        if not changed:
            break
    return (f(sumlx / suml2) if suml2 > 0 else f(0)), [v + nmax for v in L]


def _u8(v: int) -> int:
    return v & 0xFF


def _h(h) -> list[int]:
    return list(np.array([h], dtype=np.float16).view(np.uint8))


def _pack2(L) -> list[int]:
    qs = [0] * 64
    for j in range(0, QK_K, 128):
        for k in range(32):
            qs[j // 4 + k] = L[j + k] | (L[j + k + 32] << 2) | (L[j + k + 64] << 4) | (L[j + k + 96] << 6)
    return qs


def q2_k(x) -> bytes:
    x = [f(v) for v in x]
    L, scales, mins = [0] * QK_K, [f(0)] * 16, [f(0)] * 16
    max_scale = max_min = f(0)
    for j in range(16):
        sub = x[16 * j:16 * j + 16]
        scales[j], mins[j], L[16 * j:16 * j + 16] = make_qkx2_quants(16, 3, sub, [abs(v) for v in sub], -0.5, 0.1, 15, True)
        max_scale = max(max_scale, scales[j])
        max_min = max(max_min, mins[j])
    sc = [0] * 16
    if max_scale > 0:
        iscale = f(f(15) / max_scale)
        sc = [_u8(nearest_int(f(iscale * s))) for s in scales]
        d16, d = fp16(f(max_scale / f(15)))
    else:
        d16, d = fp16(0)
    if max_min > 0:
        iscale = f(f(15) / max_min)
        sc = [_u8(s | (nearest_int(f(iscale * m)) << 4)) for s, m in zip(sc, mins, strict=True)]
        m16, dmin = fp16(f(max_min / f(15)))
    else:
        m16, dmin = fp16(0)
    for j in range(16):
        dj = f(d * f(sc[j] & 0xF))
        if not dj:
            continue
        dm = f(dmin * f(sc[j] >> 4))
        for ii in range(16):
            L[16 * j + ii] = max(0, min(3, nearest_int(f(f(x[16 * j + ii] + dm) / dj))))
    return bytes(sc + _pack2(L) + _h(d16) + _h(m16))


def q3_k(x) -> bytes:
    x = [f(v) for v in x]
    L, scales = [0] * QK_K, [f(0)] * 16
    amax = max_scale = f(0)
    for j in range(16):
        scales[j], L[16 * j:16 * j + 16] = make_q3_quants(16, 4, x[16 * j:16 * j + 16])
        if abs(scales[j]) > amax:
            amax, max_scale = abs(scales[j]), scales[j]
    packed = [0] * 12
    if max_scale:
        iscale = f(f(-32) / max_scale)
        for j in range(16):
            lv = max(-32, min(31, nearest_int(f(iscale * scales[j])))) + 32
            if j < 8:
                packed[j] = lv & 0xF
            else:
                packed[j - 8] |= (lv & 0xF) << 4
            packed[j % 4 + 8] |= (lv >> 4) << (2 * (j // 4))
        d16, d = fp16(f(f(1) / iscale))
    else:
        d16, d = fp16(0)
    for j in range(16):
        s = packed[j] & 0xF if j < 8 else packed[j - 8] >> 4
        s = (s | (((packed[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
        dj = f(d * f(s))
        if not dj:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, nearest_int(f(x[16 * j + ii] / dj)))) + 4
    hmask = [0] * 32
    for j in range(QK_K):
        if L[j] > 3:
            hmask[j % 32] |= 1 << (j // 32)
            L[j] -= 4
    return bytes(hmask + _pack2(L) + packed + _h(d16))


def _q45_k(x, nmax, rmin, nstep):
    x = [f(v) for v in x]
    L, scales, mins = [0] * QK_K, [f(0)] * 8, [f(0)] * 8
    max_scale = max_min = f(0)
    for j in range(8):
        sub = x[32 * j:32 * j + 32]
        sum_x2 = f(0)
        for v in sub:
            sum_x2 = f(sum_x2 + f(v * v))
        av_x = f(math.sqrt(f(sum_x2 / f(32))))
        weights = [f(av_x + abs(v)) for v in sub]
        scales[j], mins[j], L[32 * j:32 * j + 32] = make_qkx2_quants(32, nmax, sub, weights, rmin, 0.1, nstep, False)
        max_scale = max(max_scale, scales[j])
        max_min = max(max_min, mins[j])
    inv_scale = f(f(63) / max_scale) if max_scale > 0 else f(0)
    inv_min = f(f(63) / max_min) if max_min > 0 else f(0)
    packed = [0] * 12
    ls_all, lm_all = [], []
    for j in range(8):
        ls = min(63, _u8(nearest_int(f(inv_scale * scales[j]))))
        lm = min(63, _u8(nearest_int(f(inv_min * mins[j]))))
        ls_all.append(ls)
        lm_all.append(lm)
        if j < 4:
            packed[j], packed[j + 4] = ls, lm
        else:
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            packed[j - 4] |= (ls >> 4) << 6
            packed[j] |= (lm >> 4) << 6
    d16, d = fp16(f(max_scale / f(63)))
    m16, dmin = fp16(f(max_min / f(63)))
    for j in range(8):
        dj = f(d * f(ls_all[j]))
        if not dj:
            continue
        dm = f(dmin * f(lm_all[j]))
        for ii in range(32):
            L[32 * j + ii] = max(0, min(nmax, nearest_int(f(f(x[32 * j + ii] + dm) / dj))))
    return _h(d16) + _h(m16) + packed, L


def q4_k(x) -> bytes:
    head, L = _q45_k(x, 15, -1.0, 20)
    qs = []
    for j in range(0, QK_K, 64):
        qs += [L[j + k] | (L[j + k + 32] << 4) for k in range(32)]
    return bytes(head + qs)


def q5_k(x) -> bytes:
    head, L = _q45_k(x, 31, -0.5, 15)
    qh, ql = [0] * 32, []
    m1, m2 = 1, 2
    for n in range(0, QK_K, 64):
        for j in range(32):
            l1, l2 = L[n + j], L[n + j + 32]
            if l1 > 15:
                l1 -= 16
                qh[j] |= m1
            if l2 > 15:
                l2 -= 16
                qh[j] |= m2
            ql.append(l1 | (l2 << 4))
        m1 <<= 2
        m2 <<= 2
    return bytes(head + qh + ql)


def q6_k(x) -> bytes:
    x = [f(v) for v in x]
    L, scales = [0] * QK_K, [f(0)] * 16
    max_abs = max_scale = f(0)
    for j in range(16):
        scales[j], L[16 * j:16 * j + 16] = make_qx_quants(16, 32, x[16 * j:16 * j + 16])
        if abs(scales[j]) > max_abs:
            max_abs, max_scale = abs(scales[j]), scales[j]
    if max_abs < EPS:
        return bytes(210)
    iscale = f(f(-128) / max_scale)
    d16, d = fp16(f(f(1) / iscale))
    sc = [min(127, nearest_int(f(iscale * s))) for s in scales]
    for j in range(16):
        dj = f(d * f(sc[j]))
        if not dj:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int(f(x[16 * j + ii] / dj)))) + 32
    ql, qh = [0] * 128, [0] * 64
    for j in range(0, QK_K, 128):
        for k in range(32):
            q1, q2, q3, q4 = (L[j + k + offset] for offset in (0, 32, 64, 96))
            ql[j // 2 + k] = (q1 & 0xF) | ((q3 & 0xF) << 4)
            ql[j // 2 + k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4)
            qh[j // 4 + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
    return bytes(ql + qh + [v & 0xFF for v in sc] + _h(d16))


REFERENCE = {"Q2_K": q2_k, "Q3_K": q3_k, "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}
