"""The per-layer KV cache contract and its full-precision implementation."""

from __future__ import annotations

import struct
from typing import Any, Protocol, runtime_checkable

import numpy as np
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


# --- wire helpers shared by every cache kind --------------------------------------------

WIRE_VERSION = 1
DENSE_MAGIC = b"CKVD"
# Bounds a peer cannot exceed: they keep a malformed header from asking for huge tensors.
MAX_WIRE_BYTES = 256 * 1024 * 1024
MAX_HEADS = 1024
MAX_HEAD_DIM = 4096
MAX_POSITIONS = 1 << 20

_DENSE_HEADER = struct.Struct("<4sHBIII")
_DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16}
_CODES = {dt: c for c, dt in _DTYPES.items()}


class KVWireError(ValueError):
    """A serialised KV cache is truncated, malformed, of an unknown version or too large."""


def dtype_code(dtype: torch.dtype) -> int:
    """Wire code of a compute dtype (float32, float16, bfloat16)."""
    try:
        return _CODES[dtype]
    except KeyError:
        raise ValueError(f"KV cache dtype {dtype} has no wire form") from None


def dtype_from_code(code: int) -> torch.dtype:
    """Compute dtype of a wire code; `KVWireError` if unknown."""
    try:
        return _DTYPES[code]
    except KeyError:
        raise KVWireError(f"unknown dtype code {code}") from None


def check_magic(magic: bytes, version: int, expected: bytes) -> None:
    """Reject a blob of another kind or version."""
    if magic != expected:
        raise KVWireError(f"bad magic {magic!r}, expected {expected!r}")
    if version != WIRE_VERSION:
        raise KVWireError(f"unsupported KV wire version {version} (this build reads {WIRE_VERSION})")


def check_shape(heads: int, length: int, head_dim: int) -> None:
    """Reject shapes outside the bounds a real model can have."""
    if not 1 <= heads <= MAX_HEADS:
        raise KVWireError(f"heads {heads} out of range 1..{MAX_HEADS}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise KVWireError(f"head_dim {head_dim} out of range 1..{MAX_HEAD_DIM}")
    if not 0 <= length <= MAX_POSITIONS:
        raise KVWireError(f"length {length} out of range 0..{MAX_POSITIONS}")


def tensor_to_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a tensor (bfloat16 travels as its 16-bit pattern)."""
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2", copy=False).tobytes()
    return t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()


_NP_LE: dict[torch.dtype, np.dtype[Any]] = {
    torch.float32: np.dtype("<f4"),
    torch.float16: np.dtype("<f2"),
    torch.bfloat16: np.dtype("<i2"),
    torch.uint8: np.dtype("u1"),
}


class WireReader:
    """Bounded reader over a blob: every read is checked against what remains."""

    def __init__(self, data: bytes, max_bytes: int) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise KVWireError(f"expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise KVWireError(f"KV blob of {len(data)} bytes exceeds the limit of {max_bytes}")
        self._data = memoryview(data)
        self._pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._data):
            raise KVWireError(
                f"truncated KV blob: need {n} bytes at offset {self._pos}, have {len(self._data)}"
            )
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        """The fields of `fmt` (ints, and bytes for ``s`` codes) from the next bytes."""
        return fmt.unpack(self.take(fmt.size))

    def tensor(self, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        """Copy the next tensor out of the blob (the copy keeps torch off read-only memory)."""
        np_dtype = _NP_LE[dtype]
        count = 1
        for s in shape:
            count *= s
        raw = self.take(count * np_dtype.itemsize)
        arr = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="), copy=True)
        t = torch.from_numpy(arr).reshape(shape)
        return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise KVWireError(f"{len(self._data) - self._pos} trailing bytes after the KV blob")


class DenseKV:
    """Full-precision cache: keeps keys and values in the compute dtype.

    Positions go into buffers that grow `GROW` positions at a time, so a decode step writes
    one position instead of copying the whole cache; `append` returns views of the filled part.
    """

    kind = "fp32"
    GROW = 64  # positions added when a buffer is full (a bounded overshoot, few copies)

    def __init__(self) -> None:
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._n = 0

    @property
    def _k(self) -> torch.Tensor | None:
        return None if self._kbuf is None else self._kbuf[:, : self._n]

    @property
    def _v(self) -> torch.Tensor | None:
        return None if self._vbuf is None else self._vbuf[:, : self._n]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._n + k.shape[1]
        if self._kbuf is None or self._vbuf is None or end > self._kbuf.shape[1]:
            self._kbuf, self._vbuf = (self._grown(self._kbuf, k, end), self._grown(self._vbuf, v, end))
        self._kbuf[:, self._n : end] = k
        self._vbuf[:, self._n : end] = v
        self._n = end
        return self._kbuf[:, :end], self._vbuf[:, :end]

    def _grown(self, buf: torch.Tensor | None, like: torch.Tensor, need: int) -> torch.Tensor:
        cap = -(-need // self.GROW) * self.GROW
        out = like.new_empty((like.shape[0], cap, like.shape[2]))
        if buf is not None:
            out[:, : self._n] = buf[:, : self._n]
        return out

    def __len__(self) -> int:
        return self._n

    def truncate(self, length: int) -> None:
        self._n = max(0, min(self._n, length))

    def nbytes(self) -> int:
        k, v = self._k, self._v
        if k is None or v is None:
            return 0
        return k.numel() * k.element_size() + v.numel() * v.element_size()

    def to_bytes(self) -> bytes:
        """Header (magic, version, dtype, heads, length, head_dim) then raw K then raw V."""
        k, v = self._k, self._v
        if k is None or v is None or self._n == 0:
            return _DENSE_HEADER.pack(DENSE_MAGIC, WIRE_VERSION, 0, 0, 0, 0)
        h, t, d = k.shape
        return b"".join((
            _DENSE_HEADER.pack(DENSE_MAGIC, WIRE_VERSION, dtype_code(k.dtype), h, t, d),
            tensor_to_bytes(k),
            tensor_to_bytes(v),
        ))

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = MAX_WIRE_BYTES) -> DenseKV:
        """Inverse of `to_bytes`; raises `KVWireError` on anything malformed or over size."""
        reader = WireReader(data, max_bytes)
        magic, version, code, h, t, d = reader.unpack(_DENSE_HEADER)
        check_magic(magic, version, DENSE_MAGIC)
        cache = cls()
        if h == t == d == 0:
            reader.finish()
            return cache
        dtype = dtype_from_code(code)
        check_shape(h, t, d)
        k = reader.tensor(dtype, (h, t, d))
        v = reader.tensor(dtype, (h, t, d))
        reader.finish()
        cache._kbuf, cache._vbuf, cache._n = k, v, t
        return cache
