"""GGUF block formats for our kernel: the layouts it reads blocks by (the one table, kept with
the quantisers in `hive_core.model.quant.formats`), checks that blocks fit a matrix, and rows
of blocks of any GGML type dequantised with `gguf`'s arithmetic."""

from __future__ import annotations

import numpy as np

from hive_core.model.errors import GGUFFormatError, UnsupportedModelError
from hive_core.model.quant.formats import LAYOUTS, BlockLayout

GROUP = 32  # weights per int4 group (torch's int4 kernel) and per 32-weight GGUF block
PACK_ROWS = 1024  # rows converted at a time, bounding the scratch of a load


BlockFormat = BlockLayout  # one GGML block type as our kernel reads it
FORMATS: dict[str, BlockFormat] = LAYOUTS  # the GGML types our kernel multiplies
PACKABLE = tuple(FORMATS)  # GGML types our kernel multiplies from their blocks


def row_bytes(qtype: str, cols: int) -> int:
    """Bytes one row of `cols` weights of GGML type `qtype` takes in a GGUF."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    except KeyError:
        raise UnsupportedModelError(f"unknown GGML type {qtype}") from None
    if cols % block != 0:
        raise GGUFFormatError(f"a {qtype} row needs whole blocks of {block} weights, got {cols}")
    return cols // block * size


def as_bytes(blocks: np.ndarray) -> np.ndarray:
    """A tensor's stored data as uint8 ``[rows, row bytes]`` (float types arrive as floats)."""
    if blocks.dtype == np.uint8:
        return blocks
    return blocks.reshape(blocks.shape[0], -1).view(np.uint8)


def check_rows(blocks: np.ndarray, qtype: str, shape: tuple[int, int]) -> None:
    """`blocks` are the uint8 rows of a ``shape`` matrix of GGML type `qtype`."""
    expected = (shape[0], row_bytes(qtype, shape[1]))
    if blocks.dtype != np.uint8 or tuple(blocks.shape) != expected:
        raise GGUFFormatError(
            f"{qtype} blocks have shape {tuple(blocks.shape)}, expected {expected} for {shape}"
        )


def check_blocks(blocks: np.ndarray, qtype: str, shape: tuple[int, int]) -> None:
    """`blocks` are ``qtype`` blocks of a ``shape`` matrix that our kernel multiplies."""
    fmt = FORMATS.get(qtype)
    if fmt is None:
        raise GGUFFormatError(f"GGML type {qtype} cannot be kept packed")
    if shape[1] % fmt.values != 0:
        raise GGUFFormatError(
            f"a packed {qtype} matrix needs rows of whole blocks of {fmt.values}, got {shape[1]}")
    check_rows(blocks, qtype, shape)


def dequantize_rows(blocks: np.ndarray, qtype: str) -> np.ndarray:
    """float32 ``[rows, cols]`` from the uint8 rows of GGML type `qtype`, with `gguf`'s
    arithmetic (Q4_1 and Q8_0, the bundled model's, computed here: quicker for a few rows)."""
    n = blocks.shape[0]
    if qtype in ("Q4_1", "Q8_0"):
        b = blocks.reshape(n, -1, FORMATS[qtype].nbytes)
        d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)
        if qtype == "Q8_0":
            q = np.ascontiguousarray(b[..., 2:]).view(np.int8).astype(np.float32)
            return (q * d).reshape(n, -1)
        m = np.ascontiguousarray(b[..., 2:4]).view(np.float16).astype(np.float32)
        qs = b[..., 4:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
        return (d * q + m).reshape(n, -1)
    import gguf

    try:
        rows = gguf.dequantize(np.ascontiguousarray(blocks), gguf.GGMLQuantizationType[qtype])
    except (KeyError, NotImplementedError):
        raise UnsupportedModelError(f"GGML type {qtype} cannot be dequantised") from None
    return np.asarray(rows, dtype=np.float32).reshape(n, -1)
