"""Parse a GGUF (v2/v3) header from a byte buffer: scalar metadata, big-array spans, tensor layout.

The parser reads nothing it has not bounds-checked: every length and count from the file is
compared with the bytes left before anything is allocated from it, so a damaged or hostile
file fails with one `GGUFFormatError` instead of a crash, a hang or a huge allocation.
Big metadata arrays (the tokenizer's tokens and merges) are only located here; they are
decoded to a plain Python list when `decode_array` is asked, and not kept.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from hive_core.model.errors import GGUFFormatError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # ggml tensors have at most four dimensions
# Arrays this long or longer stay in the file until asked for, whatever their key.
LAZY_MIN_COUNT = 1024
# The tokenizer's arrays are always lazy: only the tokenizer reads them, once.
LAZY_KEYS = frozenset({"tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                       "tokenizer.ggml.token_type", "tokenizer.ggml.scores"})


class ValueType(IntEnum):
    """Type tag of one metadata value, as numbered by the GGUF specification."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMATS = {
    ValueType.UINT8: "B", ValueType.INT8: "b", ValueType.UINT16: "H", ValueType.INT16: "h",
    ValueType.UINT32: "I", ValueType.INT32: "i", ValueType.FLOAT32: "f", ValueType.BOOL: "?",
    ValueType.UINT64: "Q", ValueType.INT64: "q", ValueType.FLOAT64: "d",
}
_SCALARS = {t: struct.Struct("<" + f) for t, f in _SCALAR_FORMATS.items()}
_U32, _U64 = _SCALARS[ValueType.UINT32], _SCALARS[ValueType.UINT64]
# Bools are read as bytes and compared with zero, as C does.
_ARRAY_DTYPES = {t: np.dtype("<" + ("B" if f == "?" else f)) for t, f in _SCALAR_FORMATS.items()}
_STRING_MIN = _U64.size  # an empty string is its length alone
_KV_MIN = _U64.size + _U32.size + 1  # empty key, type tag, one-byte value
_TENSOR_INFO_MIN = _U64.size + _U32.size + _U64.size + _U32.size + _U64.size  # one dimension

# Element types ggml stores unblocked; the others are exposed as their raw uint8 blocks.
_PLAIN_DTYPES: dict[GGMLQuantizationType, np.dtype[Any]] = {
    GGMLQuantizationType.F16: np.dtype(np.float16), GGMLQuantizationType.F32: np.dtype(np.float32),
    GGMLQuantizationType.F64: np.dtype(np.float64), GGMLQuantizationType.I8: np.dtype(np.int8),
    GGMLQuantizationType.I16: np.dtype(np.int16), GGMLQuantizationType.I32: np.dtype(np.int32),
    GGMLQuantizationType.I64: np.dtype(np.int64),
}


