"""Linear weights kept in their GGUF block form and multiplied without a float32 copy.

Two kernels, the first that runs here:

- **Our CPU kernel** (`BlockLinear`, `hive_core.native`): each block's weights ``d * q + m``
  are expanded to float32 in registers and multiplied by the float32 input, one call a
  product. The result is a float32 product; only the order of the additions differs from a
  dense float32 matrix product, and a row of a batch gets the same bits as alone. Matrices
  sit in four-row tiles of the GGUF's own bytes.
- **torch's int4 kernel** (`PackedLinear`), when ours cannot be built (no compiler) or is
  turned off (``CADENCIA_NATIVE=0``), and for the LM head (`RescoredHead`).

torch's int4 kernel computes with ``w = (q - 8) * scale + zero`` per group of 32, so a Q4_1
block (``w = d * q + m``, 4-bit ``q``, fp16 ``d`` and ``m``) is ``scale = d, zero = m + 8 d``.
A Q8_0 block (``w = d * q``, int8 ``q``) is split into its high and low nibbles
``q + 128 = 16 h + l``, stored as two int4 groups (``scale = 16 d, zero = 0`` and
``scale = d, zero = 8 d``) and multiplied by the input fed twice.

That kernel is fast only with bfloat16 inputs, scales and outputs (it accumulates in float32).
Each of those roundings alone moves SmolLM2's logits by about 0.05 and flips near-tied top
tokens, so a float32 input is computed to float32 precision in three kernel calls:

1. the input's bfloat16 part and its remainder ``x - bf16(x)`` as two rows of one call
   (decode is memory-bound, so the second row is nearly free);
2. the scales' and zeros' remainders (``fine``: fp16 values minus their bfloat16 part),
   applied to the input's bfloat16 part;
3. the first call's output rounding: every matrix carries spare int4 groups whose scale and
   zero are set, per call, to minus the rounded outputs ``y1``; fed a one-hot pattern there,
   the kernel's float32 accumulator computes ``W x - y1`` exactly and rounds only that small
   remainder. One spare group corrects two rows (its scale serves one, its zero the other).

What is left is a product of two bfloat16 remainders, about ``2**-16`` relative:
`tests/model/test_packed_quality.py` measures the whole model against float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import mmap
import os
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hive_core import native
from hive_core.model.errors import GGUFFormatError

GROUP = 32  # weights per GGUF block and per int4 group
PACKABLE = ("Q4_1", "Q8_0")  # GGML types kept packed; any other type is dequantised
_BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
_INNER_K_TILES = 2  # the kernel's K tiling; packing is independent per row, so rows chunk
_ROW_MULTIPLE = 16  # the kernel's output-row tile
_PACK_ROWS = 1024  # rows converted at a time, bounding the int32 scratch at load
SPARE_GROUPS = 2  # output-correction groups per exact matrix: 4 rows corrected per call


def _spare_codes(spare: int) -> torch.Tensor:
    """Codes of the spare groups: 9 (weight ``scale + zero``) first, then 8 (weight ``zero``)."""
    codes = torch.full((spare, GROUP), 8, dtype=torch.int32)
    codes[:, 0] = 9
    return codes.reshape(-1)


@functools.cache
def _spare_pattern(spare: int) -> torch.Tensor:
    """Inputs of the spare groups for ``2 * spare`` rows: row ``2 j`` reads group j's scale
    (``+1`` on the 9, ``-1`` on an 8), row ``2 j + 1`` reads its zero (``+1`` on an 8)."""
    pattern = torch.zeros((2 * spare, spare * GROUP), dtype=torch.bfloat16)
    for j in range(spare):
        pattern[2 * j, j * GROUP] = 1
        pattern[2 * j, j * GROUP + 1] = -1
        pattern[2 * j + 1, j * GROUP + 1] = 1
    return pattern


@dataclass(frozen=True, slots=True)
class PackedLinear:
    """``x @ W.T`` for ``W [out, in]`` held as int4 groups of 32 with bfloat16 scales and zeros.

    With `fine` (an exact matrix), float32 inputs get float32-precision outputs in three
    kernel calls (see the module docstring); without it, one bfloat16 call.
    """

    packed: torch.Tensor  # uint8 [out, width / 2], the kernel's tiled layout
    scales_zeros: torch.Tensor  # bfloat16 [width / 32, out, 2]; spare groups last
    in_features: int
    repeat: int  # 1 (Q4_1) or 2 (Q8_0: the high-nibble groups, then the low-nibble ones)
    fine: torch.Tensor | None = None  # bfloat16 remainders of scales_zeros (spares zero)
    spare: int = 0  # spare groups for the output correction (0 without `fine`)
    # Serialises the calls that write the spare groups' scales (one matrix may serve two
    # threads); the other calls feed zeros there, so whatever the spares hold adds nothing.
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    # Decode-step input rows, made on first use and reused (see `_exact_row`).
    scratch: list[_DecodeRows] = field(default_factory=list, compare=False, repr=False)

    @property
    def out_features(self) -> int:
        return int(self.packed.shape[0])

    @property
    def width(self) -> int:
        """Kernel input columns: the input `repeat` times, then the spare groups."""
        return self.repeat * self.in_features + self.spare * GROUP

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        if self.fine is None or x.dtype != torch.float32:
            y = self._mm(self._input(flat.to(torch.bfloat16)), self.scales_zeros)
            return y.to(x.dtype).reshape(*lead, self.out_features)
        if flat.shape[0] == 1:
            return self._exact_row(flat).reshape(*lead, self.out_features)
        m, k = flat.shape
        a = torch.zeros((2 * m, self.width), dtype=torch.bfloat16)
        a[:m, :k] = flat
        a[m:, :k] = flat - a[:m, :k].float()
        for r in range(1, self.repeat):
            a[:, r * k : (r + 1) * k] = a[:, :k]
        y2 = self._mm(a, self.scales_zeros)  # rows: bf16(x), then the remainder
        y1 = y2[:m]
        out = y1.float().add_(y2[m:].float())
        main = a[:m]
        out.add_(self._mm(main, self.fine).float())
        self._correct_rounding(main, y1, out)
        return out

    def _exact_row(self, row: torch.Tensor) -> torch.Tensor:
        """The three calls for one input row (a decode step), on scratch rows kept per matrix:
        0: bf16(x), 1: the remainder, 2: bf16(x) with the one-hot that reads spare 0's scale."""
        k, fine = self.in_features, self.fine
        assert fine is not None
        with self.lock:
            if not self.scratch:
                self.scratch.append(_DecodeRows(self))
            d: _DecodeRows = self.scratch[0]
            d.xs.copy_(row)  # rows 0 and 2
            torch.sub(row, d.x, out=d.rest)
            d.remainder.copy_(d.rest)
            for r in range(1, self.repeat):
                d.a[:, r * k : (r + 1) * k] = d.a[:, :k]
            y2 = self._mm(d.pair, self.scales_zeros)
            yf = self._mm(d.x_row, fine)
            torch.neg(y2[0], out=d.spare_scale)
            yc = self._mm(d.fix, self.scales_zeros)
            d.spare_scale.zero_()
        return torch.cat([y2, yf, yc]).sum(0, keepdim=True, dtype=torch.float32)

    def _correct_rounding(self, main: torch.Tensor, y1: torch.Tensor, out: torch.Tensor) -> None:
        """Add ``W x - y1`` to `out`, in blocks of ``2 * spare`` rows, one kernel call each."""
        m, rows = main.shape[0], 2 * self.spare
        blocks = -(-m // rows)
        main[:, self.repeat * self.in_features :] = _spare_pattern(self.spare).repeat(blocks, 1)[:m]
        # Each block's minus-outputs as the spares' [spare, out, (scale, zero)] values.
        neg = torch.zeros((blocks * rows, self.out_features), dtype=torch.bfloat16)
        torch.neg(y1, out=neg[:m])
        neg = neg.view(blocks, self.spare, 2, -1).transpose(2, 3).contiguous()
        spares = self.scales_zeros[-self.spare :]
        parts = []
        with self.lock:
            for b in range(blocks):
                spares.copy_(neg[b])
                parts.append(self._mm(main[b * rows : (b + 1) * rows], self.scales_zeros))
            spares.zero_()
        out.add_(torch.cat(parts).float())

    def _input(self, xb: torch.Tensor) -> torch.Tensor:
        if self.repeat == 1 and self.spare == 0:
            return xb
        a = torch.zeros((xb.shape[0], self.width), dtype=torch.bfloat16)
        for r in range(self.repeat):
            a[:, r * self.in_features : (r + 1) * self.in_features] = xb
        return a

    def _mm(self, a: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
        return torch._weight_int4pack_mm_for_cpu(a, self.packed, GROUP, scales_zeros)

    def tensors(self) -> list[torch.Tensor]:
        return [self.packed, self.scales_zeros] + ([] if self.fine is None else [self.fine])


class _DecodeRows:
    """A matrix's decode-step scratch and the views `_exact_row` writes and reads (made once:
    slicing per call costs as much as the small ops themselves)."""

    def __init__(self, lin: PackedLinear) -> None:
        k = lin.in_features
        self.a = torch.zeros((3, lin.width), dtype=torch.bfloat16)
        self.a[2, lin.repeat * k :] = _spare_pattern(lin.spare)[0]
        self.rest = torch.empty((1, k))  # the input's float32 remainder
        self.xs = self.a[0:3:2, :k]  # rows 0 and 2: bf16(x)
        self.x = self.a[0:1, :k]
        self.remainder = self.a[1:2, :k]
        self.pair = self.a[:2]  # bf16(x) and the remainder: the first call
        self.x_row = self.a[:1]  # bf16(x): the fine scales' call
        self.fix = self.a[2:]  # bf16(x) and the one-hot: the output correction
        self.spare_scale = lin.scales_zeros[-lin.spare, :, 0]  # [out], stride 2


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
    _check_blocks(blocks, qtype, shape)
    rows, cols = shape
    nb, bb = cols // GROUP, _BLOCK_BYTES[qtype]
    tb = _TILE_BLOCK_BYTES[qtype]
    tiles = torch.zeros((-(-rows // _TILE), nb * _TILE * tb), dtype=torch.uint8)
    for start in range(0, rows, _PACK_ROWS):  # a multiple of _TILE
        stop = min(start + _PACK_ROWS, rows)
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


def packed_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int],
                  row_order: np.ndarray | None = None) -> PackedLinear | BlockLinear:
    """GGUF blocks kept packed for the fastest exact kernel here: our float32 block kernel
    (`block_matrix`), else torch's int4 kernel in three calls (`pack_blocks`)."""
    kernel = native_kernel()
    if kernel is not None:
        return block_matrix(blocks, qtype, shape, kernel, row_order)
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
    qtype: str  # "Q4_1", "Q8_0", or "dense"
    dtype: torch.dtype  # what `lookup` returns
    file: RowFile | None = None  # where `rows` lie in their file, to read them from there

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` as ``[seq, hidden]``; only those rows are read and dequantised."""
        if isinstance(self.rows, torch.Tensor):
            return F.embedding(ids, self.rows).to(self.dtype)
        index = ids.numpy()
        picked = self.file.read(index) if self.file is not None else self.rows[index]
        return torch.from_numpy(_dequantize_rows(picked, self.qtype)).to(self.dtype)

    def tensors(self) -> list[torch.Tensor]:
        return [self.rows] if isinstance(self.rows, torch.Tensor) else []

    def nbytes(self) -> int:
        return int(self.rows.nbytes) if isinstance(self.rows, np.ndarray) else 0


@dataclass(frozen=True, slots=True)
class RescoredHead:
    """An LM head run as int4, with every logit that could be near the largest recomputed
    exactly from the GGUF rows.

    The head is requantised to int4 groups of 32 (`requantise_head`): half the bytes of its
    Q8_0 codes, read once per token. That moves each logit by about half a logit (its
    standard deviation `sigma`, computed per call from each row's measured requantisation
    error and the input's size). So a call

    1. runs the int4 product (one bfloat16 kernel call),
    2. recomputes each row's largest int4 logit exactly (float32 over its dequantised GGUF
       row): a true lower bound of the row's largest logit,
    3. recomputes exactly every token whose int4 logit plus `sigmas` standard deviations
       reaches that bound less `margin`.

    A token whose true logit is within `margin` of the true maximum is then missed only if
    its own int4 error exceeds `sigmas` standard deviations (`errors_in_sigmas` measures
    them; `bench/bench_packed.py` reports the largest over its text); the choice among such
    tokens is the float32 path's. Other logits keep their int4 values.
    """

    packed: PackedLinear  # int4, one bfloat16 call
    rows: RowTable  # the same matrix as GGUF blocks, read row by row
    err_sq: torch.Tensor  # float32 [out]: each row's mean squared requantisation error
    norm_sq: torch.Tensor  # float32 [out]: each int4 row's squared L2 norm
    err_max: float  # the largest of `err_sq`
    norm_max: float  # the largest of `norm_sq`
    margin: float = 1.0  # logits below the maximum that still get exact values
    sigmas: float = 6.0  # standard deviations of int4 error allowed for

    @property
    def out_features(self) -> int:
        return self.packed.out_features

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1]).float()
        logits = self.packed(flat)
        top = torch.from_numpy(logits.numpy().argmax(axis=-1)).unsqueeze(1)  # [m, 1]; numpy's is fast
        first = top.flatten().unique()  # sorted
        exact = self._exact(flat, first)  # [m, len(first)]
        peak = logits.gather(1, top)
        logits[:, first] = exact
        floor = exact.gather(1, torch.searchsorted(first, top)) - self.margin  # from a real token
        a, b = self._spread(flat)
        # The widest reach of any row (its output's bfloat16 rounding included, for logits up
        # to the peak) picks the few tokens worth the exact test, in one pass over the vocab.
        widest = self.sigmas * ((self.err_max * a + self.norm_max * b).sqrt()
                                + 2.0**-9 * (peak.abs() + floor.abs())) * 1.05
        some = (logits >= floor - widest).any(dim=0).nonzero().squeeze(1)
        y = logits[:, some]
        reach = y + self.sigmas * self._deviation(a, b, y, some)
        near = (reach >= floor).any(dim=0)
        near &= ~torch.isin(some, first)
        cand = some[near]
        for start in range(0, len(cand), RESCORE_ROWS):  # bounded scratch for long prefills
            part = cand[start : start + RESCORE_ROWS]
            logits[:, part] = self._exact(flat, part)
        return logits.to(x.dtype).reshape(*lead, self.out_features)

    def _exact(self, flat: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return F.linear(flat, self.rows.lookup(tokens).float())

    @staticmethod
    def _spread(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per input row, the factors of each logit's int4 error variance ``err_sq * a +
        norm_sq * b``: the requantisation error against the input's squared norm, and the
        input's bfloat16 rounding (its mean square) against the row."""
        a = flat.square().sum(dim=-1, keepdim=True)
        b = (flat - flat.to(torch.bfloat16).float()).square().mean(dim=-1, keepdim=True)
        return a, b

    def _deviation(self, a: torch.Tensor, b: torch.Tensor, logits: torch.Tensor,
                   tokens: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """One standard deviation of the int4 `logits` of `tokens` (from `_spread`'s `a` and
        `b`), their output's bfloat16 rounding included."""
        return (self.err_sq[tokens] * a + self.norm_sq[tokens] * b).sqrt() + 2.0**-9 * logits.abs()

    def errors_in_sigmas(self, x: torch.Tensor) -> torch.Tensor:
        """``|int4 logit - float32 logit|`` of every token, in the standard deviations the
        rescoring assumes (its output rounding included): ``[rows, vocab]``. Dequantises the
        whole head in chunks: a measurement, not for the hot path."""
        flat = x.reshape(-1, x.shape[-1]).float()
        approx = self.packed(flat)
        sigma = self._deviation(*self._spread(flat), approx)
        out = torch.empty_like(approx)
        for start in range(0, self.out_features, RESCORE_ROWS):
            part = torch.arange(start, min(start + RESCORE_ROWS, self.out_features))
            out[:, part] = (self._exact(flat, part) - approx[:, part]).abs() / sigma[:, part]
        return out

    def tensors(self) -> list[torch.Tensor]:
        return [*self.packed.tensors(), self.err_sq, self.norm_sq]


RESCORE_ROWS = 4096  # head rows dequantised at a time when rescoring


def requantise_head(blocks: np.ndarray, qtype: str, shape: tuple[int, int], dtype: torch.dtype,
                    table: RowTable | None = None) -> RescoredHead:
    """The LM head as int4 groups of 32 (min to max of each group, bfloat16 scale and zero),
    with each row's requantisation error measured against the GGUF values, and `table` (or
    a new row table over `blocks`) for exact rescoring. Packs in chunks of rows."""
    _check_kernel_matrix(blocks, qtype, shape)
    rows, cols = shape
    groups = cols // GROUP
    packed = torch.empty((rows, cols // 2), dtype=torch.uint8)
    scales_zeros = torch.empty((groups, rows, 2), dtype=torch.bfloat16)
    err_sq = torch.empty(rows)
    norm_sq = torch.empty(rows)
    for start in range(0, rows, _PACK_ROWS):
        idx = slice(start, min(start + _PACK_ROWS, rows))
        w = torch.from_numpy(_dequantize_rows(np.asarray(blocks[idx]), qtype)).view(-1, groups, GROUP)
        lo, hi = w.amin(dim=-1), w.amax(dim=-1)
        scale = ((hi - lo) / 15).to(torch.bfloat16)
        zero = (lo + 8 * scale.float()).to(torch.bfloat16)
        s, z = scale.float().unsqueeze(-1), zero.float().unsqueeze(-1)
        codes = torch.round((w - z) / torch.where(s > 0, s, 1.0) + 8).clamp_(0, 15)
        wq = (codes - 8) * s + z  # what the kernel multiplies by
        err_sq[idx] = (wq - w).square().mean(dim=(1, 2))
        norm_sq[idx] = wq.square().sum(dim=(1, 2))
        packed[idx] = torch._convert_weight_to_int4pack_for_cpu(
            codes.to(torch.int32).view(-1, cols), _INNER_K_TILES)
        scales_zeros[:, idx] = torch.stack([scale, zero], dim=-1).transpose(0, 1)
        release_pages(blocks[idx])
    trim_heap()
    return RescoredHead(PackedLinear(packed, scales_zeros, cols, 1),
                        table or row_table(blocks, qtype, shape, dtype), err_sq, norm_sq,
                        float(err_sq.max()), float(norm_sq.max()))


Matrix = torch.Tensor | PackedLinear | BlockLinear | RowSlice | DenseLinear | RescoredHead
PACKED = (PackedLinear, BlockLinear)  # the matrix types that keep GGUF blocks packed
Table = torch.Tensor | RowTable


def _dequantize_rows(blocks: np.ndarray, qtype: str) -> np.ndarray:
    """float32 ``[rows, cols]`` from GGUF block bytes, with the same arithmetic as `gguf`."""
    n = blocks.shape[0]
    b = blocks.reshape(n, -1, _BLOCK_BYTES[qtype])
    d = np.ascontiguousarray(b[..., 0:2]).view(np.float16).astype(np.float32)
    if qtype == "Q8_0":
        q = np.ascontiguousarray(b[..., 2:]).view(np.int8).astype(np.float32)
        return (q * d).reshape(n, -1)
    m = np.ascontiguousarray(b[..., 2:4]).view(np.float16).astype(np.float32)
    qs = b[..., 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)
    return (d * q + m).reshape(n, -1)


def packable(qtype: str, shape: tuple[int, int]) -> bool:
    """Whether a matrix can run on the int4 kernel (it needs rows in multiples of 16)."""
    return qtype in PACKABLE and shape[0] % _ROW_MULTIPLE == 0 and shape[1] % GROUP == 0


def _check_kernel_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int]) -> None:
    """`blocks` hold a ``shape`` matrix the int4 kernel can multiply (rows in its tile)."""
    _check_blocks(blocks, qtype, shape)
    if shape[0] % _ROW_MULTIPLE != 0:
        raise GGUFFormatError(f"the int4 kernel needs rows in multiples of {_ROW_MULTIPLE}, got {shape[0]}")


def _check_blocks(blocks: np.ndarray, qtype: str, shape: tuple[int, int]) -> None:
    rows, cols = shape
    if qtype not in PACKABLE:
        raise GGUFFormatError(f"GGML type {qtype} cannot be kept packed")
    if cols % GROUP != 0:
        raise GGUFFormatError(f"a packed matrix needs rows of whole blocks of {GROUP}, got {cols}")
    expected = (rows, cols // GROUP * _BLOCK_BYTES[qtype])
    if blocks.dtype != np.uint8 or tuple(blocks.shape) != expected:
        raise GGUFFormatError(
            f"{qtype} blocks have shape {tuple(blocks.shape)}, expected {expected} for {shape}"
        )


def _codes_and_scales(chunk: np.ndarray, qtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 codes ``[rows, repeat * cols]`` in 0..15 and float32 ``[rows, groups, 2]``."""
    n = chunk.shape[0]
    b = torch.from_numpy(np.array(chunk, copy=True)).view(n, -1, _BLOCK_BYTES[qtype])
    d = b[..., 0:2].contiguous().view(torch.float16).float().squeeze(-1)
    if qtype == "Q4_1":
        m = b[..., 2:4].contiguous().view(torch.float16).float().squeeze(-1)
        qs = b[..., 4:]
        codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(n, -1).to(torch.int32)
        sz = torch.stack([d, m + 8 * d], dim=-1)
        return codes, sz
    q = b[..., 2:].contiguous().view(torch.int8).to(torch.int32) + 128  # 0..255 = 16 h + l
    codes = torch.cat([(q >> 4).reshape(n, -1), (q & 0x0F).reshape(n, -1)], dim=1)
    hi = torch.stack([16 * d, torch.zeros_like(d)], dim=-1)  # (h - 8) * 16 d
    lo = torch.stack([d, 8 * d], dim=-1)  # (l - 8) * d + 8 d
    return codes, torch.cat([hi, lo], dim=1)


def pack_blocks(
    blocks: np.ndarray,
    qtype: str,
    shape: tuple[int, int],
    row_order: np.ndarray | None = None,
    *,
    exact: bool = True,
) -> PackedLinear:
    """Pack GGUF ``qtype`` blocks of a ``shape = (out, in)`` matrix for torch's int4 kernel.

    `row_order` permutes output rows first (the q/k un-permutation); quantisation runs
    along each row, so reordering rows of blocks is exact. `exact` keeps the scales'
    remainders and spare groups for float32-precision products (a quarter more memory than
    the codes alone, three kernel calls a product); without it one bfloat16 call, as the
    rescored LM head uses.
    """
    _check_kernel_matrix(blocks, qtype, shape)
    rows, cols = shape
    repeat = 2 if qtype == "Q8_0" else 1
    spare = SPARE_GROUPS if exact else 0
    groups = repeat * cols // GROUP
    packed = torch.empty((rows, (repeat * cols + spare * GROUP) // 2), dtype=torch.uint8)
    scales_zeros = torch.zeros((groups + spare, rows, 2), dtype=torch.bfloat16)
    fine = torch.zeros((groups + spare, rows, 2), dtype=torch.bfloat16) if exact else None
    spare_codes = _spare_codes(spare)
    for start in range(0, rows, _PACK_ROWS):
        idx = slice(start, min(start + _PACK_ROWS, rows))
        chunk = blocks[row_order[idx]] if row_order is not None else blocks[idx]
        codes, sz = _codes_and_scales(chunk, qtype)
        if spare:
            codes = torch.cat([codes, spare_codes.expand(codes.shape[0], -1)], dim=1)
        packed[idx] = torch._convert_weight_to_int4pack_for_cpu(codes, _INNER_K_TILES)
        sz = sz.transpose(0, 1)
        scales_zeros[:groups, idx] = sz
        if fine is not None:
            fine[:groups, idx] = sz - scales_zeros[:groups, idx].float()
        if row_order is None:
            release_pages(blocks[idx])  # a big matrix (the head) never has all its pages in
    release_pages(blocks)
    trim_heap()  # the chunks' int32 scratch, before the next matrix stacks on top of it
    return PackedLinear(packed, scales_zeros, cols, repeat, fine, spare)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


LIBC = _libc() if sys.platform.startswith("linux") else None  # for madvise, malloc_trim, mallopt


def release_pages(blocks: np.ndarray) -> None:
    """Drop this process's resident pages of a read-only memory-mapped array.

    Packing reads a tensor's blocks once; the file pages would stay counted in RSS until
    unmapped. They are clean pages of a read-only file mapping, so a later read (an
    embedding lookup) just faults them in again. No-op off Linux or for ordinary arrays.
    """
    _advise(blocks, mmap.MADV_DONTNEED)


def _advise(blocks: np.ndarray, advice: int) -> None:
    root: object = blocks
    while isinstance(root, np.ndarray) and not isinstance(root, np.memmap):
        root = root.base
    if LIBC is None or not isinstance(root, np.memmap) or root.flags.writeable:
        return
    page = mmap.PAGESIZE
    start = blocks.ctypes.data // page * page
    end = blocks.ctypes.data + blocks.nbytes
    LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), advice)


def trim_heap() -> None:
    """Give the allocator's freed load scratch back to the OS (glibc keeps it otherwise)."""
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


def row_table(blocks: np.ndarray, qtype: str, shape: tuple[int, int], dtype: torch.dtype,
              source: tuple[str, int] | None = None) -> RowTable:
    """An embedding over GGUF blocks left in their file: a lookup reads only its rows, with
    ``pread`` from `source` (the file's path and the blocks' byte offset in it; see
    `RowFile`) where given and supported, else from `blocks` in memory."""
    _check_blocks(blocks, qtype, shape)
    file = None
    if source is not None and hasattr(os, "preadv"):
        file = RowFile(source[0], source[1], shape[0], blocks.shape[1])
    return RowTable(blocks, qtype, dtype, file)
