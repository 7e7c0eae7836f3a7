"""Field specs: how one dataclass field is written to and read from the wire."""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hive_core.base.errors import ProtocolError

T = TypeVar("T")


class Writer:
    """Appends encoded fields to a growing buffer."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def put(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    """Consumes a buffer front to back; every short read is a ProtocolError."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if end > len(self.view):
            raise ProtocolError(
                f"truncated frame: need {n} bytes at offset {self.pos}, "
                f"{len(self.view) - self.pos} left"
            )
        chunk = self.view[self.pos : end]
        self.pos = end
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.view) - self.pos


class Field(Generic[T]):
    """Base of all field specs: `write` validates and encodes, `read` decodes and validates."""

    def write(self, w: Writer, value: T, name: str) -> None:
        raise NotImplementedError

    def read(self, r: Reader, name: str) -> T:
        raise NotImplementedError


_INT_FORMATS = {(1, False): "<B", (2, False): "<H", (4, False): "<I", (8, False): "<Q",
                (1, True): "<b", (2, True): "<h", (4, True): "<i", (8, True): "<q"}


@dataclass(frozen=True)
class UInt(Field[int]):
    """Unsigned little-endian integer of `width` bytes (1, 2, 4 or 8)."""

    width: int
    signed: bool = False

    def __post_init__(self) -> None:
        if (self.width, self.signed) not in _INT_FORMATS:
            raise TypeError(f"unsupported integer width {self.width}")

    @property
    def bounds(self) -> tuple[int, int]:
        bits = 8 * self.width
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    def write(self, w: Writer, value: int, name: str) -> None:
        lo, hi = self.bounds
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ProtocolError(f"field {name!r}: {value!r} is not an integer in [{lo}, {hi}]")
        w.put(struct.pack(_INT_FORMATS[(self.width, self.signed)], value))

    def read(self, r: Reader, name: str) -> int:
        fmt = _INT_FORMATS[(self.width, self.signed)]
        return int(struct.unpack(fmt, r.take(self.width))[0])


def Int(width: int) -> UInt:
    """Signed little-endian integer of `width` bytes."""
    return UInt(width, signed=True)


@dataclass(frozen=True)
class Float(Field[float]):
    """IEEE-754 little-endian float, 4 or 8 bytes; NaN and infinities refused."""

    width: int = 8

    def write(self, w: Writer, value: float, name: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"field {name!r}: {value!r} is not a number")
        if not math.isfinite(value):
            raise ProtocolError(f"field {name!r}: {value!r} is not finite")
        try:
            w.put(struct.pack("<f" if self.width == 4 else "<d", value))
        except OverflowError as exc:
            raise ProtocolError(f"field {name!r}: {value!r} overflows float{8 * self.width}") from exc

    def read(self, r: Reader, name: str) -> float:
        value = float(struct.unpack("<f" if self.width == 4 else "<d", r.take(self.width))[0])
        if not math.isfinite(value):
            raise ProtocolError(f"field {name!r}: non-finite float")
        return value


@dataclass(frozen=True)
class Bool(Field[bool]):
    """One byte, 0 or 1; anything else is malformed."""

    def write(self, w: Writer, value: bool, name: str) -> None:
        if not isinstance(value, bool):
            raise ProtocolError(f"field {name!r}: {value!r} is not a bool")
        w.put(b"\x01" if value else b"\x00")

    def read(self, r: Reader, name: str) -> bool:
        b = r.take(1)[0]
        if b > 1:
            raise ProtocolError(f"field {name!r}: bool byte must be 0 or 1, got {b}")
        return b == 1


@dataclass(frozen=True)
class Blob(Field[bytes]):
    """Bytes with a u32 length prefix, at most `max_len` long (exactly `fixed` if given)."""

    max_len: int
    fixed: bool = False

    def _check_len(self, n: int, name: str) -> None:
        if self.fixed and n != self.max_len:
            raise ProtocolError(f"field {name!r}: must be {self.max_len} bytes, got {n}")
        if n > self.max_len:
            raise ProtocolError(f"field {name!r}: {n} bytes exceeds the limit of {self.max_len}")

    def write(self, w: Writer, value: bytes, name: str) -> None:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ProtocolError(f"field {name!r}: {type(value).__name__} is not bytes")
        value = bytes(value)
        self._check_len(len(value), name)
        if not self.fixed:
            w.put(struct.pack("<I", len(value)))
        w.put(value)

    def read(self, r: Reader, name: str) -> bytes:
        n = self.max_len if self.fixed else struct.unpack("<I", r.take(4))[0]
        self._check_len(n, name)
        return bytes(r.take(n))


