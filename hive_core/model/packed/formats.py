"""GGUF block formats kept packed: their sizes, a check that blocks fit a matrix shape, and
rows of blocks dequantised with `gguf`'s arithmetic."""

from __future__ import annotations

import numpy as np

from hive_core.model.errors import GGUFFormatError

GROUP = 32  # weights per GGUF block and per int4 group
PACKABLE = ("Q4_1", "Q8_0")  # GGML types kept packed; any other type is dequantised
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
PACK_ROWS = 1024  # rows converted at a time, bounding the scratch of a load


def dequantize_rows(blocks: np.ndarray, qtype: str) -> np.ndarray:
    """float32 ``[rows, cols]`` from GGUF block bytes, with the same arithmetic as `gguf`."""
    n = blocks.shape[0]
    b = blocks.reshape(n, -1, BLOCK_BYTES[qtype])
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)
    if qtype == "Q8_0":
        q = np.ascontiguousarray(b[..., 2:]).view(np.int8).astype(np.float32)
        return (q * d).reshape(n, -1)
    m = np.ascontiguousarray(b[..., 2:4]).view(np.float16).astype(np.float32)
    qs = b[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    return (d * q + m).reshape(n, -1)


def check_blocks(blocks: np.ndarray, qtype: str, shape: tuple[int, int]) -> None:
    """`blocks` are ``qtype`` blocks of a ``shape`` matrix, one row of blocks per row."""
    rows, cols = shape
    if qtype not in PACKABLE:
        raise GGUFFormatError(f"GGML type {qtype} cannot be kept packed")
    if cols % GROUP != 0:
        raise GGUFFormatError(f"a packed matrix needs rows of whole blocks of {GROUP}, got {cols}")
    expected = (rows, cols // GROUP * BLOCK_BYTES[qtype])
    if blocks.dtype != np.uint8 or tuple(blocks.shape) != expected:
        raise GGUFFormatError(
            f"{qtype} blocks have shape {tuple(blocks.shape)}, expected {expected} for {shape}"
        )
