"""The shape of a llama-family model (llama, mistral, qwen2), read from GGUF metadata.

Keys are prefixed by the architecture's name (``qwen2.block_count``). RoPE frequency scaling
comes as per-frequency divisors: llama.cpp writes Llama-3.1's as the ``rope_freqs`` tensor
(the file passes it in), or the metadata says ``rope.scaling.type`` = linear or llama3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hive_core.model.errors import GGUFFormatError, UnsupportedModelError

# llama.cpp writes Mistral 7B and Nemo as "llama"; "mistral" is what transformers reads.
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2")


@dataclass(frozen=True, slots=True)
class LlamaConfig:
    """Hyper-parameters of a llama-family transformer."""

    n_layers: int  # transformer blocks
    hidden: int  # residual stream width (embedding length)
    ffn: int  # MLP inner width (feed-forward length)
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (grouped-query attention when fewer than n_heads)
    vocab_size: int  # rows of the embedding and of the LM head
    context_length: int  # positions the model was trained for; prompts + output must fit
    rope_base: float  # RoPE frequency base (theta)
    rms_eps: float  # epsilon of RMSNorm
    architecture: str = "llama"  # general.architecture
    # Divisor of each of the head_dim/2 RoPE inverse frequencies (Llama-3.1's scaling, or one
    # linear factor repeated); None when the frequencies are used as they are.
    rope_factors: tuple[float, ...] | None = None
    sliding_window: int | None = None  # a query sees at most this many latest positions

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def qk_permuted(self) -> bool:
        """llama.cpp's converter interleaves the rotary halves of q/k rows for "llama" only
        (its other architectures keep rotate-half order), and the loader undoes it."""
        return self.architecture == "llama"

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], vocab_size: int | None = None,
                      rope_freqs: Sequence[float] | None = None) -> LlamaConfig:
        """Build from GGUF key/values (already decoded to Python values) and, when the file
        has one, its ``rope_freqs`` tensor."""
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFFormatError("GGUF metadata has no general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"unsupported architecture {arch!r}: only {', '.join(SUPPORTED_ARCHITECTURES)} "
                "GGUF files are supported"
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

        def number(key: str, default: Any, kind: type) -> Any:
            value = meta.get(f"{arch}.{key}", default)
            ok = (int,) if kind is int else (int, float)
            if isinstance(value, bool) or not isinstance(value, ok):
                raise GGUFFormatError(f"GGUF metadata {arch}.{key} = {value!r} is not a number")
            return kind(value)

        n_layers = need_int("block_count")
        hidden = need_int("embedding_length")
        ffn = need_int("feed_forward_length")
        n_heads = need_int("attention.head_count")
        n_kv_heads = number("attention.head_count_kv", n_heads, int)
        context = need_int("context_length")
        need("attention.layer_norm_rms_epsilon")
        rms_eps = number("attention.layer_norm_rms_epsilon", None, float)
        rope_base = number("rope.freq_base", 10000.0, float)
        if hidden % n_heads:
            raise UnsupportedModelError(f"hidden size {hidden} is not a multiple of {n_heads} heads")
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise UnsupportedModelError(f"{n_heads} query heads cannot share {n_kv_heads} KV heads")
        head_dim = hidden // n_heads
        for key in ("attention.key_length", "attention.value_length"):
            if number(key, head_dim, int) != head_dim:
                raise UnsupportedModelError(
                    f"{arch}.{key} = {meta[f'{arch}.{key}']} differs from hidden/heads = {head_dim}")
        rope_dim = number("rope.dimension_count", head_dim, int)
        if rope_dim != head_dim or head_dim % 2:
            raise UnsupportedModelError(
                f"partial or odd RoPE (rotating {rope_dim} of {head_dim} dims) is not supported"
            )
        window = meta.get(f"{arch}.attention.sliding_window")
        if window is not None:
            window = number("attention.sliding_window", None, int)
            if window <= 0:
                raise GGUFFormatError(f"{arch}.attention.sliding_window = {window} is not positive")
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
            rope_factors=_rope_factors(meta, arch, head_dim, rope_base, rope_freqs),
            sliding_window=window if window is None or window < context else None,
        )


def _rope_factors(meta: Mapping[str, Any], arch: str, head_dim: int, base: float,
                  rope_freqs: Sequence[float] | None) -> tuple[float, ...] | None:
    """Divisors of the RoPE inverse frequencies, from the tensor or the scaling metadata."""
    kind = meta.get(f"{arch}.rope.scaling.type")
    half = head_dim // 2
    if rope_freqs is not None:
        factors = tuple(float(f) for f in rope_freqs)
        if len(factors) != half or not all(math.isfinite(f) and f > 0 for f in factors):
            raise GGUFFormatError(
                f"rope_freqs holds {len(factors)} factors for {half} RoPE frequencies, or a "
                "factor that is not a positive number"
            )
        if kind not in (None, "none", "llama3"):
            raise UnsupportedModelError(f"RoPE scaling {kind!r} together with rope_freqs is not supported")
        return factors

    def scaling(key: str, default: float | None) -> float:
        value = meta.get(f"{arch}.rope.scaling.{key}", default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise GGUFFormatError(f"GGUF metadata {arch}.rope.scaling.{key} = {value!r} is not a positive number")
        return float(value)

    if kind in (None, "none"):
        return None
    if kind == "linear":
        factor = scaling("factor", None)
        return None if factor == 1.0 else (factor,) * half
    if kind == "llama3":
        return llama3_factors(head_dim, base, scaling("factor", None), scaling("low_freq_factor", 1.0),
                              scaling("high_freq_factor", 4.0), scaling("original_context_length", None))
    raise UnsupportedModelError(f"RoPE scaling {kind!r} is not supported (only linear and llama3)")


def llama3_factors(head_dim: int, base: float, factor: float, low: float, high: float,
                   original: float) -> tuple[float, ...]:
    """Llama-3.1's scaling as divisors: long wavelengths slowed by `factor`, short ones kept,
    the band between blended (the values llama.cpp's converter writes as rope_freqs)."""
    if not low < high:
        raise GGUFFormatError(f"llama3 RoPE scaling needs low_freq_factor {low} < high_freq_factor {high}")
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return tuple(out)
