"""The matrix types a layer holds (`Matrix`), and choosing and fusing packed matrices: our
kernel's `BlockLinear` where it runs, else torch's int4 `PackedLinear`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hive_core import native
from hive_core.model.errors import GGUFFormatError
from hive_core.model.packed.formats import FORMATS
from hive_core.model.packed.head import RescoredHead
from hive_core.model.packed.int4 import PackedLinear, int4_packable, pack_blocks
from hive_core.model.packed.rows import RowTable
from hive_core.model.packed.tiles import BlockLinear, block_matrix, native_kernel


@dataclass(frozen=True, slots=True)
class RowSlice:
    """Rows ``start:stop`` of a packed matrix fused with its siblings (q, k and v; gate and
    up), which share the input: `ops.project` runs the whole matrix once for all of them.
    Called alone it runs the whole product and keeps its own rows."""

    whole: PackedLinear | BlockLinear
    start: int
    stop: int

    @property
    def out_features(self) -> int:
        return self.stop - self.start

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.whole(x)[..., self.start : self.stop]

    def tensors(self) -> list[torch.Tensor]:
        return self.whole.tensors()


def packable(qtype: str, shape: tuple[int, int]) -> bool:
    """Whether `packed_matrix` keeps a ``shape`` matrix of GGML type `qtype` packed here: any
    format of `FORMATS` on our kernel; without it, those torch's int4 kernel takes."""
    fmt = FORMATS.get(qtype)
    if native_kernel() is not None:
        return fmt is not None and shape[1] % fmt.values == 0
    return int4_packable(qtype, shape)


def packed_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int],
                  row_order: np.ndarray | None = None) -> PackedLinear | BlockLinear:
    """GGUF blocks kept packed for the fastest exact kernel here: our float32 block kernel
    (`block_matrix`), else torch's int4 kernel in three calls (`pack_blocks`). Raises
    `GGUFFormatError` for a matrix neither takes (see `packable`)."""
    kernel = native_kernel()
    if kernel is not None:
        return block_matrix(blocks, qtype, shape, kernel, row_order)
    if qtype in FORMATS and not int4_packable(qtype, shape):
        raise GGUFFormatError(f"a {qtype} matrix of shape {shape} needs our CPU kernel, which "
                              f"is unavailable here ({native.unavailable_reason()})")
    return pack_blocks(blocks, qtype, shape, row_order)


def fuse_rows(blocks: list[np.ndarray], qtype: str, cols: int) -> list[RowSlice]:
    """One `packed_matrix` over the row-concatenation of `blocks` (matrices with the same
    input, already in their row order), as one `RowSlice` per matrix. Rows are computed
    independently by the kernels, so each slice equals its matrix packed alone, bit for bit."""
    rows = [b.shape[0] for b in blocks]
    whole = packed_matrix(np.concatenate(blocks), qtype, (sum(rows), cols))
    edges = np.cumsum([0, *rows]).tolist()
    return [RowSlice(whole, a, b) for a, b in itertools.pairwise(edges)]


def unfused(m: object) -> object:
    """The matrix a fused row slice belongs to; any other matrix as it is."""
    return m.whole if isinstance(m, RowSlice) else m


@dataclass(frozen=True, slots=True)
class DenseLinear:
    """A plain matrix stored in another dtype than the activations (``--weights bf16``)."""

    weight: torch.Tensor  # [out, in]

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype:
            return F.linear(x, self.weight)
        return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)

    def tensors(self) -> list[torch.Tensor]:
        return [self.weight]


Matrix = torch.Tensor | PackedLinear | BlockLinear | RowSlice | DenseLinear | RescoredHead
PACKED = (PackedLinear, BlockLinear)  # the matrix types that keep GGUF blocks packed
Table = torch.Tensor | RowTable
