"""Weight containers for one layer's attention and MLP, the embedding and the LM head, and
loading exactly the ones a set of stages needs from a GGUF file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.stage import Stage

Progress = Callable[[int, int], None]  # (done, total) tensors


@dataclass(frozen=True, slots=True)
class AttentionWeights:
    """Layer norm and projections of one attention block; q/k rows in the HF layout."""

    norm: torch.Tensor  # [hidden]
    q: torch.Tensor  # [n_heads * head_dim, hidden]
    k: torch.Tensor  # [n_kv_heads * head_dim, hidden]
    v: torch.Tensor  # [n_kv_heads * head_dim, hidden]
    o: torch.Tensor  # [hidden, n_heads * head_dim]


@dataclass(frozen=True, slots=True)
class MlpWeights:
    """Layer norm and SwiGLU projections of one MLP block."""

    norm: torch.Tensor  # [hidden]
    gate: torch.Tensor  # [ffn, hidden]
    up: torch.Tensor  # [ffn, hidden]
    down: torch.Tensor  # [hidden, ffn]


@dataclass(frozen=True, slots=True)
class HeadWeights:
    """Final norm and output projection (the embedding itself when the model ties them)."""

    norm: torch.Tensor  # [hidden]
    output: torch.Tensor  # [vocab, hidden]


@dataclass(slots=True)
class ShardWeights:
    """Everything one executor holds: some layers' parts, and maybe embedding and head."""

    attention: dict[int, AttentionWeights]
    mlp: dict[int, MlpWeights]
    embedding: torch.Tensor | None = None  # [vocab, hidden]
    head: HeadWeights | None = None

    def nbytes(self) -> int:
        seen: set[int] = set()
        total = 0
        tensors: list[torch.Tensor] = []
        for a in self.attention.values():
            tensors += [a.norm, a.q, a.k, a.v, a.o]
        for m in self.mlp.values():
            tensors += [m.norm, m.gate, m.up, m.down]
        if self.embedding is not None:
            tensors.append(self.embedding)
        if self.head is not None:
            tensors += [self.head.norm, self.head.output]
        for t in tensors:
            if t.data_ptr() not in seen:  # a tied head shares the embedding
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
        return total


def needed_tensors(file: GGUFModelFile, stages: Iterable[Stage], *, embed: bool, head: bool) -> list[str]:
    """GGUF tensor names a shard must dequantise, in load order."""
    names: list[str] = []
    for stage in stages:
        stage.check(file.config.n_layers)
        for i in stage.layers:
            if stage.part.has_attention:
                names += [f"blk.{i}.{n}.weight" for n in
                          ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output")]
            if stage.part.has_mlp:
                names += [f"blk.{i}.{n}.weight" for n in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    tied = not file.has_tensor("output.weight")
    if embed or (head and tied):
        names.append("token_embd.weight")
    if head:
        names.append("output_norm.weight")
        if not tied:
            names.append("output.weight")
    return list(dict.fromkeys(names))  # two stages may share a layer: load once


def load_shard_weights(
    file: GGUFModelFile,
    stages: Iterable[Stage],
    *,
    embed: bool = False,
    head: bool = False,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
) -> ShardWeights:
    """Dequantise only the tensors `stages` (and the embedding/head when asked) need."""
    stages = list(stages)
    cfg = file.config
    h, kv, ffn, vocab = cfg.hidden, cfg.kv_dim, cfg.ffn, cfg.vocab_size
    shapes = {
        "attn_norm": (h,), "attn_q": (h, h), "attn_k": (kv, h), "attn_v": (kv, h),
        "attn_output": (h, h), "ffn_norm": (h,), "ffn_gate": (ffn, h), "ffn_up": (ffn, h),
        "ffn_down": (h, ffn), "token_embd": (vocab, h), "output_norm": (h,), "output": (vocab, h),
    }
    names = needed_tensors(file, stages, embed=embed, head=head)
    got: dict[str, torch.Tensor] = {}
    for n, name in enumerate(names):
        got[name] = file.tensor(name, shapes[name.split(".")[-2]], dtype)
        if progress is not None:
            progress(n + 1, len(names))
    out = ShardWeights(attention={}, mlp={})
    for stage in stages:
        for i in stage.layers:
            p = f"blk.{i}."
            if stage.part.has_attention and i not in out.attention:
                out.attention[i] = AttentionWeights(
                    got[p + "attn_norm.weight"], got[p + "attn_q.weight"], got[p + "attn_k.weight"],
                    got[p + "attn_v.weight"], got[p + "attn_output.weight"])
            if stage.part.has_mlp and i not in out.mlp:
                out.mlp[i] = MlpWeights(
                    got[p + "ffn_norm.weight"], got[p + "ffn_gate.weight"], got[p + "ffn_up.weight"],
                    got[p + "ffn_down.weight"])
    if embed:
        out.embedding = got["token_embd.weight"]
    if head:
        output = got.get("output.weight", got.get("token_embd.weight"))
        assert output is not None
        out.head = HeadWeights(got["output_norm.weight"], output)
    return out
