"""Running the model locally as a chain of stages: embed, hops in order, head.

The asking device keeps the embedding, the head and sampling; `LocalPipeline` chains hops
that here run in-process (a later client swaps each hop for a remote shard server).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hive_core.base.stage import Stage
from hive_core.model.errors import StageError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.cache import KVCache
from hive_core.model.kv.factory import KVFactory
from hive_core.model.weights import Progress

Hop = tuple[ShardExecutor, Stage]


class LocalPipeline:
    """An embed/head executor plus `hops` that together cover every layer, in order."""

    def __init__(self, client: ShardExecutor, hops: Sequence[Hop]) -> None:
        self.client = client
        self.hops = list(hops)
        self.config = client.config
        # Each layer's attention and MLP must each run exactly once, in layer order.
        expected = [(layer, part) for layer in range(self.config.n_layers) for part in ("a", "m")]
        got = []
        for _, stage in self.hops:
            for layer in stage.layers:
                if stage.part.has_attention:
                    got.append((layer, "a"))
                if stage.part.has_mlp:
                    got.append((layer, "m"))
        if got != expected:
            raise StageError("hops do not cover every layer's attention and MLP exactly once, in order")

    @classmethod
    def load_single(
        cls,
        file: GGUFModelFile,
        *,
        dtype: torch.dtype = torch.float32,
        progress: Progress | None = None,
        weights: str = "fp32",
        allow_dequant: bool = False,
    ) -> LocalPipeline:
        """The whole model in one executor (embed, all layers, head): `cadencia generate`."""
        stage = Stage(0, file.config.n_layers)
        ex = ShardExecutor.load(file, [stage], embed=True, head=True, dtype=dtype, progress=progress,
                                weights=weights, allow_dequant=allow_dequant)
        return cls(ex, [(ex, stage)])

    def new_session(self, kv: KVFactory) -> PipelineSession:
        return PipelineSession(self, kv)


class PipelineSession:
    """One sequence's state: a KV cache per layer, owned per hop as a remote node would."""

    def __init__(self, pipeline: LocalPipeline, kv: KVFactory) -> None:
        self.pipeline = pipeline
        self.caches: list[dict[int, KVCache]] = [
            {layer: kv() for layer in stage.layers} if stage.part.has_attention else {}
            for _, stage in pipeline.hops
        ]
        self.position = 0
        self.kv_kind = str(getattr(kv, "kind", "unknown"))  # what `--json` reports

    def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> torch.Tensor:
        """Feed `ids` at the current position; logits of the last one ``[vocab]`` (or all ``[seq, vocab]``)."""
        client = self.pipeline.client
        try:
            with torch.inference_mode():
                h = client.embed(torch.tensor(list(ids), dtype=torch.long))
                for (ex, stage), caches in zip(self.pipeline.hops, self.caches, strict=True):
                    h = ex.run_stage(stage, h, self.position, caches)
                logits = client.head(h if all_logits else h[-1:])
        except Exception:
            # Leave every cache as it was before this call so the session stays usable.
            for caches in self.caches:
                for cache in caches.values():
                    cache.truncate(self.position)
            raise
        self.position += len(ids)
        return logits if all_logits else logits[0]
