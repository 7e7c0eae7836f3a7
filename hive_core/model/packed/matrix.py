"""The matrix types a layer holds (`Matrix`), and choosing and fusing packed matrices: our
kernel's `BlockLinear` where it runs, else torch's int4 `PackedLinear`; the LM head's form
(`head_matrix`); the bytes a set of weights holds (`held_bytes`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hive_core import native
from hive_core.model.errors import GGUFFormatError
from hive_core.model.packed.blocks import BlockLinear, block_matrix, joined_matrix, native_kernel
from hive_core.model.packed.formats import FORMATS
from hive_core.model.packed.head import RescoredHead, requantise_head
from hive_core.model.packed.int4 import PackedLinear, int4_packable, int4_shape, pack_blocks
from hive_core.model.packed.rows import RowTable


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


def fuse_rows(parts: list[tuple[np.ndarray, np.ndarray | None]], qtype: str,
              cols: int) -> list[RowSlice]:
    """One packed matrix over the rows of each ``(blocks, row_order)`` part in turn (matrices
    with the same input), as one `RowSlice` per part. Rows are computed independently by the
    kernels, so each slice equals its matrix packed alone, bit for bit. On our kernel the
    parts stay in their file; torch's int4 kernel packs a copy."""
    kernel = native_kernel()
    if kernel is not None:
        whole: PackedLinear | BlockLinear = joined_matrix(parts, qtype, cols, kernel)
    else:
        ordered = [b[o] if o is not None else b for b, o in parts]
        whole = packed_matrix(np.concatenate(ordered), qtype, (sum(len(b) for b in ordered), cols))
    edges = np.cumsum([0, *(b.shape[0] for b, _ in parts)]).tolist()
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


def held_bytes(held: list[torch.Tensor | Matrix | Table]) -> int:
    """Bytes of weights `held` keeps: its tensors, each once (a tied head shares the
    embedding; fused slices share their matrix), plus the file bytes of each matrix our kernel
    multiplies where the file holds it and of each table read from its file."""
    objects: set[int] = set()
    pointers: set[int] = set()
    total = 0
    tensors: list[torch.Tensor] = []
    for x in held:
        m = x.whole if isinstance(x, RowSlice) else x
        if isinstance(m, torch.Tensor):
            tensors.append(m)
            continue
        if isinstance(m, (BlockLinear, RowTable)) and id(m) not in objects:
            objects.add(id(m))
            total += m.nbytes()
        tensors += m.tensors()
    for t in tensors:
        if t.data_ptr() not in pointers:
            pointers.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# Heads of these types are requantised to int4 and rescored (`RescoredHead`) even where our
# kernel runs: none. Measured on SmolLM2's Q8_0 head (49152 x 576, one thread): the int4 call
# takes 1.9 ms against our kernel's 4.9 ms over the file's blocks, but requantising takes
# 1.0 s of a 1.2 s load (llama.cpp loads the file in 0.16 s): it pays only past ~330 tokens.
RESCORED_HEADS: tuple[str, ...] = ()


def head_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int], dtype: torch.dtype,
                table: RowTable | None = None) -> Matrix | None:
    """The LM head from its GGUF blocks: on our kernel where the file holds them (any type
    of `FORMATS` but `RESCORED_HEADS`: exact, nothing to build), else (our kernel off or
    unbuilt) requantised to int4 and rescored exactly near the top (`requantise_head`, with
    `table` for the exact rows), else packed as any matrix; None where nothing here
    multiplies it."""
    if native_kernel() is not None and qtype in FORMATS and qtype not in RESCORED_HEADS \
            and packable(qtype, shape):
        return packed_matrix(blocks, qtype, shape)
    if int4_shape(shape):
        return requantise_head(blocks, qtype, shape, dtype, table)
    if packable(qtype, shape):
        return packed_matrix(blocks, qtype, shape)
    return None
