"""The shape of a llama-architecture model, read from GGUF metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hive_core.model.errors import GGUFFormatError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = ("llama",)


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """Hyper-parameters of a llama-architecture transformer."""

    n_layers: int  # transformer blocks
    hidden: int  # residual stream width (embedding length)
    ffn: int  # MLP inner width (feed-forward length)
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (grouped-query attention when fewer than n_heads)
    vocab_size: int  # rows of the embedding and of the LM head
    context_length: int  # positions the model was trained for; prompts + output must fit
    rope_base: float  # RoPE frequency base (theta)
    rms_eps: float  # epsilon of RMSNorm
    architecture: str = "llama"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], vocab_size: int | None = None) -> LlamaConfig:
        """Build from GGUF key/values (already decoded to Python values)."""
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError("GGUF metadata has no general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"unsupported architecture {arch!r}: only llama-architecture GGUF files are supported"
            )

        def need(key: str) -> Any:
            full = f"{arch}.{key}"
            if full not in meta:
                raise GGUFFormatError(f"GGUF metadata lacks {full}")
            return meta[full]

        def need_int(key: str) -> int:
            value = need(key)
            if isinstance(value, list) or not isinstance(value, int) or value <= 0:
                # Per-layer lists (variable heads) belong to other architectures.
                raise UnsupportedModelError(f"{arch}.{key} = {value!r}: need one positive integer")
            return int(value)

        def number(key: str, value: Any, kind: type) -> Any:
            ok = (int,) if kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok):
                raise GGUFFormatError(f"GGUF metadata {arch}.{key} = {value!r} is not a number")
            return kind(value)

        n_layers = need_int("block_count")
        hidden = need_int("embedding_length")
        ffn = need_int("feed_forward_length")
        n_heads = need_int("attention.head_count")
        n_kv_heads = number("attention.head_count_kv",
                            meta.get(f"{arch}.attention.head_count_kv", n_heads), int)
        context = need_int("context_length")
        rms_eps = number("attention.layer_norm_rms_epsilon",
                         need("attention.layer_norm_rms_epsilon"), float)
        rope_base = number("rope.freq_base", meta.get(f"{arch}.rope.freq_base", 10000.0), float)
        if hidden % n_heads:
            raise UnsupportedModelError(f"hidden size {hidden} is not a multiple of {n_heads} heads")
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise UnsupportedModelError(f"{n_heads} query heads cannot share {n_kv_heads} KV heads")
        head_dim = hidden // n_heads
        rope_dim = number("rope.dimension_count",
                          meta.get(f"{arch}.rope.dimension_count", head_dim), int)
        if rope_dim != head_dim or head_dim % 2:
            raise UnsupportedModelError(
                f"partial or odd RoPE (rotating {rope_dim} of {head_dim} dims) is not supported"
            )
        scaling = meta.get(f"{arch}.rope.scaling.type")
        if scaling not in (None, "none"):
            raise UnsupportedModelError(f"RoPE scaling {scaling!r} is not supported")
        vocab = meta.get(f"{arch}.vocab_size", vocab_size)
        if not isinstance(vocab, int) or vocab <= 0:
            raise GGUFFormatError("GGUF metadata gives no vocabulary size")
        return cls(
            n_layers=n_layers,
            hidden=hidden,
            ffn=ffn,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            vocab_size=int(vocab),
            context_length=context,
            rope_base=rope_base,
            rms_eps=rms_eps,
            architecture=arch,
        )