@dataclass(frozen=True, slots=True)
class ArraySpan:
    """Where one metadata array lies in the file, checked to fit, decoded only on demand."""

    item_type: ValueType
    count: int
    start: int  # file offset of the first element
    end: int  # file offset just past the last element


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One tensor's type, shape and bytes in the file, checked to lie inside it."""

    name: str
    ggml_type: GGMLQuantizationType
    dims: tuple[int, ...]  # GGUF order: the fastest-varying dimension first
    offset: int  # absolute file offset of the first byte
    n_bytes: int

    @property
    def n_elements(self) -> int:
        return _product(self.dims)

    def layout(self) -> tuple[np.dtype[Any], tuple[int, ...]]:
        """numpy dtype and shape of the stored data: the values for unblocked types, else
        one row of uint8 blocks per tensor row (as `gguf.GGUFReader` and `gguf.dequantize`)."""
        shape = tuple(reversed(self.dims))
        dtype = _PLAIN_DTYPES.get(self.ggml_type)
        if dtype is not None:
            return dtype, shape
        block, type_size = GGML_QUANT_SIZES[self.ggml_type]
        return np.dtype(np.uint8), (*shape[:-1], shape[-1] // block * type_size)


@dataclass(frozen=True, slots=True)
class GGUFHeader:
    """Everything before the tensor data: metadata, lazy array spans and tensor infos."""

    version: int
    alignment: int
    data_offset: int  # file offset of the data section; tensor offsets are relative to it
    metadata: dict[str, Any]  # decoded values, as `gguf.ReaderField.contents()` gives them
    arrays: dict[str, ArraySpan]  # big arrays left in the file, by key
    tensors: dict[str, TensorInfo]  # in file order


class _Cursor:
    """A read position in the buffer; every read checks the bytes are there first."""

    __slots__ = ("buf", "pos", "size")

    def __init__(self, buf: memoryview, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.size = len(buf)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise _Truncated(
                f"{what} at byte {self.pos} needs {n} bytes,"
                f" {self.size - self.pos} left")

    def scalar(self, fmt: struct.Struct, what: str) -> Any:
        self.need(fmt.size, what)
        value = fmt.unpack_from(self.buf, self.pos)[0]
        self.pos += fmt.size
        return value

    def u32(self, what: str) -> int:
        return int(self.scalar(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.scalar(_U64, what))

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        text = _utf8(self.buf[self.pos:self.pos + n], what, self.pos)
        self.pos += n
        return text


class _Truncated(GGUFFormatError):
    """A read that would run past the end of the buffer."""


def parse_header(buf: memoryview, source: str = "GGUF data") -> GGUFHeader:
    """Parse and check a whole GGUF header; `buf` is the entire file, `source` names it in
    errors ("<source> is truncated: ..." or "<source> is malformed: ...")."""
    try:
        return _parse_header(buf)
    except GGUFFormatError as exc:
        raise _named(exc, source) from None


def decode_array(buf: memoryview, span: ArraySpan, key: str,
                 source: str = "GGUF data") -> list[Any]:
    """One array's values as a Python list (strings decoded once, numbers as Python numbers)."""
    try:
        return _decode_array(buf, span, key)
    except GGUFFormatError as exc:
        raise _named(exc, source) from None


def _named(exc: GGUFFormatError, source: str) -> GGUFFormatError:
    state = "truncated" if isinstance(exc, _Truncated) else "malformed"
    return GGUFFormatError(f"{source} is {state}: {_one_line(str(exc))}")


def _one_line(text: str, limit: int = 300) -> str:
    """A message that quotes file bytes (a damaged key or name) as one printable line."""
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else "?"
                   for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_header(buf: memoryview) -> GGUFHeader:
    cur = _Cursor(buf)
    cur.need(len(MAGIC), "magic")
    magic = bytes(buf[:len(MAGIC)])
    if magic != MAGIC:
        raise GGUFFormatError(f"bad magic {magic!r}, not a GGUF file")
    cur.pos = len(MAGIC)
    version = cur.u32("version")
    if int.from_bytes(version.to_bytes(4, "little"), "big") in VERSIONS:
        raise GGUFFormatError("big-endian GGUF files are not supported")
    if version not in VERSIONS:
        raise GGUFFormatError(
            f"unsupported GGUF version {version} (only {' and '.join(map(str, VERSIONS))}"
            " little-endian files are read)")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    _check_count(cur, n_kv, _KV_MIN, "metadata entries")
    metadata: dict[str, Any] = {
        "GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
    arrays: dict[str, ArraySpan] = {}
    for _ in range(n_kv):
        key = cur.string("metadata key")
        if key in metadata or key in arrays:
            raise GGUFFormatError(f"duplicate metadata key {key!r}")
        vtype = _value_type(cur.u32(f"type of {key}"), key)
        if key == "general.alignment" and vtype is not ValueType.UINT32:
            raise GGUFFormatError(f"general.alignment is {vtype.name}, not UINT32")
        if vtype is ValueType.ARRAY:
            span = _array_span(cur, key)
            if key in LAZY_KEYS or span.count >= LAZY_MIN_COUNT:
                arrays[key] = span
            else:
                metadata[key] = _decode_array(buf, span, key)
        else:
            metadata[key] = _scalar(cur, vtype, key)
    alignment = _alignment(metadata)
    _check_count(cur, n_tensors, _TENSOR_INFO_MIN, "tensor infos")
    infos = [_tensor_info(cur) for _ in range(n_tensors)]
    data_offset = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, dims, ggml_type, rel in infos:
        if name in tensors:
            raise GGUFFormatError(f"duplicate tensor name {name!r}")
        tensors[name] = _place_tensor(name, dims, ggml_type, rel, data_offset, alignment, len(buf))
    return GGUFHeader(version, alignment, data_offset, metadata, arrays, tensors)


def _decode_array(buf: memoryview, span: ArraySpan, key: str) -> list[Any]:
    if span.item_type is ValueType.STRING:
        out: list[Any] = [""] * span.count
        pos, unpack = span.start, _U64.unpack_from
        for i in range(span.count):  # lengths were bounds-checked by `_array_span`
            n = unpack(buf, pos)[0]
            out[i] = _utf8(buf[pos + 8:pos + 8 + n], f"{key}[{i}]", pos + 8)
            pos += 8 + n
        return out
    values = np.frombuffer(buf, _ARRAY_DTYPES[span.item_type], span.count, span.start)
    if span.item_type is ValueType.BOOL:
        values = values != 0
    out = values.tolist()
    return out


def _array_span(cur: _Cursor, key: str) -> ArraySpan:
    """Read an array's header and step over its elements, checking each one fits."""
    item_type = _value_type(cur.u32(f"element type of {key}"), key)
    if item_type is ValueType.ARRAY:
        raise GGUFFormatError(f"metadata {key} is an array of arrays, which GGUF readers refuse")
    count = cur.u64(f"length of {key}")
    fmt = _SCALARS.get(item_type)
    _check_count(cur, count, fmt.size if fmt is not None else _STRING_MIN, f"elements of {key}")
    start = cur.pos
    if fmt is not None:
        cur.pos += count * fmt.size
    else:
        buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
        for i in range(count):
            if pos + 8 > size:
                raise _Truncated(
                    f"length of {key}[{i}] at byte {pos} is past the end")
            pos += 8 + unpack(buf, pos)[0]
            if pos > size:
                raise _Truncated(
                    f"{key}[{i}] ends at byte {pos}, past the end ({size})")
        cur.pos = pos
    return ArraySpan(item_type, count, start, cur.pos)


def _scalar(cur: _Cursor, vtype: ValueType, key: str) -> Any:
    if vtype is ValueType.STRING:
        return cur.string(key)
    return cur.scalar(_SCALARS[vtype], key)


def _tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = cur.string("tensor name")
    n_dims = cur.u32(f"dimension count of tensor {name}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFFormatError(f"tensor {name} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
    dims = tuple(cur.u64(f"shape of tensor {name}") for _ in range(n_dims))
    raw_type = cur.u32(f"type of tensor {name}")
    try:
        ggml_type = GGMLQuantizationType(raw_type)
    except ValueError:
        raise GGUFFormatError(f"tensor {name} has unknown ggml type {raw_type}") from None
    return name, dims, ggml_type, cur.u64(f"offset of tensor {name}")


def _place_tensor(name: str, dims: tuple[int, ...], ggml_type: GGMLQuantizationType, rel: int,
                  data_offset: int, alignment: int, file_size: int) -> TensorInfo:
    """Check one tensor's rows are whole blocks and its bytes are aligned and inside the file."""
    block, type_size = GGML_QUANT_SIZES[ggml_type]
    if dims[0] % block:
        raise GGUFFormatError(
            f"tensor {name}: rows of {dims[0]} values are not whole {ggml_type.name} blocks"
            f" of {block}")
    if rel % alignment:
        raise GGUFFormatError(
            f"tensor {name}: offset {rel} is not a multiple of the alignment {alignment}")
    n_bytes = _product(dims) // block * type_size
    start = data_offset + rel
    if start + n_bytes > file_size:
        raise _Truncated(
            f"tensor {name} needs bytes {start}..{start + n_bytes},"
            f" the file has {file_size}")
    return TensorInfo(name, ggml_type, dims, start, n_bytes)


def _alignment(metadata: dict[str, Any]) -> int:
    value = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))  # a UINT32, checked
    if value == 0 or value & (value - 1):
        raise GGUFFormatError(f"general.alignment {value!r} is not a power of two")
    return value


def _check_count(cur: _Cursor, count: int, min_size: int, what: str) -> None:
    """Refuse a count whose smallest possible encoding is longer than the rest of the file."""
    if count * min_size > cur.size - cur.pos:
        raise _Truncated(
            f"{count} {what} at byte {cur.pos} cannot fit in the {cur.size - cur.pos}"
            " bytes left")


def _value_type(raw: int, key: str) -> ValueType:
    try:
        return ValueType(raw)
    except ValueError:
        raise GGUFFormatError(f"metadata {key} has unknown value type {raw}") from None


def _utf8(raw: memoryview, what: str, pos: int) -> str:
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise GGUFFormatError(f"{what} at byte {pos} is not UTF-8: {exc.reason}") from None


def _product(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n
