"""float32 arithmetic as ggml's C reference does it: its rounding trick, half-away rounding,
fp16 scales and sums added in element order, over many blocks at once."""

from __future__ import annotations

import numpy as np

F32 = np.float32
# ggml's nearest_int adds 1.5 * 2**23: the float32 sum then holds round-half-even(x) in its
# low mantissa bits. Reproducing the trick bit for bit (rather than np.rint) also gives
# ggml's result for out-of-range inputs, which the reference never guards against.
_MAGIC = F32(12582912.0)


def nearest_int(values: np.ndarray) -> np.ndarray:
    """ggml's ``nearest_int`` of float32 values, as int32."""
    total = np.asarray(values, dtype=F32) + _MAGIC
    return (total.view(np.int32) & 0x007FFFFF) - 0x00400000


def round_away(values: np.ndarray) -> np.ndarray:
    """C ``roundf`` (halves away from zero) of float32 values, exactly: ``floor(a + 0.5)``
    would round 0.49999997 up, since that sum is not representable in float32."""
    a = np.abs(values)
    whole = np.floor(a)
    return np.sign(values) * (whole + np.floor(2 * (a - whole)))


def seq_sum(columns: np.ndarray) -> np.ndarray:
    """Sum over the first axis one term after another (C's ``s += v[i]`` loop), never
    pairwise, so the float32 result has the reference's bits."""
    total = columns[0].copy()
    for row in columns[1:]:
        total += row
    return total


def fp16_bytes(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to fp16 (nearest even, as ``GGML_FP32_TO_FP16``), as two
    little-endian bytes each: shape ``(*values.shape, 2)``."""
    with np.errstate(over="ignore"):  # beyond fp16's range is inf, as in C
        half = np.asarray(values, dtype=F32).astype("<f2")
    return half.view(np.uint8).reshape(*half.shape, 2)


def fp16_round(values: np.ndarray) -> np.ndarray:
    """float32 values after a round trip through fp16 (``GGML_FP16_TO_FP32(FP32_TO_FP16(v))``)."""
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=F32).astype(np.float16).astype(F32)


def first_argmax(values: np.ndarray, axis: int) -> np.ndarray:
    """Index of the first largest value along `axis`, NaN never chosen (C's
    ``if (v > best)`` scan from zero)."""
    return np.argmax(np.where(values > 0, values, F32(0)), axis=axis)
