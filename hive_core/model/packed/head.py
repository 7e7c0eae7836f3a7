"""The LM head (`RescoredHead`): requantised to int4 for speed, with every logit near the top
recomputed exactly from the GGUF rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hive_core.model.packed.formats import GROUP, PACK_ROWS, as_bytes, dequantize_rows
from hive_core.model.packed.int4 import INNER_K_TILES, PackedLinear, check_int4_matrix
from hive_core.model.packed.memory import release_pages, trim_heap
from hive_core.model.packed.rows import RowTable, row_table


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
    a new row table over `blocks`) for exact rescoring. Packs in chunks of rows. `blocks` may
    be of any GGML type that `gguf` dequantises."""
    blocks = as_bytes(blocks)
    check_int4_matrix(blocks, qtype, shape, requantised=True)
    rows, cols = shape
    groups = cols // GROUP
    packed = torch.empty((rows, cols // 2), dtype=torch.uint8)
    scales_zeros = torch.empty((groups, rows, 2), dtype=torch.bfloat16)
    err_sq = torch.empty(rows)
    norm_sq = torch.empty(rows)
    for start in range(0, rows, PACK_ROWS):
        idx = slice(start, min(start + PACK_ROWS, rows))
        w = torch.from_numpy(dequantize_rows(np.asarray(blocks[idx]), qtype)).view(-1, groups, GROUP)
        lo, hi = w.amin(dim=-1), w.amax(dim=-1)
        scale = ((hi - lo) / 15).to(torch.bfloat16)
        zero = (lo + 8 * scale.float()).to(torch.bfloat16)
        s, z = scale.float().unsqueeze(-1), zero.float().unsqueeze(-1)
        codes = torch.round((w - z) / torch.where(s > 0, s, 1.0) + 8).clamp_(0, 15)
        wq = (codes - 8) * s + z  # what the kernel multiplies by
        err_sq[idx] = (wq - w).square().mean(dim=(1, 2))
        norm_sq[idx] = wq.square().sum(dim=(1, 2))
        packed[idx] = torch._convert_weight_to_int4pack_for_cpu(
            codes.to(torch.int32).view(-1, cols), INNER_K_TILES)
        scales_zeros[:, idx] = torch.stack([scale, zero], dim=-1).transpose(0, 1)
        release_pages(blocks[idx])
    trim_heap()
    return RescoredHead(PackedLinear(packed, scales_zeros, cols, 1),
                        table or row_table(blocks, qtype, shape, dtype), err_sq, norm_sq,
                        float(err_sq.max()), float(norm_sq.max()))
