"""What a GGUF model file holds and what each node of a hive needs to serve it.

Bytes are counted as the file stores them (a node keeps its layers' blocks as they are).
Splitting the layers over N nodes evenly (contiguous ranges, the first ``L mod N`` nodes one
layer more), node i needs

    weights_i + KV_i,  KV_i = layers_i * context * 2 * n_kv_heads * head_dim * kv_bytes

(keys and values for every position of the context), plus tensors every layer uses (Llama
3.1's ``rope_freqs``). Only the asker holds the embedding rows and the head (output norm
and output matrix, or nothing more when the head is tied to the embedding).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hive_core.model.errors import ModelError

KV_BYTES = {"fp32": 4.0}  # bytes per cached key or value element; "int4" is measured below


@dataclass(frozen=True, slots=True)
class FormatUse:
    """How many tensors a format holds and their bytes."""

    tensors: int
    bytes: int


@dataclass(frozen=True, slots=True)
class NodeShare:
    """One node's layers and memory when the layers are split evenly."""

    node: int  # 1-based
    first_layer: int
    last_layer: int  # inclusive
    weight_bytes: int  # its layers' tensors as stored, plus the tensors every layer uses
    kv_bytes: int  # its KV cache filled to the context

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes


@dataclass(frozen=True)
class Footprint:
    """A model file's shape and where its bytes are."""

    path: str
    file_bytes: int
    architecture: str
    n_layers: int
    context: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    tokenizer: str  # tokenizer.ggml.model ("gpt2", "llama")
    vocab_size: int  # tokens in the vocabulary
    formats: dict[str, FormatUse]  # per GGML type, in order of bytes
    layer_bytes: list[int]  # per layer, every blk.i.* tensor
    embedding_bytes: int  # token_embd
    head_bytes: int  # output_norm plus output.weight (0 more when tied)
    tied: bool  # the head reuses the embedding matrix
    shared_bytes: int  # tensors outside layers, embedding and head (rope_freqs)
    kv_bytes_per_token_layer: dict[str, float] = field(default_factory=dict)  # per KV kind

    def split(self, n_nodes: int, kv: str = "fp32") -> list[NodeShare]:
        """The layers split evenly over `n_nodes` nodes, each node's memory (see the module)."""
        if not 1 <= n_nodes <= self.n_layers:
            raise ModelError(f"--nodes must be 1 to {self.n_layers} (the model's layers), "
                             f"got {n_nodes}")
        per_token = self.kv_bytes_per_token_layer[kv]
        base, extra = divmod(self.n_layers, n_nodes)
        shares, first = [], 0
        for i in range(n_nodes):
            count = base + (1 if i < extra else 0)
            layers = range(first, first + count)
            weights = sum(self.layer_bytes[j] for j in layers) + self.shared_bytes
            kv_bytes = round(count * self.context * per_token)
            shares.append(NodeShare(i + 1, first, first + count - 1, weights, kv_bytes))
            first += count
        return shares

    @property
    def asker_bytes(self) -> int:
        """What the asker holds besides any layers: embedding rows and the head."""
        return self.embedding_bytes + self.head_bytes

    def as_dict(self, n_nodes: int | None = None, kv: str = "fp32") -> dict[str, Any]:
        out = asdict(self)
        out["asker_bytes"] = self.asker_bytes
        if n_nodes is not None:
            out["kv"] = kv
            out["nodes"] = [asdict(s) | {"total_bytes": s.total_bytes}
                            for s in self.split(n_nodes, kv)]
        return out


def _kv_bytes_per_value() -> dict[str, float]:
    out = dict(KV_BYTES)
    try:  # the INT4 cache's long-run cost (codes, fp16 scales and mins); absent in some builds
        from hive_core.model.kv.int4 import Int4Config
    except ImportError:
        return out
    out["int4"] = Int4Config().bytes_per_value()
    return out


def read_footprint(path: str | os.PathLike[str]) -> Footprint:
    """Open and check the file as the loader does, then count its bytes by role."""
    from hive_core.model.gguf_file import GGUFModelFile

    file = GGUFModelFile(path)
    cfg = file.config
    kinds: dict[str, list[int]] = {}
    layer_bytes = [0] * cfg.n_layers
    embedding = head = shared = 0
    for name in file.tensor_names:
        data, kind = file.raw(name)
        n = int(data.nbytes)
        use = kinds.setdefault(kind, [0, 0])
        use[0] += 1
        use[1] += n
        if name.startswith("blk."):
            number = name.split(".")[1]
            layer = int(number) if number.isdigit() else -1
            if not 0 <= layer < cfg.n_layers:
                raise ModelError(f"{file.path}: tensor {name} is outside the "
                                 f"{cfg.n_layers} layers")
            layer_bytes[layer] += n
        elif name == "token_embd.weight":
            embedding += n
        elif name in ("output.weight", "output_norm.weight"):
            head += n
        else:
            shared += n
    vocab = file.array_len("tokenizer.ggml.tokens")
    per_value = _kv_bytes_per_value()
    per_token = {k: 2 * cfg.kv_dim * v for k, v in per_value.items()}
    return Footprint(
        path=str(file.path), file_bytes=Path(file.path).stat().st_size,
        architecture=cfg.architecture, n_layers=cfg.n_layers, context=cfg.context_length,
        hidden=cfg.hidden, ffn=cfg.ffn, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, tokenizer=str(file.metadata.get("tokenizer.ggml.model", "none")),
        vocab_size=vocab if vocab is not None else cfg.vocab_size,
        formats={k: FormatUse(c, b) for k, (c, b) in
                 sorted(kinds.items(), key=lambda kv: -kv[1][1])},
        layer_bytes=layer_bytes, embedding_bytes=embedding, head_bytes=head,
        tied=not file.has_tensor("output.weight"), shared_bytes=shared,
        kv_bytes_per_token_layer=per_token,
    )
