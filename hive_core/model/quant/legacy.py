"""The 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) quantised as ggml's
``quantize_row_*_ref`` does, vectorised over blocks.

Each function takes float32 blocks shaped ``(n, 32)`` and returns their bytes shaped
``(n, block_bytes)``. Every step is the reference's float32 operation in its order, so the
bytes equal the C reference's (and `gguf.quants`', which follows it too).
"""

from __future__ import annotations

import numpy as np

from hive_core.model.quant._numeric import F32, fp16_bytes, round_away

QK = 32


def _absmax_signed(x: np.ndarray) -> np.ndarray:
    """Per block, the value of largest magnitude with its sign (the first one on ties)."""
    idx = np.argmax(np.abs(x), axis=1)
    return x[np.arange(len(x)), idx]


def _inverse(d: np.ndarray) -> np.ndarray:
    """``d ? 1.0f/d : 0.0f``."""
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1) / d, F32(0)).astype(F32)


def _truncate(values: np.ndarray, top: int) -> np.ndarray:
    """``MIN(top, (int8_t)v)`` for the non-negative values these formats produce."""
    with np.errstate(invalid="ignore"):
        return np.minimum(np.trunc(values), top).astype(np.uint8)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """Element j in the low nibble and element j + 16 in the high nibble of byte j."""
    half = q.shape[1] // 2
    return (q[:, :half] & 0x0F) | ((q[:, half:] & 0x0F) << 4)


def _high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 codes, element k in bit k of a little-endian uint32."""
    return np.packbits((q >> 4) & 1, axis=1, bitorder="little")


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    """``d = max / -8`` (the signed extreme), codes ``x / d + 8`` in 0..15."""
    d = _absmax_signed(x) / F32(-8)
    q = _truncate(x * _inverse(d)[:, None] + F32(8.5), 15)
    return np.concatenate([fp16_bytes(d), _nibbles(q)], axis=1)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    """``d = (max - min) / 15``, ``m = min``, codes ``(x - m) / d`` in 0..15."""
    lo, hi = x.min(axis=1), x.max(axis=1)
    d = (hi - lo) / F32(15)
    q = _truncate((x - lo[:, None]) * _inverse(d)[:, None] + F32(0.5), 15)
    return np.concatenate([fp16_bytes(d), fp16_bytes(lo), _nibbles(q)], axis=1)


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    """``d = max / -16``, codes ``x / d + 16`` in 0..31 (fifth bits packed apart)."""
    d = _absmax_signed(x) / F32(-16)
    q = _truncate(x * _inverse(d)[:, None] + F32(16.5), 31)
    return np.concatenate([fp16_bytes(d), _high_bits(q), _nibbles(q)], axis=1)


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    """``d = (max - min) / 31``, ``m = min``, codes ``(x - m) / d`` in 0..31."""
    lo, hi = x.min(axis=1), x.max(axis=1)
    d = (hi - lo) / F32(31)
    # The reference stores (uint8_t)(v + 0.5) unclamped; v never exceeds 31 here.
    q = _truncate((x - lo[:, None]) * _inverse(d)[:, None] + F32(0.5), 255)
    return np.concatenate([fp16_bytes(d), fp16_bytes(lo), _high_bits(q), _nibbles(q)], axis=1)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    """``d = absmax / 127``, codes ``roundf(x / d)`` as int8."""
    d = np.abs(x).max(axis=1) / F32(127)
    q = round_away(x * _inverse(d)[:, None]).astype(np.int8).view(np.uint8)
    return np.concatenate([fp16_bytes(d), q], axis=1)
