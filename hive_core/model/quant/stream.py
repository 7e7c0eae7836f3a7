"""Write a GGUF file tensor by tensor and chunk by chunk, never holding it in memory.

The header, metadata and tensor infos need only each tensor's name, type and shape; the
data then goes to the file in the caller's chunks, each tensor padded to the alignment as the
infos' offsets expect. We encode the header ourselves rather than with `gguf.GGUFWriter`,
which packs metadata arrays value by value in Python (two seconds for a 128k-token
vocabulary). A second thread does the writing, so making the next chunk overlaps the write of
the last. The file is written under a temporary name and renamed when complete, so a failed
run never leaves a file that looks whole.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from hive_core.model.quant.formats import QuantizeError

VERSION = 3
ALIGNMENT = 32  # GGUF's default; tensor offsets and the data section are multiples of it
ALIGNMENT_KEY = "general.alignment"  # a file may choose another power of two
MAX_PENDING = 3  # chunks queued for the writer thread: bounds the memory held

_SCALAR = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One metadata key/value with its GGUF type (and element type for an array)."""

    key: str
    value: Any
    vtype: GGUFValueType
    item_type: GGUFValueType | None = None


def u32(key: str, value: int) -> Entry:
    return Entry(key, value, GGUFValueType.UINT32)


def f32(key: str, value: float) -> Entry:
    return Entry(key, value, GGUFValueType.FLOAT32)


def text(key: str, value: str) -> Entry:
    return Entry(key, value, GGUFValueType.STRING)


def array(key: str, values: Sequence[Any], item_type: GGUFValueType) -> Entry:
    return Entry(key, values, GGUFValueType.ARRAY, item_type)


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any, vtype: GGUFValueType, item_type: GGUFValueType | None) -> bytes:
    if vtype is GGUFValueType.STRING:
        return _string(value)
    if vtype is GGUFValueType.ARRAY:
        if item_type is None or item_type is GGUFValueType.ARRAY:
            raise QuantizeError("a metadata array needs a scalar or string element type")
        head = struct.pack("<IQ", item_type, len(value))
        if item_type is GGUFValueType.STRING:
            return head + b"".join(map(_string, value))
        return head + np.asarray(value, dtype="<" + _SCALAR[item_type]).tobytes()
    return struct.pack("<" + _SCALAR[vtype], value)


def alignment(entries: Sequence[Entry]) -> int:
    """The data alignment the entries declare (``general.alignment``), else GGUF's default."""
    for e in entries:
        if e.key == ALIGNMENT_KEY:
            value = e.value
            if e.vtype is not GGUFValueType.UINT32 or value <= 0 or value & (value - 1):
                raise QuantizeError(f"{ALIGNMENT_KEY} must be a UINT32 power of two, got {value!r}")
            return int(value)
    return ALIGNMENT


def encode_header(entries: Sequence[Entry], tensors: Sequence[TensorPlan]) -> bytes:
    """Magic, version, counts, metadata and tensor infos, padded to where the data starts."""
    align = alignment(entries)
    parts = [b"GGUF", struct.pack("<IQQ", VERSION, len(tensors), len(entries))]
    for e in entries:
        parts += [_string(e.key), struct.pack("<I", e.vtype), _value(e.value, e.vtype, e.item_type)]
    offset = 0
    for t in tensors:
        dims = tuple(reversed(t.shape))  # GGUF lists the fastest-varying dimension first
        parts += [_string(t.name), struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims,
                                               t.ggml_type, offset)]
        offset += _padded(t.nbytes, align)
    head = b"".join(parts)
    return head + bytes(_padded(len(head), align) - len(head))


def _padded(n: int, align: int) -> int:
    return -(-n // align) * align


@dataclass(frozen=True, slots=True)
class TensorPlan:
    """One tensor to write: name, shape (numpy order: rows first, row width last) and type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLQuantizationType

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.ggml_type]
        n = 1
        for d in self.shape:
            n *= d
        if self.shape[-1] % block:
            raise QuantizeError(f"tensor {self.name}: rows of {self.shape[-1]} values are not "
                                f"whole {self.ggml_type.name} blocks")
        return n // block * size


class GGUFStream:
    """``with GGUFStream(path, entries, tensors) as out:`` then ``out.write(plan, chunks)``
    for every tensor, in order. `entries` must start with ``general.architecture``."""

    def __init__(self, path: str | os.PathLike[str], entries: Sequence[Entry],
                 tensors: Sequence[TensorPlan]) -> None:
        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._tensors = list(tensors)
        self._header = encode_header(entries, self._tensors)
        self._align = alignment(entries)
        self._next = 0
        self._fout: Any = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gguf-write")
        self._pending: deque[Future[Any]] = deque()

    def __enter__(self) -> Self:
        self._fout = self._partial.open("wb")
        self._fout.write(self._header)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self._drain(0)
        finally:
            self._io.shutdown(wait=True)
            self._fout.close()
        if exc_type is None and self._next == len(self._tensors):
            os.replace(self._partial, self.path)
        else:
            self._partial.unlink(missing_ok=True)

    def write(self, plan: TensorPlan, chunks: Iterable[np.ndarray]) -> None:
        """Write `plan`'s bytes from `chunks` (arrays whose bytes follow one another); they
        must add up to exactly the tensor's size."""
        expected = self._tensors[self._next] if self._next < len(self._tensors) else None
        if expected is None or expected.name != plan.name:
            raise RuntimeError(f"tensor {plan.name} written out of order")
        written = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk)
            self._drain(MAX_PENDING - 1)
            self._pending.append(self._io.submit(self._fout.write, data.data.cast("B")))
            written += data.nbytes
        if written != plan.nbytes:
            raise QuantizeError(f"tensor {plan.name}: wrote {written} bytes, expected {plan.nbytes}")
        self._pending.append(self._io.submit(self._fout.write, bytes(_padded(written, self._align) - written)))
        self._next += 1

    def _drain(self, keep: int) -> None:
        """Wait until at most `keep` writes are queued, raising the first write's error."""
        while len(self._pending) > keep:
            self._pending.popleft().result()
