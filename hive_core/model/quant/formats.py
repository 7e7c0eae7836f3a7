"""GGUF block formats as data: the one table of block layouts (`LAYOUTS`: sizes and where the
float16 scales lie, which our kernel reads blocks by, `hive_core.model.packed`), and the
formats we quantise to, each a layout with its quantiser (`FORMATS`).

`quantize(values, name)` turns a float32 matrix into its GGUF bytes, one row of blocks per
matrix row (the layout `gguf.dequantize` reads back), a bounded number of rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gguf.constants import GGMLQuantizationType

from hive_core.model.errors import ModelError
from hive_core.model.quant import kquants, legacy

# Values a call quantises at once: the K searches hold a dozen float32 copies of a chunk.
CHUNK_VALUES = 1 << 18


class QuantizeError(ModelError):
    """A tensor, format or shape the quantiser cannot handle."""


@dataclass(frozen=True, slots=True)
class BlockLayout:
    """One GGML block type as the GGUF stores it (and our kernel reads it): a block's float16
    scales (d, then m or dmin) at `halves_at`, its codes the rest, contiguous."""

    name: str  # GGML type name, e.g. "Q4_K"
    ggml: int  # GGML type number, also the kernel's qtype
    values: int  # weights per block
    nbytes: int  # bytes per block in the GGUF
    halves_at: int  # byte offset of the block's float16 scales: its start or its end
    halves: int  # how many float16 scales a block has (1 or 2)

    @property
    def code_bytes(self) -> int:
        """Bytes of a block without its float16 scales."""
        return self.nbytes - 2 * self.halves


LAYOUTS: dict[str, BlockLayout] = {f.name: f for f in (
    BlockLayout("Q4_0", 2, 32, 18, 0, 1),  # d, qs[16]
    BlockLayout("Q4_1", 3, 32, 20, 0, 2),  # d, m, qs[16]
    BlockLayout("Q5_0", 6, 32, 22, 0, 1),  # d, qh[4], qs[16]
    BlockLayout("Q5_1", 7, 32, 24, 0, 2),  # d, m, qh[4], qs[16]
    BlockLayout("Q8_0", 8, 32, 34, 0, 1),  # d, qs[32]
    BlockLayout("Q2_K", 10, 256, 84, 80, 2),  # scales[16], qs[64], d, dmin
    BlockLayout("Q3_K", 11, 256, 110, 108, 1),  # hmask[32], qs[64], scales[12], d
    BlockLayout("Q4_K", 12, 256, 144, 0, 2),  # d, dmin, scales[12], qs[128]
    BlockLayout("Q5_K", 13, 256, 176, 0, 2),  # d, dmin, scales[12], qh[32], qs[128]
    BlockLayout("Q6_K", 14, 256, 210, 208, 1),  # ql[128], qh[64], scales[16], d
)}


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
    layout = LAYOUTS[name]
    return BlockFormat(name, GGMLQuantizationType(layout.ggml), layout.values, layout.nbytes, fn)


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
