"""The 256-value super-block formats (Q4_K, Q5_K, Q6_K) quantised as ggml's
``quantize_row_q{4,5,6}_K_ref`` does, vectorised over blocks.

The searches (`make_qkx2_quants` for Q4_K/Q5_K's scale and minimum per 32 values,
`make_qx_quants` for Q6_K's scale per 16) run for every sub-block at once: arrays hold one
column per sub-block, element-major, so each reference loop ``s += v[i]`` becomes one vector
add per element and the float32 sums come out with the reference's bits. A sub-block that
improves at a search step takes the new codes, scale and minimum (`np.where`), as the scalar
loop would. The slow scalar transcription in `reference` checks this one bit for bit.
"""

from __future__ import annotations

import numpy as np

from hive_core.model.quant._numeric import (
    F32,
    first_argmax,
    fp16_bytes,
    fp16_round,
    nearest_int,
    seq_sum,
)

QK_K = 256
GROUP_MAX_EPS = F32(1e-15)


def make_qkx2(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
              nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes in 0..nmax, scale and minimum for each column of `x` (element-major, shape
    ``(n, groups)``) with weights `w`, fitting ``x ≈ scale * L - min``: the reference's
    grid of ``nstep + 1`` trial scales, each refined by weighted least squares.

    Returns ``(L, scale, min)``: codes shaped like `x`, scale and min per column.
    """
    with np.errstate(all="ignore"):  # flat columns divide by zero; they are reset below
        lo = x.min(axis=0)
        hi = x.max(axis=0)
        lo = np.where(lo > 0, F32(0), lo)
        flat = hi == lo
        sum_w = seq_sum(w)
        sum_x = seq_sum(w * x)
        iscale = F32(nmax) / (hi - lo)
        scale = F32(1) / iscale
        codes = np.clip(nearest_int(iscale * (x - lo)), 0, nmax).astype(F32)
        diff = scale * codes + lo - x
        best = seq_sum(w * (diff * diff))
        for step in range(nstep + 1):
            trial = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (hi - lo)
            aux = np.clip(nearest_int(trial * (x - lo)), 0, nmax).astype(F32)
            wl = w * aux
            sum_l, sum_l2, sum_xl = seq_sum(wl), seq_sum(wl * aux), seq_sum(wl * x)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive = this_min > 0
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            this_min = np.where(positive, F32(0), this_min)
            diff = this_scale * aux + this_min - x
            error = seq_sum(w * (diff * diff))
            better = (det > 0) & (error < best)
            codes = np.where(better, aux, codes)
            best = np.where(better, error, best)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)
    codes = np.where(flat, F32(0), codes)
    scale = np.where(flat, F32(0), scale)
    return codes.astype(np.uint8), scale.astype(F32), (-lo).astype(F32)


def make_qx(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed codes (stored as ``l + nmax`` in 0..2*nmax-1) and scale for each column of `x`
    (element-major), weights ``x²`` (``rmse_type`` 1): the reference's 19 trial scales
    around ``-nmax / max``, keeping the one with the best weighted least-squares fit."""
    with np.errstate(all="ignore"):
        mag = np.abs(x)
        idx = first_argmax(mag, axis=0)
        cols = np.arange(x.shape[1])
        amax = np.where(mag > 0, mag, F32(0))[idx, cols]
        top = x[idx, cols]
        zero = amax < GROUP_MAX_EPS
        w = x * x
        wx = w * x

        def fit(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            q = np.clip(nearest_int(iscale * x), -nmax, nmax - 1)
            qf = q.astype(F32)
            return q, seq_sum(wx * qf), seq_sum((w * qf) * qf)

        q, sumlx, suml2 = fit(F32(-nmax) / top)
        codes = q + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0))
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            q, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / top)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            codes = np.where(better, q + nmax, codes)
            scale = np.where(better, sumlx / suml2, scale)
            best = np.where(better, scale * sumlx, best)
    codes = np.where(zero, 0, codes)
    scale = np.where(zero, F32(0), scale)
    return codes.astype(np.uint8), scale.astype(F32)


def _columns(x: np.ndarray, size: int) -> np.ndarray:
    """Blocks ``(n, 256)`` as sub-block columns ``(size, n * 256 / size)``, element-major."""
    return np.ascontiguousarray(x.reshape(-1, size).T)


def _max_positive(v: np.ndarray) -> np.ndarray:
    """The reference's ``if (v > best) best = v`` scan from zero, per row."""
    return np.where(v > 0, v, F32(0)).max(axis=1)


