"""Random but valid GGUF blocks made directly as bytes: random codes, sane fp16 scales.

Every bit pattern of a block's codes (and of the K formats' packed 6-bit sub-scales) is a
valid block, so codes are raw generator output; only the fp16 scale fields are written, set
so the values come out centred with roughly the standard deviation asked for. No float
tensor is ever made or quantised, which is what makes a multi-gigabyte file a matter of
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from hive_core.model.quant._numeric import fp16_bytes
from hive_core.model.quant.formats import FORMATS, block_format


@dataclass(frozen=True, slots=True)
class ScaleFields:
    """Where a format keeps its fp16 scale and minimum, and the minimum that centres it."""

    scale_at: int  # byte offset of the fp16 scale (d)
    min_at: int | None  # byte offset of the fp16 minimum (m or dmin); None when none
    min_ratio: float  # minimum / scale that makes the mean value zero (mean code times -1 or +1)


# A min of -7.5 d centres Q4_1's codes 0..15 (w = d q + m); the K formats subtract
# dmin * m6 with m6 like the 6-bit scale, so dmin = 7.5 d (15.5 d for 5-bit codes) centres them.
FIELDS: dict[str, ScaleFields] = {
    "Q4_0": ScaleFields(0, None, 0.0),
    "Q4_1": ScaleFields(0, 2, -7.5),
    "Q5_0": ScaleFields(0, None, 0.0),
    "Q5_1": ScaleFields(0, 2, -15.5),
    "Q8_0": ScaleFields(0, None, 0.0),
    "Q4_K": ScaleFields(0, 2, 7.5),
    "Q5_K": ScaleFields(0, 2, 15.5),
    "Q6_K": ScaleFields(208, None, 0.0),
}
assert FIELDS.keys() == FORMATS.keys()


def _raw(rng: np.random.Generator, n: int, block_bytes: int) -> np.ndarray:
    """`n` blocks of random bytes (the bit generator's raw words: several GB/s)."""
    words = -(-n * block_bytes // 8)
    return rng.bit_generator.random_raw(words).view(np.uint8)[:n * block_bytes].reshape(
        n, block_bytes)


JITTER_STEPS = 16  # (a power of two) distinct scales a tensor's blocks take, spread over ±50 % of the mean


def _with_scales(blocks: np.ndarray, fmt: str, d: float) -> np.ndarray:
    """Write each block's fp16 scale (and minimum): one of `JITTER_STEPS` values around `d`,
    picked by the block's own random bits. A table lookup, not an fp16 conversion per block:
    converting millions of floats to fp16 took longer than making the random bytes."""
    fields = FIELDS[fmt]
    steps = np.float32(d) * (np.float32(0.5) + (np.arange(JITTER_STEPS, dtype=np.float32)
                                                + np.float32(0.5)) / np.float32(JITTER_STEPS))
    pick = blocks[:, fields.scale_at] & np.uint8(JITTER_STEPS - 1)
    n = len(blocks)
    table = fp16_bytes(steps).view("<u2").reshape(JITTER_STEPS)
    blocks[:, fields.scale_at:fields.scale_at + 2] = table[pick].view(np.uint8).reshape(n, 2)
    if fields.min_at is not None:
        table = fp16_bytes(steps * np.float32(fields.min_ratio)).view("<u2").reshape(JITTER_STEPS)
        blocks[:, fields.min_at:fields.min_at + 2] = table[pick].view(np.uint8).reshape(n, 2)
    return blocks


@cache
def unit_std(fmt: str) -> float:
    """Standard deviation of a format's values with scales around 1 (measured once on random
    blocks, read back with `gguf.dequantize`)."""
    import gguf

    spec = block_format(fmt)
    rng = np.random.Generator(np.random.SFC64(12345))
    blocks = _with_scales(_raw(rng, 4096, spec.block_bytes), fmt, 1.0)
    return float(gguf.dequantize(blocks, spec.ggml_type).std())


def random_blocks(fmt: str, n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """`n` random `fmt` blocks (uint8, ``(n, block_bytes)``) whose values have mean about 0
    and standard deviation about `std`."""
    spec = block_format(fmt)
    return _with_scales(_raw(rng, n, spec.block_bytes), fmt, std / unit_std(fmt))
