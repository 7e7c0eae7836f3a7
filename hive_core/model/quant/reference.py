"""Scalar transcriptions of ggml's reference quantisers, one value at a time in float32.

Slow (pure Python loops) and kept only as the yardstick: the vectorised quantisers in
`legacy` and `kquants` must give these bytes exactly. Each function takes one block of
float32 values (32, or 256 for the K formats) and returns its bytes. Every arithmetic step
is a numpy float32 scalar operation, so rounding happens where C's ``float`` rounds (no
fused multiply-adds: a compiler contracting ``a*b + c`` would differ in the last bit).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

F = np.float32
_EPS = F(1e-15)
Num = float | np.floating[Any]


def nearest_int(v: Num) -> int:
    bits = struct.unpack("<i", struct.pack("<f", F(v) + F(12582912.0)))[0]
    return (bits & 0x007FFFFF) - 0x00400000


def _fp16(v: Num) -> tuple[bytes, np.float32]:
    """The fp16 bytes of `v` and the float32 they read back as."""
    with np.errstate(over="ignore"):
        half = np.float16(F(v))
    return half.tobytes(), F(half)


def _roundf(v: np.float32) -> int:
    a = abs(float(v))
    whole = int(a)
    r = whole + (1 if a - whole >= 0.5 else 0)
    return -r if v < 0 else r


def _signed_max(x: Sequence[np.float32]) -> np.float32:
    amax, mx = F(0), F(0)
    for v in x:
        if amax < abs(v):
            amax, mx = abs(v), v
    return mx


def _inv(d: np.float32) -> np.float32:
    return F(1) / d if d else F(0)


def _pack_low_high(q: list[int]) -> bytes:
    return bytes((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) for j in range(16))


def _qh(q: list[int]) -> bytes:
    bits = 0
    for j, v in enumerate(q):
        bits |= ((v & 0x10) >> 4) << j
    return struct.pack("<I", bits)


def q4_0(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    d = _signed_max(xs) / F(-8)
    inv = _inv(d)
    q = [min(15, int(v * inv + F(8.5))) for v in xs]
    return _fp16(d)[0] + _pack_low_high(q)


def q4_1(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    lo, hi = min(xs), max(xs)
    d = (hi - lo) / F(15)
    inv = _inv(d)
    q = [min(15, int((v - lo) * inv + F(0.5))) for v in xs]
    return _fp16(d)[0] + _fp16(lo)[0] + _pack_low_high(q)


def q5_0(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    d = _signed_max(xs) / F(-16)
    inv = _inv(d)
    q = [min(31, int(v * inv + F(16.5))) for v in xs]
    return _fp16(d)[0] + _qh(q) + _pack_low_high(q)


def q5_1(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    lo, hi = min(xs), max(xs)
    d = (hi - lo) / F(31)
    inv = _inv(d)
    q = [int((v - lo) * inv + F(0.5)) & 0xFF for v in xs]
    return _fp16(d)[0] + _fp16(lo)[0] + _qh(q) + _pack_low_high(q)


def q8_0(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    amax = F(0)
    for v in xs:
        amax = max(amax, abs(v))
    d = amax / F(127)
    inv = _inv(d)
    return _fp16(d)[0] + bytes(_roundf(v * inv) & 0xFF for v in xs)


def make_qkx2_quants(x: list[np.float32], w: list[np.float32], nmax: int, rmin: float,
                     rdelta: float, nstep: int) -> tuple[list[int], np.float32, np.float32]:
    """``make_qkx2_quants`` (``use_mad`` false): codes, scale, and the minimum to subtract."""
    n = len(x)
    lo = hi = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if lo > 0:
        lo = F(0)
    if hi == lo:
        return [0] * n, F(0), -lo
    iscale = F(nmax) / (hi - lo)
    scale = F(1) / iscale
    codes = [max(0, min(nmax, nearest_int(iscale * (v - lo)))) for v in x]
    best = F(0)
    for i in range(n):
        diff = scale * F(codes[i]) + lo - x[i]
        best += w[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (F(rmin) + F(rdelta) * F(step) + F(nmax)) / (hi - lo)
        aux = [max(0, min(nmax, nearest_int(iscale * (v - lo)))) for v in x]
        sum_l = sum_l2 = sum_xl = F(0)
        for i in range(n):
            wl = w[i] * F(aux[i])
            sum_l += wl
            sum_l2 += wl * F(aux[i])
            sum_xl += wl * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = F(0)
                this_scale = sum_xl / sum_l2
            error = F(0)
            for i in range(n):
                diff = this_scale * F(aux[i]) + this_min - x[i]
                error += w[i] * (diff * diff)
            if error < best:
                codes, best, scale, lo = aux, error, this_scale, this_min
    return codes, scale, -lo


def make_qx_quants(x: list[np.float32], nmax: int) -> tuple[list[int], np.float32]:
    """``make_qx_quants`` with ``rmse_type`` 1 and no importance weights (weights ``x²``)."""
    n = len(x)
    amax = mx = F(0)
    for v in x:
        if abs(v) > amax:
            amax, mx = abs(v), v
    if amax < _EPS:
        return [0] * n, F(0)
    w = [v * v for v in x]

    def fit(iscale: np.float32) -> tuple[list[int], np.float32, np.float32]:
        q = [max(-nmax, min(nmax - 1, nearest_int(iscale * v))) for v in x]
        sumlx = suml2 = F(0)
        for i in range(n):
            sumlx += w[i] * x[i] * F(q[i])
            suml2 += w[i] * F(q[i]) * F(q[i])
        return q, sumlx, suml2

    q, sumlx, suml2 = fit(F(-nmax) / mx)
    codes = [v + nmax for v in q]
    scale = sumlx / suml2 if suml2 else F(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        q, sumlx, suml2 = fit(-(F(nmax) + F(0.1) * F(step)) / mx)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            codes = [v + nmax for v in q]
            scale = sumlx / suml2
            best = scale * sumlx
    return codes, scale


def _k_scales(x: list[np.float32], nmax: int, rmin: float, rdelta: float, nstep: int
              ) -> tuple[bytes, list[int]]:
    """Q4_K/Q5_K's d, dmin and 12 scale bytes, and the final codes."""
    codes: list[int] = []
    scales: list[np.float32] = []
    mins: list[np.float32] = []
    for j in range(8):
        sub = x[32 * j:32 * j + 32]
        sum_x2 = F(0)
        for v in sub:
            sum_x2 += v * v
        av_x = np.sqrt(sum_x2 / F(32))
        c, s, m = make_qkx2_quants(sub, [av_x + abs(v) for v in sub], nmax, rmin, rdelta, nstep)
        codes += c
        scales.append(s)
        mins.append(m)
    max_scale = max_min = F(0)
    for s, m in zip(scales, mins, strict=True):
        max_scale = max(max_scale, s)
        max_min = max(max_min, m)
    inv_scale = F(63) / max_scale if max_scale > 0 else F(0)
    inv_min = F(63) / max_min if max_min > 0 else F(0)
    ls = [min(63, nearest_int(inv_scale * s) & 0xFF) for s in scales]
    lm = [min(63, nearest_int(inv_min * m) & 0xFF) for m in mins]
    packed = [0] * 12
    for j in range(8):
        if j < 4:
            packed[j], packed[j + 4] = ls[j], lm[j]
        else:
            packed[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
            packed[j - 4] |= (ls[j] >> 4) << 6
            packed[j] |= (lm[j] >> 4) << 6
    d_bytes, d16 = _fp16(max_scale / F(63))
    dmin_bytes, dmin16 = _fp16(max_min / F(63))
    for j in range(8):
        d = d16 * F(ls[j])
        if not d:
            continue
        dm = dmin16 * F(lm[j])
        for i in range(32 * j, 32 * j + 32):
            codes[i] = max(0, min(nmax, nearest_int((x[i] + dm) / d)))
    return d_bytes + dmin_bytes + bytes(packed), codes


def q4_k(x: Sequence[float]) -> bytes:
    head, codes = _k_scales([F(v) for v in x], 15, -1.0, 0.1, 20)
    qs = bytearray()
    for j in range(0, 256, 64):
        qs += bytes(codes[j + i] | (codes[j + i + 32] << 4) for i in range(32))
    return head + bytes(qs)


def q5_k(x: Sequence[float]) -> bytes:
    head, codes = _k_scales([F(v) for v in x], 31, -0.5, 0.1, 15)
    qh = [0] * 32
    ql = bytearray()
    m1, m2 = 1, 2
    for n in range(0, 256, 64):
        for j in range(32):
            l1, l2 = codes[n + j], codes[n + j + 32]
            if l1 > 15:
                l1 -= 16
                qh[j] |= m1
            if l2 > 15:
                l2 -= 16
                qh[j] |= m2
            ql.append(l1 | (l2 << 4))
        m1, m2 = m1 << 2, m2 << 2
    return head + bytes(qh) + bytes(ql)


def q6_k(x: Sequence[float]) -> bytes:
    xs = [F(v) for v in x]
    codes: list[int] = []
    scales: list[np.float32] = []
    max_scale = max_abs = F(0)
    for ib in range(16):
        c, s = make_qx_quants(xs[16 * ib:16 * ib + 16], 32)
        codes += c
        scales.append(s)
        if abs(s) > max_abs:
            max_abs, max_scale = abs(s), s
    if max_abs < _EPS:
        return bytes(210)
    iscale = F(-128) / max_scale
    d_bytes, d16 = _fp16(F(1) / iscale)
    sc = [int(np.int32(min(127, nearest_int(iscale * s))).astype(np.int8)) for s in scales]
    for j in range(16):
        d = d16 * F(sc[j])
        if not d:
            continue
        for i in range(16 * j, 16 * j + 16):
            codes[i] = max(-32, min(31, nearest_int(xs[i] / d))) + 32
    ql, qh = bytearray(128), bytearray(64)
    for h, j in enumerate((0, 128)):
        for i in range(32):
            q = [codes[j + i + 32 * k] for k in range(4)]
            ql[64 * h + i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4)
            ql[64 * h + i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4)
            qh[32 * h + i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6)
    return bytes(ql) + bytes(qh) + bytes(v & 0xFF for v in sc) + d_bytes


REFERENCE = {"Q4_0": q4_0, "Q4_1": q4_1, "Q5_0": q5_0, "Q5_1": q5_1, "Q8_0": q8_0,
             "Q4_K": q4_k, "Q5_K": q5_k, "Q6_K": q6_k}
"""Format name -> scalar quantiser of one block."""
