"""Embedding tables read row by row (`RowTable`), from GGUF blocks left in their file."""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hive_core.model.errors import GGUFFormatError
from hive_core.model.packed.formats import as_bytes, check_rows, dequantize_rows


class RowFile:
    """A table's rows read straight from its GGUF file with ``pread``: the bytes come from the
    page cache, and no page of the file is mapped into this process. (Reading them through
    the memory map faults in the pages around each row, whatever ``madvise`` says, and dropping
    those pages again costs a TLB shootdown: too dear for every token.)"""

    def __init__(self, path: str, offset: int, rows: int, row_bytes: int) -> None:
        self.path, self.offset, self.rows, self.row_bytes = path, offset, rows, row_bytes
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        weakref.finalize(self, os.close, self.fd)

    def read(self, index: np.ndarray) -> np.ndarray:
        """Rows `index` as uint8 ``[len(index), row_bytes]``."""
        out = np.empty((len(index), self.row_bytes), dtype=np.uint8)
        for i, row in enumerate(index.tolist()):
            if not 0 <= row < self.rows:
                raise IndexError(f"row {row} is outside the table's {self.rows} rows")
            got = os.preadv(self.fd, [out[i]], self.offset + row * self.row_bytes)
            if got != self.row_bytes:
                raise GGUFFormatError(f"{self.path}: row {row} ends early ({got} of "
                                      f"{self.row_bytes} bytes): the file changed or is truncated")
        return out


@dataclass(frozen=True, slots=True)
class RowTable:
    """An embedding table read row by row: from packed GGUF blocks, or from a dense matrix."""

    rows: np.ndarray | torch.Tensor  # GGUF blocks uint8 [vocab, bytes] (memory map) or dense
    qtype: str  # the GGML type name of `rows`' blocks, or "dense"
    dtype: torch.dtype  # what `lookup` returns
    file: RowFile | None = None  # where `rows` lie in their file, to read them from there

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` as ``[seq, hidden]``; only those rows are read and dequantised."""
        if isinstance(self.rows, torch.Tensor):
            return F.embedding(ids, self.rows).to(self.dtype)
        index = ids.numpy()
        picked = self.file.read(index) if self.file is not None else self.rows[index]
        return torch.from_numpy(dequantize_rows(picked, self.qtype)).to(self.dtype)

    def tensors(self) -> list[torch.Tensor]:
        return [self.rows] if isinstance(self.rows, torch.Tensor) else []

    def nbytes(self) -> int:
        return int(self.rows.nbytes) if isinstance(self.rows, np.ndarray) else 0


def row_table(blocks: np.ndarray, qtype: str, shape: tuple[int, int], dtype: torch.dtype,
              source: tuple[str, int] | None = None) -> RowTable:
    """An embedding over GGUF blocks left in their file: a lookup reads only its rows, with
    ``pread`` from `source` (the file's path and the blocks' byte offset in it; see
    `RowFile`) where given and supported, else from `blocks` in memory. Any GGML type that
    `gguf` dequantises will do (`UnsupportedModelError` for another)."""
    blocks = as_bytes(blocks)
    check_rows(blocks, qtype, shape)
    dequantize_rows(blocks[:1], qtype)  # refuse a type no lookup could read, now
    file = None
    if source is not None and hasattr(os, "preadv"):
        file = RowFile(source[0], source[1], shape[0], blocks.shape[1])
    return RowTable(blocks, qtype, dtype, file)
