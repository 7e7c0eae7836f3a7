"""torch's int4 kernel as the fallback for our own (`PackedLinear`): Q4_0, Q4_1 and Q8_0 blocks
repacked as int4 groups of 32, multiplied to float32 precision in three bfloat16 calls.

The kernel computes with ``w = (q - 8) * scale + zero`` per group of 32, so a Q4_1
block (``w = d * q + m``, 4-bit ``q``, fp16 ``d`` and ``m``) is ``scale = d, zero = m + 8 d``
and a Q4_0 block (``w = d * (q - 8)``) is ``scale = d, zero = 0``.
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

import functools
import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from hive_core.model.errors import GGUFFormatError
from hive_core.model.packed.formats import FORMATS, GROUP, PACK_ROWS, check_blocks, check_rows
from hive_core.model.packed.memory import release_pages, trim_heap

INNER_K_TILES = 2  # the kernel's K tiling; packing is independent per row, so rows chunk
_ROW_MULTIPLE = 16  # the kernel's output-row tile
INT4_FORMATS = ("Q4_0", "Q4_1", "Q8_0")  # GGML types `pack_blocks` repacks exactly
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


def int4_packable(qtype: str, shape: tuple[int, int]) -> bool:
    """Whether `pack_blocks` takes a matrix (a type it repacks exactly, rows in multiples of 16)."""
    return qtype in INT4_FORMATS and int4_shape(shape)


def int4_shape(shape: tuple[int, int]) -> bool:
    """Whether the int4 kernel can hold a ``shape`` matrix (rows in multiples of 16)."""
    return shape[0] % _ROW_MULTIPLE == 0 and shape[1] % GROUP == 0


def check_int4_matrix(blocks: np.ndarray, qtype: str, shape: tuple[int, int], *,
                      requantised: bool = False) -> None:
    """`blocks` hold a ``shape`` matrix the int4 kernel can multiply (rows in its tile): of a
    type `pack_blocks` repacks, or with `requantised` (the head) of any GGML type."""
    if requantised:
        check_rows(blocks, qtype, shape)
    elif qtype not in INT4_FORMATS:
        raise GGUFFormatError(f"GGML type {qtype} cannot be repacked for torch's int4 kernel")
    else:
        check_blocks(blocks, qtype, shape)
    if shape[1] % GROUP != 0:
        raise GGUFFormatError(f"the int4 kernel needs rows of whole groups of {GROUP}, got {shape[1]}")
    if shape[0] % _ROW_MULTIPLE != 0:
        raise GGUFFormatError(f"the int4 kernel needs rows in multiples of {_ROW_MULTIPLE}, got {shape[0]}")


def _codes_and_scales(chunk: np.ndarray, qtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 codes ``[rows, repeat * cols]`` in 0..15 and float32 ``[rows, groups, 2]``."""
    n = chunk.shape[0]
    b = torch.from_numpy(np.array(chunk, copy=True)).view(n, -1, FORMATS[qtype].nbytes)
    d = b[..., 0:2].contiguous().view(torch.float16).float().squeeze(-1)
    if qtype in ("Q4_0", "Q4_1"):
        zero = torch.zeros_like(d)
        if qtype == "Q4_1":
            zero = b[..., 2:4].contiguous().view(torch.float16).float().squeeze(-1) + 8 * d
        qs = b[..., -16:]
        codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(n, -1).to(torch.int32)
        return codes, torch.stack([d, zero], dim=-1)
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
    check_int4_matrix(blocks, qtype, shape)
    rows, cols = shape
    repeat = 2 if qtype == "Q8_0" else 1
    spare = SPARE_GROUPS if exact else 0
    groups = repeat * cols // GROUP
    packed = torch.empty((rows, (repeat * cols + spare * GROUP) // 2), dtype=torch.uint8)
    scales_zeros = torch.zeros((groups + spare, rows, 2), dtype=torch.bfloat16)
    fine = torch.zeros((groups + spare, rows, 2), dtype=torch.bfloat16) if exact else None
    spare_codes = _spare_codes(spare)
    for start in range(0, rows, PACK_ROWS):
        idx = slice(start, min(start + PACK_ROWS, rows))
        chunk = blocks[row_order[idx]] if row_order is not None else blocks[idx]
        codes, sz = _codes_and_scales(chunk, qtype)
        if spare:
            codes = torch.cat([codes, spare_codes.expand(codes.shape[0], -1)], dim=1)
        packed[idx] = torch._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES)
        sz = sz.transpose(0, 1)
        scales_zeros[:groups, idx] = sz
        if fine is not None:
            fine[:groups, idx] = sz - scales_zeros[:groups, idx].float()
        if row_order is None:
            release_pages(blocks[idx])  # a big matrix (the head) never has all its pages in
    release_pages(blocks)
    trim_heap()  # the chunks' int32 scratch, before the next matrix stacks on top of it
    return PackedLinear(packed, scales_zeros, cols, repeat, fine, spare)
