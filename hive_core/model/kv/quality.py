"""Measuring what a KV cache kind costs: bytes per token and teacher-forced quality vs a reference.

The text is fed in chunks through a pipeline session, exactly as chunked prefill runs: every
position attends to the cache as that cache kind stores it. For each position we keep the
log-probability of the true next token and the argmax, never the full logits, so a few
thousand tokens fit in little memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hive_core.model.errors import ModelError
from hive_core.model.kv.factory import KVFactory
from hive_core.model.pipeline import LocalPipeline


@dataclass(frozen=True, slots=True)
class TeacherForced:
    """Per-position results of feeding a text with one cache kind."""

    nll: torch.Tensor  # [n-1] float64: -log p(token[i+1] | tokens[..i])
    top1: torch.Tensor  # [n-1] int64: argmax of the logits at position i
    kv_bytes: int  # bytes every layer's cache holds after the whole text
    positions: int  # tokens fed (len of the text)

    @property
    def perplexity(self) -> float:
        return math.exp(float(self.nll.mean()))

    def bytes_per_token(self) -> float:
        return self.kv_bytes / self.positions


@dataclass(frozen=True, slots=True)
class KVQuality:
    """A cache kind measured against the reference (full-precision) cache on the same text."""

    tokens: int  # positions fed
    bytes_per_token: float  # all layers, keys and values, amortised over `tokens`
    fp16_bytes_per_token: float  # the same cache in 16 bits: 2 * layers * kv_dim * 2
    ppl: float
    ref_ppl: float
    top1_agreement: float  # fraction of positions whose argmax equals the reference's

    @property
    def bytes_ratio(self) -> float:
        return self.bytes_per_token / self.fp16_bytes_per_token

    @property
    def ppl_change(self) -> float:
        """Relative perplexity change vs the reference (0.03 is +3 %)."""
        return self.ppl / self.ref_ppl - 1.0


def teacher_forced(
    pipeline: LocalPipeline, ids: Sequence[int], kv: KVFactory, *, chunk: int = 32
) -> TeacherForced:
    """Feed `ids` in chunks of `chunk` positions and score every next-token prediction."""
    ids = list(ids)
    if len(ids) < 2:
        raise ModelError("need at least two tokens to score next-token predictions")
    if chunk < 1:
        raise ModelError(f"chunk must be at least 1, got {chunk}")
    if len(ids) > pipeline.config.context_length:
        raise ModelError(
            f"{len(ids)} tokens exceed the model's context of {pipeline.config.context_length}"
        )
    session = pipeline.new_session(kv)
    target = torch.tensor(ids[1:], dtype=torch.long)
    nll, top1 = [], []
    for begin in range(0, len(ids) - 1, chunk):
        piece = ids[begin:min(begin + chunk, len(ids) - 1)]
        logits = session.forward(piece, all_logits=True).float()
        logp = torch.log_softmax(logits, dim=-1)
        tgt = target[begin:begin + len(piece)]
        nll.append(-logp.gather(1, tgt.unsqueeze(1)).squeeze(1).double())
        top1.append(logits.argmax(dim=-1))
    # The last token is only ever a target; feed it so the cache holds the whole text.
    session.forward(ids[-1:])
    kv_bytes = sum(c.nbytes() for caches in session.caches for c in caches.values())
    return TeacherForced(torch.cat(nll), torch.cat(top1), kv_bytes, len(ids))


def compare(
    pipeline: LocalPipeline, ids: Sequence[int], kv: KVFactory, reference: TeacherForced,
    *, chunk: int = 32,
) -> KVQuality:
    """Run `kv` on `ids` and measure it against `reference` (a `teacher_forced` run)."""
    got = teacher_forced(pipeline, ids, kv, chunk=chunk)
    if got.positions != reference.positions:
        raise ModelError("the reference was measured on a different text")
    cfg = pipeline.config
    return KVQuality(
        tokens=got.positions,
        bytes_per_token=got.bytes_per_token(),
        fp16_bytes_per_token=float(2 * cfg.n_layers * cfg.kv_dim * 2),
        ppl=got.perplexity,
        ref_ppl=reference.perplexity,
        top1_agreement=float((got.top1 == reference.top1).double().mean()),
    )
