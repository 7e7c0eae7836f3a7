"""Our CPU kernel's matrices (`BlockLinear`): GGUF blocks re-laid out once, at load, in tiles of
four rows that `hive_core.native` multiplies in float32."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hive_core import native
from hive_core.model.packed.formats import BLOCK_BYTES, GROUP, PACK_ROWS, check_blocks
from hive_core.model.packed.memory import release_pages, trim_heap


@dataclass(frozen=True, slots=True)
class BlockLinear:
    """``x @ W.T`` for ``W [out, in]`` kept in its GGUF blocks and multiplied in float32 by our
    CPU kernel (`hive_core.native`): one call a product, each weight expanded to ``d q + m``
    in registers, float32 all the way (only the order of the additions differs from a
    float32 matrix product). The blocks are laid out in tiles of four rows (see
    `kernels.cpp`), so a decode step streams the matrix front to back, reading the bytes
    the GGUF holds and no more."""

    tiles: torch.Tensor  # uint8 [ceil(out / 4), (in / 32) * 4 * (code bytes + 4)]
    rows: int  # out
    qtype: str
    kernel: Any = field(compare=False, repr=False)  # torch.ops.cadencia.block_linear

    @property
    def out_features(self) -> int:
        return self.rows

    @property
    def in_features(self) -> int:
        return int(self.tiles.shape[1]) // (_TILE * _TILE_BLOCK_BYTES[self.qtype]) * GROUP

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        y = self.kernel(flat.float(), self.tiles, self.rows, NATIVE_QTYPE[self.qtype])
        return y.to(x.dtype).reshape(*lead, self.rows)

    def tensors(self) -> list[torch.Tensor]:
        return [self.tiles]


NATIVE_QTYPE = {"Q4_1": 0, "Q8_0": 1}  # the kernel's qtype numbers (kernels.cpp)
_TILE = 4  # rows per tile (kernels.cpp kTile)
# Bytes a block takes in a tile: its codes and float16 d and m (Q8_0 gains a zero m).
_TILE_BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 36}


def native_kernel() -> Any | None:
    """Our float32 block kernel, or None where it is off or cannot be built (see
    `hive_core.native`); packed matrices then run on torch's int4 kernel."""
    ops = native.ops()
    return None if ops is None else ops.block_linear


def block_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int], kernel: Any,
                 row_order: np.ndarray | None = None) -> BlockLinear:
    """GGUF ``qtype`` blocks of a ``shape`` matrix as a `BlockLinear` (rows permuted by
    `row_order` first), copied out of the file in chunks of rows into four-row tiles: each
    tile is its rows' GGML codes, block column by block column, then their float16
    ``(d, m)`` pairs in the same order (``m = 0`` for Q8_0)."""
    check_blocks(blocks, qtype, shape)
    rows, cols = shape
    nb, bb = cols // GROUP, BLOCK_BYTES[qtype]
    tb = _TILE_BLOCK_BYTES[qtype]
    tiles = torch.zeros((-(-rows // _TILE), nb * _TILE * tb), dtype=torch.uint8)
    for start in range(0, rows, PACK_ROWS):  # a multiple of _TILE
        stop = min(start + PACK_ROWS, rows)
        chunk = blocks[row_order[start:stop]] if row_order is not None else blocks[start:stop]
        n = -(-(stop - start) // _TILE) * _TILE
        b = torch.zeros((n, nb, tb), dtype=torch.uint8)  # padding rows: zeros
        b[: stop - start, :, :bb] = torch.from_numpy(np.array(chunk, copy=True)).view(-1, nb, bb)
        if qtype == "Q8_0":  # d, then a zero m, then the codes
            b[..., 4:] = b[..., 2:bb].clone()
            b[..., 2:4] = 0
        # [tile, row, column, bytes] -> [tile, column, row, bytes]: codes first, then (d, m)
        b = b.view(n // _TILE, _TILE, nb, -1).transpose(1, 2)
        tiles[start // _TILE : (start + n) // _TILE] = torch.cat(
            [b[..., 4:].reshape(n // _TILE, -1), b[..., :4].reshape(n // _TILE, -1)], dim=1)
        if row_order is None:
            release_pages(blocks[start:stop])
    release_pages(blocks)
    trim_heap()
    return BlockLinear(tiles, rows, qtype, kernel)
