"""The per-layer KV cache contract and its full-precision implementation."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class KVCache(Protocol):
    """Keys and values of one attention layer for one session (batch of 1).

    Tensors are shaped ``[n_kv_heads, seq, head_dim]``; keys are stored after RoPE.
    ``append`` returns every key and value so far in the compute dtype, ready for
    attention; a quantised cache dequantises here.
    """

    kind: str  # "fp32" or "int4": what `--kv` selects and `--json` reports

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new positions and return (all_keys, all_values)."""
        ...

    def __len__(self) -> int:
        """Number of positions stored."""
        ...

    def truncate(self, length: int) -> None:
        """Forget positions >= length (rejected speculative tokens, failover rollback)."""
        ...

    def nbytes(self) -> int:
        """Bytes held for the stored positions (codes, scales and full-precision parts)."""
        ...

    def to_bytes(self) -> bytes:
        """Serialised form for the wire (no pickle); inverse of the class's `from_bytes`."""
        ...


class DenseKV:
    """Full-precision cache: keeps keys and values in the compute dtype."""

    kind = "fp32"

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._k is None or self._v is None:
            self._k, self._v = k.contiguous(), v.contiguous()
        else:
            self._k = torch.cat([self._k, k], dim=1)
            self._v = torch.cat([self._v, v], dim=1)
        return self._k, self._v

    def __len__(self) -> int:
        return 0 if self._k is None else int(self._k.shape[1])

    def truncate(self, length: int) -> None:
        if self._k is not None and self._v is not None and length < len(self):
            self._k = self._k[:, :length].contiguous()
            self._v = self._v[:, :length].contiguous()

    def nbytes(self) -> int:
        if self._k is None or self._v is None:
            return 0
        return self._k.numel() * self._k.element_size() + self._v.numel() * self._v.element_size()

    def to_bytes(self) -> bytes:
        raise NotImplementedError("wire form of DenseKV: see hive_core.model.kv_int4 for INT4")
