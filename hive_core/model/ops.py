"""The llama-family layers as pure functions of (weights, input, positions, KV cache).

Hidden states are ``[seq, hidden]`` for one sequence (the cache holds one session). Each
residual add lives inside its part (`attention` returns ``h + attn(norm(h))``, `mlp` returns
``h + mlp(norm(h))``), so running the parts on different nodes composes to exactly `block`.
Every projection goes through `linear`, where packed weights (`hive_core.model.packed`) run
their own kernel; embedding lookups go through `embed` the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hive_core.model.config import LlamaConfig
from hive_core.model.kv.cache import KVCache
from hive_core.model.packed import Matrix, RowSlice, Table
from hive_core.model.weights import AttentionWeights, HeadWeights, MlpWeights


def linear(x: torch.Tensor, w: Matrix) -> torch.Tensor:
    """``x @ w.T``: every weight multiplication in the model goes through here."""
    if isinstance(w, torch.Tensor):
        return F.linear(x, w)
    return w(x)  # a packed or differently-typed matrix brings its own kernel


def project(x: torch.Tensor, mats: tuple[Matrix, ...]) -> list[torch.Tensor]:
    """``linear(x, m)`` for each of `mats` (which share the input `x`); row slices of one
    fused packed matrix run it once."""
    slices = [m for m in mats if isinstance(m, RowSlice)]
    if len(slices) == len(mats) and all(m.whole is slices[0].whole for m in slices):
        y = slices[0].whole(x)
        return [y[..., m.start : m.stop] for m in slices]
    return [linear(x, m) for m in mats]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in float32 and cast back, as transformers' LlamaRMSNorm does (for
    float32, torch's own op: the same bits in fewer dispatches)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


class RopeTable:
    """Cosines and sines of rotary embeddings for every position up to the context length.

    `sin` holds the sines with the first half negated, so that rotate-half is a roll:
    ``cat(-x2, x1) * sin == roll(x) * sin`` to the bit (a sign flip rounds nothing)."""

    def __init__(self, cfg: LlamaConfig, dtype: torch.dtype = torch.float32) -> None:
        dim = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        if cfg.rope_factors is not None:  # Llama-3.1 / linear scaling: some frequencies slowed
            inv_freq = inv_freq / torch.tensor(cfg.rope_factors, dtype=torch.float32)
        pos = torch.arange(cfg.context_length, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)  # float32, like transformers' rotary embedding
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(dtype)
        sin = emb.sin()
        sin[:, : dim // 2] *= -1
        self.sin = sin.to(dtype)
        self.length = cfg.context_length

    def at(self, start: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[start : start + seq], self.sin[start : start + seq]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on ``[heads, seq, head_dim]`` (weights are in the HF row order), with
    `RopeTable`'s half-negated `sin`: ``x * cos + cat(-x2, x1) * sin``."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


def embed(table: Table, ids: torch.Tensor) -> torch.Tensor:
    """Token ids ``[seq]`` to hidden states ``[seq, hidden]``."""
    if isinstance(table, torch.Tensor):
        return F.embedding(ids, table)
    return table.lookup(ids)


def attention(
    w: AttentionWeights,
    cfg: LlamaConfig,
    rope: RopeTable,
    h: torch.Tensor,
    start: int,
    cache: KVCache,
) -> torch.Tensor:
    """``h + o(attn(rope(q), rope(k), v))`` for positions ``start .. start+seq``; appends to `cache`.

    The caller guarantees ``len(cache) == start`` (see `executor.ShardExecutor.run_stage`).
    """
    seq = h.shape[0]
    hd = cfg.head_dim
    x = rms_norm(h, w.norm, cfg.rms_eps)
    q, k, v = project(x, (w.q, w.k, w.v))
    if w.q_bias is not None:
        q = q + w.q_bias
    if w.k_bias is not None:
        k = k + w.k_bias
    if w.v_bias is not None:
        v = v + w.v_bias
    q = q.unflatten(-1, (cfg.n_heads, hd)).transpose(0, 1)
    k = k.unflatten(-1, (cfg.n_kv_heads, hd)).transpose(0, 1)
    v = v.unflatten(-1, (cfg.n_kv_heads, hd)).transpose(0, 1)
    cos, sin = rope.at(start, seq)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    k_all, v_all = cache.append(k, v)
    total = k_all.shape[1]
    mask = None
    causal = False
    window = cfg.sliding_window
    if window is not None and total > window:
        # Mistral's sliding window: a query sees the `window` latest positions, itself included.
        qpos = torch.arange(total - seq, total).unsqueeze(1)
        kpos = torch.arange(total).unsqueeze(0)
        mask = (kpos <= qpos) & (kpos > qpos - window)
    elif seq > 1:
        if total == seq:
            causal = True
        else:
            # Queries after a cached prefix (chunked prefill, speculative verify).
            qpos = torch.arange(total - seq, total).unsqueeze(1)
            mask = torch.arange(total).unsqueeze(0) <= qpos
    o = F.scaled_dot_product_attention(
        q.unsqueeze(0), k_all.unsqueeze(0), v_all.unsqueeze(0),
        attn_mask=mask, is_causal=causal, enable_gqa=cfg.n_kv_heads != cfg.n_heads,
    )
    o = o.squeeze(0).transpose(0, 1).reshape(seq, cfg.n_heads * hd)
    return h + linear(o, w.o)


def mlp(w: MlpWeights, cfg: LlamaConfig, h: torch.Tensor) -> torch.Tensor:
    """``h + down(silu(gate(x)) * up(x))`` with ``x = norm(h)``."""
    x = rms_norm(h, w.norm, cfg.rms_eps)
    gate, up = project(x, (w.gate, w.up))
    return h + linear(F.silu(gate) * up, w.down)


def block(
    a: AttentionWeights,
    m: MlpWeights,
    cfg: LlamaConfig,
    rope: RopeTable,
    h: torch.Tensor,
    start: int,
    cache: KVCache,
) -> torch.Tensor:
    """One transformer block: exactly `mlp` after `attention`."""
    return mlp(m, cfg, attention(a, cfg, rope, h, start, cache))


def head(w: HeadWeights, cfg: LlamaConfig, h: torch.Tensor) -> torch.Tensor:
    """Final norm and LM head: ``[seq, hidden]`` to logits ``[seq, vocab]``."""
    return linear(rms_norm(h, w.norm, cfg.rms_eps), w.output)
