"""Tensors on the wire: a small header plus raw little-endian bytes, chunked and reassembled."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Annotated, Any

import numpy as np

from hive_core.base.codec import MAX_FRAME_BYTES, message
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Blob, EnumOf, ListOf, UInt
from hive_core.protocol.messages import MsgType

# Room for the frame and tensor headers (at most ~80 bytes with 8 dims) inside one frame.
MAX_CHUNK_PAYLOAD = MAX_FRAME_BYTES - 1024
# A peer that does not advertise a max message size gets 64 KiB from aiortc: use this then.
SAFE_CHUNK_PAYLOAD = 64 * 1024 - 1024
MAX_DIMS = 8
MAX_TENSOR_BYTES = 256 * 1024 * 1024


class Dtype(IntEnum):
    """Element types; BF16 travels as its raw 16-bit pattern (numpy has no bfloat16)."""

    F32 = 1
    F16 = 2
    BF16 = 3
    F64 = 4
    I8 = 5
    U8 = 6
    I16 = 7
    I32 = 8
    I64 = 9
    BOOL = 10


_NUMPY: dict[Dtype, str] = {
    Dtype.F32: "<f4", Dtype.F16: "<f2", Dtype.BF16: "<u2", Dtype.F64: "<f8", Dtype.I8: "i1",
    Dtype.U8: "u1", Dtype.I16: "<i2", Dtype.I32: "<i4", Dtype.I64: "<i8", Dtype.BOOL: "?",
}
_FROM_NUMPY = {np.dtype(v).newbyteorder("<") if np.dtype(v).itemsize > 1 else np.dtype(v): k
               for k, v in _NUMPY.items() if k is not Dtype.BF16}


def itemsize(dtype: Dtype) -> int:
    return np.dtype(_NUMPY[dtype]).itemsize


@message(MsgType.TENSOR)
@dataclass(frozen=True)
class TensorChunk:
    """One piece of a tensor; every chunk repeats the header so any can arrive first."""

    stream_id: Annotated[int, UInt(8)]  # request id: one inference request / transfer
    sequence: Annotated[int, UInt(4)]  # token step within the request
    layer: Annotated[int, UInt(2)]  # model layer the tensor belongs to
    tag: Annotated[int, UInt(2)]  # which tensor of that step (hidden, k, v...), caller-defined
    dtype: Annotated[Dtype, EnumOf(Dtype)]
    shape: Annotated[tuple[int, ...], ListOf(UInt(4), MAX_DIMS)]
    chunk_index: Annotated[int, UInt(4)]
    chunk_count: Annotated[int, UInt(4)]
    payload: Annotated[bytes, Blob(MAX_CHUNK_PAYLOAD)]

    def __post_init__(self) -> None:
        if self.chunk_count < 1 or self.chunk_index >= self.chunk_count:
            raise ProtocolError(f"chunk {self.chunk_index} of {self.chunk_count} is out of range")
        if self.nbytes > MAX_TENSOR_BYTES:
            raise ProtocolError(
                f"tensor of {self.nbytes} bytes exceeds the limit of {MAX_TENSOR_BYTES}"
            )
        if self.chunk_count > max(1, self.nbytes):
            raise ProtocolError(f"{self.chunk_count} chunks for a tensor of {self.nbytes} bytes")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.stream_id, self.sequence, self.layer, self.tag)


@dataclass(frozen=True)
class WireTensor:
    """A whole tensor as received: header fields and its raw little-endian bytes."""

    stream_id: int
    sequence: int
    layer: int
    tag: int
    dtype: Dtype
    shape: tuple[int, ...]
    data: bytes

    def to_numpy(self) -> np.ndarray:
        """A read-only array view (BF16 comes back as uint16 bit patterns)."""
        return np.frombuffer(self.data, dtype=_NUMPY[self.dtype]).reshape(self.shape)


def dtype_of(array: np.ndarray) -> Dtype:
    dt = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise ProtocolError(f"dtype {array.dtype} cannot travel on the wire") from None


def chunk_tensor(
    array: np.ndarray,
    *,
    stream_id: int,
    sequence: int = 0,
    layer: int = 0,
    tag: int = 0,
    dtype: Dtype | None = None,
    chunk_bytes: int = MAX_CHUNK_PAYLOAD,
) -> Iterator[TensorChunk]:
    """Split `array` into chunks of at most `chunk_bytes` payload each.

    `dtype` overrides the inferred type: pass Dtype.BF16 with a uint16 view of a bfloat16
    tensor. Bytes go out little-endian whatever the host order.
    """
    if not 1 <= chunk_bytes <= MAX_CHUNK_PAYLOAD:
        raise ProtocolError(f"chunk_bytes must be in 1..{MAX_CHUNK_PAYLOAD}, got {chunk_bytes}")
    if array.ndim > MAX_DIMS:
        raise ProtocolError(f"{array.ndim} dimensions exceed the limit of {MAX_DIMS}")
    kind = dtype if dtype is not None else dtype_of(array)
    if np.dtype(_NUMPY[kind]).itemsize != array.dtype.itemsize:
        raise ProtocolError(f"{kind.name} does not match an array of dtype {array.dtype}")
    raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    count = max(1, -(-len(raw) // chunk_bytes))
    for i in range(count):
        yield TensorChunk(stream_id, sequence, layer, tag, kind, tuple(int(d) for d in array.shape),
                          i, count, raw[i * chunk_bytes : (i + 1) * chunk_bytes])


@dataclass
class _Partial:
    first: TensorChunk
    parts: dict[int, bytes]
    size: int
    started: float


class Reassembler:
    """Rebuilds tensors from chunks arriving in any order, duplicated or interleaved.

    Memory is bounded (`max_pending_bytes` across unfinished tensors, `max_streams` of
    them); unfinished tensors are dropped after `timeout_s`. Inconsistent chunks (a header
    that differs from the first chunk's, a duplicate index with other bytes, a size that
    does not add up) raise ProtocolError and discard that tensor.
    """

    def __init__(
        self,
        *,
        max_pending_bytes: int = 64 * 1024 * 1024,
        max_streams: int = 256,
        timeout_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending_bytes = max_pending_bytes
        self.max_streams = max_streams
        self.timeout_s = timeout_s
        self._clock = clock
        self._pending: OrderedDict[tuple[Any, ...], _Partial] = OrderedDict()
        self._pending_bytes = 0
        self.expired = 0

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def __len__(self) -> int:
        return len(self._pending)

    def _drop(self, key: tuple[Any, ...]) -> None:
        part = self._pending.pop(key, None)
        if part is not None:
            self._pending_bytes -= part.size

    def expire(self) -> int:
        """Drop unfinished tensors older than the timeout; returns how many went."""
        cutoff = self._clock() - self.timeout_s
        stale = [k for k, p in self._pending.items() if p.started < cutoff]
        for k in stale:
            self._drop(k)
        self.expired += len(stale)
        return len(stale)

    def feed(self, chunk: TensorChunk, source: bytes = b"") -> WireTensor | None:
        """Add one chunk (from peer `source`); returns the tensor once it is complete."""
        self.expire()
        if chunk.chunk_count == 1:
            return self._finish(chunk, {0: chunk.payload})
        key = (source, *chunk.key)
        part = self._pending.get(key)
        if part is None:
            if len(self._pending) >= self.max_streams:
                raise ProtocolError(f"too many unfinished tensors (limit {self.max_streams})")
            part = _Partial(chunk, {}, 0, self._clock())
            self._pending[key] = part
        first = part.first
        if (first.dtype, first.shape, first.chunk_count) != (chunk.dtype, chunk.shape,
                                                               chunk.chunk_count):
            self._drop(key)
            raise ProtocolError(f"chunk {chunk.chunk_index} disagrees with the tensor's header")
        seen = part.parts.get(chunk.chunk_index)
        if seen is not None:
            if seen != chunk.payload:
                self._drop(key)
                raise ProtocolError(f"chunk {chunk.chunk_index} arrived twice with other bytes")
            return None  # a harmless duplicate
        if part.size + len(chunk.payload) > first.nbytes:
            self._drop(key)
            raise ProtocolError(f"chunks exceed the tensor's {first.nbytes} bytes")
        if self._pending_bytes + len(chunk.payload) > self.max_pending_bytes:
            self._drop(key)
            raise ProtocolError(
                f"reassembly buffer full (limit {self.max_pending_bytes} bytes); tensor dropped"
            )
        part.parts[chunk.chunk_index] = chunk.payload
        part.size += len(chunk.payload)
        self._pending_bytes += len(chunk.payload)
        if len(part.parts) < first.chunk_count:
            return None
        self._drop(key)
        return self._finish(first, part.parts)

    @staticmethod
    def _finish(first: TensorChunk, parts: dict[int, bytes]) -> WireTensor:
        data = b"".join(parts[i] for i in range(first.chunk_count))
        if len(data) != first.nbytes:
            raise ProtocolError(
                f"tensor has {len(data)} bytes, its header says {first.nbytes}"
            )
        return WireTensor(first.stream_id, first.sequence, first.layer, first.tag, first.dtype,
                          first.shape, data)