def _six_bit(values: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """``MIN(63, (uint8_t)nearest_int(inverse * v))`` per sub-block."""
    with np.errstate(all="ignore"):
        return np.minimum(nearest_int(inverse[:, None] * values) & 0xFF, 63).astype(np.uint8)


def _pack_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins into Q4_K/Q5_K's 12 bytes (``get_scale_min_k4``'s
    inverse): the first four of each whole, the last four split into nibbles and top bits."""
    out = np.empty((len(ls), 12), np.uint8)
    out[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    out[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    return out


def _scaled_min_codes(x: np.ndarray, nmax: int, rmin: float, rdelta: float,
                      nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's common part: per super-block fp16 ``d``/``dmin`` bytes, the 12 scale
    bytes, and the final codes ``(n, 256)`` requantised with the stored scales."""
    n = len(x)
    cols = _columns(x, 32)
    with np.errstate(all="ignore"):
        av_x = np.sqrt(seq_sum(cols * cols) / F32(32))
        weights = av_x + np.abs(cols)
    codes, scales, mins = make_qkx2(cols, weights, nmax, rmin, rdelta, nstep)
    codes = codes.T.reshape(n, QK_K)
    scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
    max_scale, max_min = _max_positive(scales), _max_positive(mins)
    with np.errstate(all="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        ls, lm = _six_bit(scales, inv_scale), _six_bit(mins, inv_min)
        d_raw, dmin_raw = max_scale / F32(63), max_min / F32(63)
        d = fp16_round(d_raw)[:, None] * ls.astype(F32)
        dm = fp16_round(dmin_raw)[:, None] * lm.astype(F32)
        # Every value again with the scale and minimum the block now stores.
        sub = x.reshape(n, 8, 32)
        again = nearest_int((sub + dm[:, :, None]) / d[:, :, None])
        again = np.clip(again, 0, nmax).astype(np.uint8)
    keep = (d == 0)[:, :, None]  # the reference skips a zero scale and keeps its first codes
    codes = np.where(keep, codes.reshape(n, 8, 32), again).reshape(n, QK_K)
    head = np.concatenate([fp16_bytes(d_raw), fp16_bytes(dmin_raw), _pack_scales(ls, lm)], axis=1)
    return head, codes, d, dm


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Super-blocks ``(n, 256)`` float32 -> Q4_K bytes ``(n, 144)``: d, dmin, 12 scale
    bytes, then 128 bytes of 4-bit codes (32 values of a 64 in low nibbles, 32 in high)."""
    head, codes, _, _ = _scaled_min_codes(x, 15, -1.0, 0.1, 20)
    q = codes.reshape(len(x), 4, 2, 32)
    qs = q[:, :, 0, :] | (q[:, :, 1, :] << 4)
    return np.concatenate([head, qs.reshape(len(x), 128)], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    """Super-blocks -> Q5_K bytes ``(n, 176)``: d, dmin, 12 scale bytes, 32 bytes of fifth
    bits (bit 2k and 2k+1 for the k-th 64 values' halves), 128 bytes of low nibbles."""
    head, codes, _, _ = _scaled_min_codes(x, 31, -0.5, 0.1, 15)
    q = codes.reshape(len(x), 4, 2, 32)
    low = q & 0x0F
    qs = low[:, :, 0, :] | (low[:, :, 1, :] << 4)
    shifts = (2 * np.arange(4)[:, None] + np.arange(2)[None, :]).astype(np.uint8)
    qh = (((q >> 4) & 1) << shifts[None, :, :, None]).sum(axis=(1, 2), dtype=np.uint8)
    return np.concatenate([head, qh, qs.reshape(len(x), 128)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Super-blocks -> Q6_K bytes ``(n, 210)``: 128 bytes of low nibbles, 64 of top two bits,
    16 int8 scales (one per 16 values), fp16 d. An all-zero block is all zero bytes."""
    n = len(x)
    codes, scales = make_qx(_columns(x, 16), 32)
    codes = codes.T.reshape(n, 16, 16)
    scales = scales.reshape(n, 16)
    mag = np.abs(scales)
    idx = first_argmax(mag, axis=1)
    rows = np.arange(n)
    max_abs = np.where(mag > 0, mag, F32(0))[rows, idx]
    zero = max_abs < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-128) / scales[rows, idx]
        d_raw = F32(1) / iscale
        sc = np.minimum(nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        d = fp16_round(d_raw)[:, None] * sc.astype(F32)
        again = nearest_int(x.reshape(n, 16, 16) / d[:, :, None])
        again = (np.clip(again, -32, 31) + 32).astype(np.uint8)
    codes = np.where((d == 0)[:, :, None], codes, again).reshape(n, 2, 4, 32)
    low = codes & 0x0F
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)],
                        axis=2)  # (n, 2, 64)
    shifts = (2 * np.arange(4)).astype(np.uint8)[None, None, :, None]
    qh = ((codes >> 4) << shifts).sum(axis=2, dtype=np.uint8)  # (n, 2, 32)
    out = np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8),
                          fp16_bytes(d_raw)], axis=1)
    out[zero] = 0
    return out
