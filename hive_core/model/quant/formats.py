"""The block formats we quantise to, as data: values and bytes per block, and the quantiser.

`quantize(values, name)` turns a float32 matrix into its GGUF bytes, one row of blocks per
matrix row (the layout `gguf.dequantize` reads back), a bounded number of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from hive_core.model.errors import ModelError
from hive_core.model.quant import kquants, legacy

# Values a call quantises at once: the K searches hold a dozen float32 copies of a chunk.
CHUNK_VALUES = 1 << 18


class QuantizeError(ModelError):
    """A tensor, format or shape the quantiser cannot handle."""


@dataclass(frozen=True, slots=True)
class BlockFormat:
    """One GGML block format: how many values a block holds and how many bytes it takes."""

    name: str  # GGML type name ("Q4_K")
    ggml_type: GGMLQuantizationType
    block_values: int  # values per block (32, or 256 for the K formats)
    block_bytes: int  # bytes per block
    quantize_blocks: Callable[[np.ndarray], np.ndarray]  # (n, block_values) f32 -> (n, bytes)

    def row_bytes(self, width: int) -> int:
        """Bytes of one row of `width` values; the width must be whole blocks."""
        if width % self.block_values:
            raise QuantizeError(
                f"rows of {width} values are not whole {self.name} blocks of {self.block_values}")
        return width // self.block_values * self.block_bytes


def _format(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> BlockFormat:
    qtype = GGMLQuantizationType[name]
    values, nbytes = GGML_QUANT_SIZES[qtype]
    return BlockFormat(name, qtype, values, nbytes, fn)


FORMATS: dict[str, BlockFormat] = {f.name: f for f in (
    _format("Q4_0", legacy.quantize_q4_0),
    _format("Q4_1", legacy.quantize_q4_1),
    _format("Q5_0", legacy.quantize_q5_0),
    _format("Q5_1", legacy.quantize_q5_1),
    _format("Q8_0", legacy.quantize_q8_0),
    _format("Q4_K", kquants.quantize_q4_k),
    _format("Q5_K", kquants.quantize_q5_k),
    _format("Q6_K", kquants.quantize_q6_k),
)}


def block_format(name: str) -> BlockFormat:
    """The format called `name`; a QuantizeError names the ones we have."""
    fmt = FORMATS.get(name)
    if fmt is None:
        raise QuantizeError(f"no quantiser for {name!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def quantize(values: np.ndarray, name: str) -> np.ndarray:
    """A float32 matrix ``(rows, width)`` (or a vector) as `name` blocks: uint8 shaped
    ``(rows, row_bytes)``; F32/F16 are plain casts."""
    if name in ("F32", "F16"):
        return np.ascontiguousarray(values, dtype=np.float32 if name == "F32" else np.float16)
    fmt = block_format(name)
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2:
        raise QuantizeError(f"can quantise a matrix or a vector, not shape {matrix.shape}")
    rows, width = matrix.shape
    out = np.empty((rows, fmt.row_bytes(width)), np.uint8)
    step = max(1, CHUNK_VALUES // max(width, 1))
    per_row = width // fmt.block_values
    for start in range(0, rows, step):
        part = matrix[start:start + step]
        blocks = part.reshape(-1, fmt.block_values)
        out[start:start + len(part)] = fmt.quantize_blocks(blocks).reshape(len(part),
                                                                           per_row * fmt.block_bytes)
    return out[0] if np.ndim(values) == 1 else out
