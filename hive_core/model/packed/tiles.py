"""Our CPU kernel's matrices (`BlockLinear`): GGUF blocks of any format in `FORMATS` re-laid out
once, at load, in tiles of four rows that `hive_core.native` multiplies in float32."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hive_core import native
from hive_core.model.packed.formats import FORMATS, PACK_ROWS, check_blocks
from hive_core.model.packed.memory import release_pages, trim_heap

TILE = 4  # rows per tile (kernels.cpp kTile)
NATIVE_QTYPE = {name: f.ggml for name, f in FORMATS.items()}  # the kernel's qtype: GGML's number


@dataclass(frozen=True, slots=True)
class BlockLinear:
    """``x @ W.T`` for ``W [out, in]`` kept in its GGUF blocks and multiplied in float32 by our
    CPU kernel (`hive_core.native`): one call a product, each weight expanded in registers,
    float32 all the way (only the order of the additions differs from a float32 matrix
    product). The blocks are laid out in tiles of four rows (see `kernels.cpp`), so a decode
    step streams the matrix front to back, reading the bytes the GGUF holds and no more."""

    tiles: torch.Tensor  # uint8 [ceil(out / 4), (in / block weights) * 4 * block bytes]
    rows: int  # out
    qtype: str
    kernel: Any = field(compare=False, repr=False)  # torch.ops.cadencia.block_linear

    @property
    def out_features(self) -> int:
        return self.rows

    @property
    def in_features(self) -> int:
        fmt = FORMATS[self.qtype]
        return int(self.tiles.shape[1]) // (TILE * fmt.nbytes) * fmt.values

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        y = self.kernel(flat.float(), self.tiles, self.rows, NATIVE_QTYPE[self.qtype])
        return y.to(x.dtype).reshape(*lead, self.rows)

    def tensors(self) -> list[torch.Tensor]:
        return [self.tiles]


def native_kernel() -> Any | None:
    """Our float32 block kernel, or None where it is off or cannot be built (see
    `hive_core.native`); packed matrices then run on torch's int4 kernel."""
    ops = native.ops()
    return None if ops is None else ops.block_linear


def block_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int], kernel: Any,
                 row_order: np.ndarray | None = None) -> BlockLinear:
    """GGUF ``qtype`` blocks of a ``shape`` matrix as a `BlockLinear` (rows permuted by
    `row_order` first), copied out of the file in chunks of rows into four-row tiles: each
    tile is its rows' block codes (`BlockFormat.split`), block column by block column, then
    their float16 scales in the same order. Padding rows of the last tile are zero bytes."""
    check_blocks(blocks, qtype, shape)
    fmt = FORMATS[qtype]
    rows, cols = shape
    nb = cols // fmt.values
    tiles = torch.zeros((-(-rows // TILE), nb * TILE * fmt.nbytes), dtype=torch.uint8)
    for start in range(0, rows, PACK_ROWS):  # a multiple of TILE
        stop = min(start + PACK_ROWS, rows)
        chunk = blocks[row_order[start:stop]] if row_order is not None else blocks[start:stop]
        n = -(-(stop - start) // TILE) * TILE
        b = torch.zeros((n, nb, fmt.nbytes), dtype=torch.uint8)
        b[: stop - start] = torch.from_numpy(np.array(chunk, copy=True)).view(-1, nb, fmt.nbytes)
        # [tile, row, column, bytes] -> [tile, column, row, bytes]: codes first, then scales
        parts = [p.reshape(n // TILE, TILE, nb, -1).transpose(1, 2).reshape(n // TILE, -1)
                 for p in fmt.split(b)]
        tiles[start // TILE : (start + n) // TILE] = torch.cat(parts, dim=1)
        if row_order is None:
            release_pages(blocks[start:stop])
    release_pages(blocks)
    trim_heap()
    return BlockLinear(tiles, rows, qtype, kernel)
