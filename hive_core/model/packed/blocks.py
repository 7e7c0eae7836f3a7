"""Our CPU kernel's matrices (`BlockLinear`): GGUF blocks of any format in `FORMATS` multiplied
by `hive_core.native` in float32 where they lie, the model file's memory map, rows picked by
their byte offsets (nothing copied at load)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hive_core import native
from hive_core.model.packed.formats import FORMATS, check_blocks, row_bytes
from hive_core.model.packed.mapped import evict, file_bytes, file_of, populate, streamed

NATIVE_QTYPE = {name: f.ggml for name, f in FORMATS.items()}  # the kernel's qtype: GGML's number
STREAM_BYTES = 4 << 20  # a streamed product's slice of the matrix (see `BlockLinear._streamed`)


@dataclass(frozen=True, slots=True)
class BlockLinear:
    """``x @ W.T`` for ``W [out, in]`` kept in its GGUF blocks and multiplied in float32 by our
    CPU kernel (`hive_core.native`): one call a product, each weight expanded in registers,
    float32 all the way (only the order of the additions differs from a float32 matrix
    product). Row n's blocks are bytes ``offsets[n] ..`` of `data`, as the GGUF stores them:
    a decode step streams each row front to back, reading the bytes the file holds and no
    more, straight from the page cache."""

    data: torch.Tensor  # uint8: the mapped model file (or, for blocks built in memory, them)
    offsets: torch.Tensor  # int64 [out]: where each output row's blocks start in `data`
    cols: int  # in
    qtype: str
    kernel: Any = field(compare=False, repr=False)  # torch.ops.cadencia.block_linear

    @property
    def out_features(self) -> int:
        return int(self.offsets.numel())

    @property
    def in_features(self) -> int:
        return self.cols

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.cols)
        if streamed():  # a stage computed once (an audit): its pages go as it goes
            y = self._streamed(flat.float())
        else:
            y = self.kernel(flat.float(), self.data, self.offsets, self.cols,
                            NATIVE_QTYPE[self.qtype])
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def _streamed(self, x: torch.Tensor) -> torch.Tensor:
        """The product a slice of output rows at a time, each slice's pages let go once it is
        done: at most STREAM_BYTES of this matrix resident at once. Each output row is its own
        dot product, so the bits are those of one call."""
        stride = row_bytes(self.qtype, self.cols)
        per = max(1, STREAM_BYTES // stride)
        parts = []
        for lo in range(0, self.out_features, per):
            offsets = self.offsets[lo:lo + per]
            parts.append(self.kernel(x, self.data, offsets, self.cols, NATIVE_QTYPE[self.qtype]))
            _evict_rows(self.data, offsets, stride)
        return torch.cat(parts, dim=-1)

    def tensors(self) -> list[torch.Tensor]:
        """What this matrix holds of its own (the file's pages are the page cache's)."""
        return [self.offsets]

    def nbytes(self) -> int:
        """Bytes of the file its product reads: its rows' blocks."""
        return self.out_features * row_bytes(self.qtype, self.cols)

    def release(self) -> None:
        """Let this process's pages of its rows go (the page cache keeps them): a matrix no
        longer served. Pages shared with a matrix still in use fault back in on its next call."""
        _evict_rows(self.data, self.offsets, row_bytes(self.qtype, self.cols))


def _evict_rows(data: torch.Tensor, offsets: torch.Tensor, stride: int) -> None:
    if offsets.numel():
        lo, hi = int(offsets.min()), int(offsets.max())
        evict(data, lo, hi - lo + stride)


def native_kernel() -> Any | None:
    """Our float32 block kernel, or None where it is off or cannot be built (see
    `hive_core.native`); packed matrices then run on torch's int4 kernel."""
    ops = native.ops()
    return None if ops is None else ops.block_linear


def block_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int], kernel: Any,
                 row_order: np.ndarray | None = None) -> BlockLinear:
    """GGUF ``qtype`` blocks of a ``shape`` matrix as a `BlockLinear`, output row n being row
    ``row_order[n]`` of `blocks` (all of them, in order, by default). Blocks memory-mapped from
    their file stay there, read in by the load; blocks in memory are copied once."""
    check_blocks(blocks, qtype, shape)
    return joined_matrix([(blocks, row_order)], qtype, shape[1], kernel)


def joined_matrix(parts: Sequence[tuple[np.ndarray, np.ndarray | None]], qtype: str, cols: int,
                  kernel: Any) -> BlockLinear:
    """One `BlockLinear` whose rows are those of each ``(blocks, row_order)`` part in turn
    (matrices that share their input: q, k and v; gate and up), so one kernel call runs
    them all. Parts in the same mapped file cost nothing; any other part is copied."""
    stride = row_bytes(qtype, cols)
    for blocks, _ in parts:
        check_blocks(blocks, qtype, (blocks.shape[0], cols))
    places = [file_of(blocks) for blocks, _ in parts]
    paths = {p[0] for p in places if p is not None}
    if len(paths) == 1 and all(p is not None for p in places):
        data = file_bytes(paths.pop())
        starts = [p[1] for p in places if p is not None]
    else:  # blocks in memory (tests, tools): one copy of them all
        data = torch.from_numpy(np.concatenate([np.ascontiguousarray(b).reshape(-1)
                                                for b, _ in parts]))
        starts = np.cumsum([0, *(b.nbytes for b, _ in parts)]).tolist()[:-1]
    offsets = []
    for (blocks, order), start in zip(parts, starts, strict=True):
        n = blocks.shape[0]
        index = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, np.int64)
        if index.shape != (n,) or not np.array_equal(np.sort(index), np.arange(n)):
            raise ValueError(f"a row order must permute the matrix's {n} rows")
        offsets.append(start + index * stride)
        populate(data, start, n * stride)
    return BlockLinear(data, torch.from_numpy(np.concatenate(offsets)), cols, qtype, kernel)
