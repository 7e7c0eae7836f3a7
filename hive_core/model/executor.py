"""`ShardExecutor`: the weights of some stages (and maybe embedding/head) and running them.

A node serving stages builds one from a GGUF file, then runs ``run_stage(stage, hidden,
start, caches)`` on hidden states that may come from the network, so inputs are checked.
The asking device builds one with ``embed=True, head=True`` for its local ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from hive_core.base.stage import Stage
from hive_core.model import ops
from hive_core.model.config import LlamaConfig
from hive_core.model.errors import StageError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.cache import KVCache
from hive_core.model.kv.factory import KVFactory, new_caches
from hive_core.model.weights import Progress, ShardWeights, load_shard_weights

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class ShardExecutor:
    """Runs the stages whose weights it holds; stateless apart from the caches passed in."""

    def __init__(
        self, config: LlamaConfig, weights: ShardWeights, stages: Iterable[Stage], dtype: torch.dtype
    ) -> None:
        self.config = config
        self.weights = weights
        self.stages = tuple(stages)
        self.dtype = dtype
        self.rope = ops.RopeTable(config, dtype)

    @classmethod
    def load(
        cls,
        file: GGUFModelFile,
        stages: Iterable[Stage] = (),
        *,
        embed: bool = False,
        head: bool = False,
        dtype: torch.dtype = torch.float32,
        progress: Progress | None = None,
        weights: str = "fp32",
        allow_dequant: bool = False,
    ) -> ShardExecutor:
        """Load only what `stages` (plus embedding/head if asked) need from `file`, with the
        matrices held as `weights` says ("packed", "fp32" or "bf16": see `weights.py`;
        `allow_dequant`: a packed load may dequantise matrices no kernel takes)."""
        stages = tuple(stages)
        held = load_shard_weights(file, stages, embed=embed, head=head, dtype=dtype,
                                  progress=progress, mode=weights, allow_dequant=allow_dequant)
        return cls(file.config, held, stages, dtype)

    @property
    def attention_layers(self) -> list[int]:
        """Layers whose attention runs here: each needs one KV cache per session."""
        return sorted(self.weights.attention)

    def new_caches(self, factory: KVFactory) -> dict[int, KVCache]:
        return new_caches(self.attention_layers, factory)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[seq]`` (int64) to hidden ``[seq, hidden]``."""
        if self.weights.embedding is None:
            raise StageError("this executor was loaded without the embedding")
        if ids.dim() != 1 or ids.numel() == 0:
            raise StageError(f"token ids must be a non-empty 1-D tensor, got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size:
            raise StageError(f"token id out of range 0..{self.config.vocab_size - 1}")
        return ops.embed(self.weights.embedding, ids)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden ``[seq, hidden]`` to logits ``[seq, vocab]``."""
        if self.weights.head is None:
            raise StageError("this executor was loaded without the LM head")
        self._check_hidden(hidden)
        return ops.head(self.weights.head, self.config, hidden)

    def run_stage(
        self, stage: Stage, hidden: torch.Tensor, start: int, caches: Mapping[int, KVCache],
        pause: Callable[[], object] | None = None,
    ) -> torch.Tensor:
        """Run `stage` on hidden states for positions ``start .. start+seq``.

        `caches` maps each layer whose attention the stage runs to that layer's cache for
        this session; every one must already hold exactly `start` positions. `pause`, if
        given, is called before each layer (a game's frame gate: compute yields to frames).
        """
        self._check_hidden(hidden)
        seq = hidden.shape[0]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise StageError(f"start position must be a non-negative integer, got {start!r}")
        if start + seq > self.config.context_length:
            raise StageError(
                f"positions {start}..{start + seq} exceed the context of {self.config.context_length}"
            )
        w = self.weights
        for layer in stage.layers:
            if stage.part.has_attention:
                if layer not in w.attention:
                    raise StageError(f"attention weights of layer {layer} are not loaded here")
                cache = caches.get(layer)
                if cache is None:
                    raise StageError(f"no KV cache given for layer {layer}")
                if len(cache) != start:
                    raise StageError(
                        f"layer {layer} cache holds {len(cache)} positions but input starts at {start}"
                    )
            if stage.part.has_mlp and layer not in w.mlp:
                raise StageError(f"MLP weights of layer {layer} are not loaded here")
        cfg, rope = self.config, self.rope
        h = hidden
        for layer in stage.layers:
            if pause is not None:
                pause()
            if stage.part.has_attention:
                h = ops.attention(w.attention[layer], cfg, rope, h, start, caches[layer])
            if stage.part.has_mlp:
                h = ops.mlp(w.mlp[layer], cfg, h)
        return h

    def _check_hidden(self, hidden: torch.Tensor) -> None:
        if not isinstance(hidden, torch.Tensor):
            raise StageError("hidden states must be a tensor")
        if hidden.dim() != 2 or hidden.shape[0] == 0 or hidden.shape[1] != self.config.hidden:
            raise StageError(
                f"hidden states must be [seq, {self.config.hidden}], got {tuple(hidden.shape)}"
            )
        if hidden.dtype != self.dtype:
            raise StageError(f"hidden states are {hidden.dtype}, this shard computes in {self.dtype}")
