"""Pick the KV cache kind (`--kv fp32|int4`) and make fresh caches, one per layer."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

from hive_core.model.errors import ModelError
from hive_core.model.kv.cache import DenseKV, KVCache

KVFactory = Callable[[], KVCache]
KV_KINDS = ("fp32", "int4")


def kv_factory(kind: str) -> KVFactory:
    """A callable making one empty cache of `kind`; INT4 is imported only when chosen."""
    if kind == "fp32":
        return DenseKV
    if kind == "int4":
        try:
            module = importlib.import_module("hive_core.model.kv.int4")
            cls = module.Int4KV
        except (ImportError, AttributeError) as exc:
            raise ModelError(
                "--kv int4 needs hive_core.model.kv.int4.Int4KV, which is not available "
                f"in this build ({exc})"
            ) from exc
        return cls
    raise ModelError(f"unknown KV cache kind {kind!r}: choose one of {', '.join(KV_KINDS)}")


def new_caches(layers: Iterable[int], factory: KVFactory) -> dict[int, KVCache]:
    """A fresh cache for each layer (one session's state on one node)."""
    return {layer: factory() for layer in layers}
