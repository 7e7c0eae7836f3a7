"""GGUF block formats as data: the table our kernel's tiles are cut by, checks that blocks fit
a matrix, and rows of blocks of any GGML type dequantised with `gguf`'s arithmetic."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hive_core.model.errors import GGUFFormatError, UnsupportedModelError

GROUP = 32  # weights per int4 group (torch's int4 kernel) and per 32-weight GGUF block
PACK_ROWS = 1024  # rows converted at a time, bounding the scratch of a load


@dataclass(frozen=True, slots=True)
class BlockFormat:
    """One GGML block type as our kernel (`hive_core/native/formats.h`) holds it: a block's
    codes in GGUF order, its float16 scales cut out and kept apart."""

    name: str  # GGML type name, e.g. "Q4_K"
    ggml: int  # GGML type number, also the kernel's qtype
    values: int  # weights per block
    nbytes: int  # bytes per block in the GGUF
    halves_at: int  # byte offset of the block's float16 scales (d, then m or dmin)
    halves: int  # how many float16 scales a block has (1 or 2)

    @property
    def code_bytes(self) -> int:
        """Bytes of a block without its float16 scales."""
        return self.nbytes - 2 * self.halves

    def split(self, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[..., nbytes]`` blocks as their codes ``[..., code_bytes]`` and float16 scales
        ``[..., 2 * halves]`` (bytes, in GGUF order)."""
        end = self.halves_at + 2 * self.halves
        scales = blocks[..., self.halves_at : end]
        if self.halves_at == 0:
            return blocks[..., end:], scales
        return torch.cat([blocks[..., : self.halves_at], blocks[..., end:]], dim=-1), scales


FORMATS: dict[str, BlockFormat] = {f.name: f for f in (
    BlockFormat("Q4_0", 2, 32, 18, 0, 1),  # d, qs[16]
    BlockFormat("Q4_1", 3, 32, 20, 0, 2),  # d, m, qs[16]
    BlockFormat("Q5_0", 6, 32, 22, 0, 1),  # d, qh[4], qs[16]
    BlockFormat("Q5_1", 7, 32, 24, 0, 2),  # d, m, qh[4], qs[16]
    BlockFormat("Q8_0", 8, 32, 34, 0, 1),  # d, qs[32]
    BlockFormat("Q2_K", 10, 256, 84, 80, 2),  # scales[16], qs[64], d, dmin
    BlockFormat("Q3_K", 11, 256, 110, 108, 1),  # hmask[32], qs[64], scales[12], d
    BlockFormat("Q4_K", 12, 256, 144, 0, 2),  # d, dmin, scales[12], qs[128]
    BlockFormat("Q5_K", 13, 256, 176, 0, 2),  # d, dmin, scales[12], qh[32], qs[128]
    BlockFormat("Q6_K", 14, 256, 210, 208, 1),  # ql[128], qh[64], scales[16], d
)}
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