def Fixed(n: int) -> Blob:
    """Exactly `n` raw bytes, no length prefix (keys, ids, signatures)."""
    return Blob(n, fixed=True)


@dataclass(frozen=True)
class Text(Field[str]):
    """UTF-8 text with a u32 byte-length prefix, at most `max_bytes` encoded."""

    max_bytes: int

    def write(self, w: Writer, value: str, name: str) -> None:
        if not isinstance(value, str):
            raise ProtocolError(f"field {name!r}: {type(value).__name__} is not str")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError(f"field {name!r}: not encodable as UTF-8") from exc
        if len(raw) > self.max_bytes:
            raise ProtocolError(
                f"field {name!r}: {len(raw)} bytes exceeds the limit of {self.max_bytes}"
            )
        w.put(struct.pack("<I", len(raw)))
        w.put(raw)

    def read(self, r: Reader, name: str) -> str:
        n = struct.unpack("<I", r.take(4))[0]
        if n > self.max_bytes:
            raise ProtocolError(f"field {name!r}: {n} bytes exceeds the limit of {self.max_bytes}")
        try:
            return str(r.take(n), "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"field {name!r}: invalid UTF-8") from exc


E = TypeVar("E", bound=enum.IntEnum)


@dataclass(frozen=True)
class EnumOf(Field[E]):
    """An IntEnum member stored as an unsigned integer; unknown values are malformed."""

    enum_type: type[E]
    width: int = 1

    def write(self, w: Writer, value: E, name: str) -> None:
        if not isinstance(value, self.enum_type):
            raise ProtocolError(f"field {name!r}: {value!r} is not a {self.enum_type.__name__}")
        UInt(self.width).write(w, int(value), name)

    def read(self, r: Reader, name: str) -> E:
        raw = UInt(self.width).read(r, name)
        try:
            return self.enum_type(raw)
        except ValueError as exc:
            raise ProtocolError(f"field {name!r}: unknown {self.enum_type.__name__} {raw}") from exc


@dataclass(frozen=True)
class ListOf(Field[tuple[Any, ...]]):
    """A tuple of items of one spec with a u16 count prefix, at most `max_count` items."""

    item: Field[Any]
    max_count: int

    def write(self, w: Writer, value: tuple[Any, ...], name: str) -> None:
        if not isinstance(value, (tuple, list)):
            raise ProtocolError(f"field {name!r}: {type(value).__name__} is not a tuple")
        if len(value) > self.max_count:
            raise ProtocolError(
                f"field {name!r}: {len(value)} items exceeds the limit of {self.max_count}"
            )
        w.put(struct.pack("<H", len(value)))
        for i, item in enumerate(value):
            self.item.write(w, item, f"{name}[{i}]")

    def read(self, r: Reader, name: str) -> tuple[Any, ...]:
        n = struct.unpack("<H", r.take(2))[0]
        if n > self.max_count:
            raise ProtocolError(f"field {name!r}: {n} items exceeds the limit of {self.max_count}")
        return tuple(self.item.read(r, f"{name}[{i}]") for i in range(n))


@dataclass(frozen=True)
class Maybe(Field[Any]):
    """An optional value: a presence byte, then the value when present."""

    inner: Field[Any]

    def write(self, w: Writer, value: Any, name: str) -> None:
        if value is None:
            w.put(b"\x00")
        else:
            w.put(b"\x01")
            self.inner.write(w, value, name)

    def read(self, r: Reader, name: str) -> Any:
        flag = r.take(1)[0]
        if flag > 1:
            raise ProtocolError(f"field {name!r}: presence byte must be 0 or 1, got {flag}")
        return self.inner.read(r, name) if flag else None
