"""The binary codec: wire structs and messages declared as annotated frozen dataclasses.

A frame is ``version (u8) | message tag (u8) | body``; the body is each field in
declaration order, written by the field spec found in its ``Annotated[...]`` hint.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from hive_core.base.errors import ProtocolError
from hive_core.base.fields import Field, Reader, Writer
from hive_core.base.hoptiming import timed

PROTOCOL_VERSION = 1
# aiortc advertises and accepts 256 KiB messages; a whole frame must fit in one message.
MAX_FRAME_BYTES = 256 * 1024

C = TypeVar("C")

_MESSAGES: dict[int, type[Any]] = {}


def _field_specs(cls: type[Any]) -> tuple[tuple[str, Field[Any]], ...]:
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} must be a frozen dataclass")
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        found = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Field)]
        if len(found) != 1:
            raise TypeError(f"{cls.__name__}.{f.name} needs exactly one Field spec in Annotated[]")
        specs.append((f.name, found[0]))
    return tuple(specs)


def wire_struct(cls: type[C]) -> type[C]:
    """Class decorator: make a frozen dataclass usable as a nested field (see `Nested`)."""
    cls.__wire_fields__ = _field_specs(cls)  # type: ignore[attr-defined]
    return cls


def message(tag: int) -> typing.Callable[[type[C]], type[C]]:
    """Class decorator: register a frozen dataclass as the message for `tag` (1..255).

    A tag may be registered once; re-registering the same class is a no-op, so modules
    can be imported twice (importlib test mode) without error.
    """

    def register(cls: type[C]) -> type[C]:
        value = int(tag)
        if not 1 <= value <= 255:
            raise ValueError(f"message tag must be in 1..255, got {value}")
        previous = _MESSAGES.get(value)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(f"message tag {value:#04x} already used by {previous.__qualname__}")
        wire_struct(cls)
        cls.__wire_tag__ = tag  # type: ignore[attr-defined]
        _MESSAGES[value] = cls
        return cls

    return register


def registered_messages() -> dict[int, type[Any]]:
    """A copy of the tag -> message class table (for tests and tooling)."""
    return dict(_MESSAGES)


def write_struct(w: Writer, obj: Any) -> None:
    for name, spec in type(obj).__wire_fields__:
        spec.write(w, getattr(obj, name), name)


def read_struct(r: Reader, cls: type[C]) -> C:
    values = {name: spec.read(r, name) for name, spec in cls.__wire_fields__}  # type: ignore[attr-defined]
    try:
        return cls(**values)
    except ProtocolError:
        raise
    except (ValueError, TypeError) as exc:  # a __post_init__ check failed
        raise ProtocolError(f"invalid {cls.__name__}: {exc}") from exc


@dataclasses.dataclass(frozen=True)
class Nested(Field[Any]):
    """A field holding another `wire_struct` dataclass, written inline."""

    cls: type[Any]

    def __post_init__(self) -> None:
        if not hasattr(self.cls, "__wire_fields__"):
            raise TypeError(f"{self.cls.__name__} is not a @wire_struct")

    def write(self, w: Writer, value: Any, name: str) -> None:
        if type(value) is not self.cls:
            raise ProtocolError(f"field {name!r}: {type(value).__name__} is not {self.cls.__name__}")
        write_struct(w, value)

    def read(self, r: Reader, name: str) -> Any:
        return read_struct(r, self.cls)


def encode_struct(obj: Any) -> bytes:
    """Body bytes of a wire struct without a frame header (signed payloads, DHT values)."""
    if not hasattr(type(obj), "__wire_fields__"):
        raise ProtocolError(f"{type(obj).__name__} is not a wire struct")
    w = Writer()
    write_struct(w, obj)
    return w.getvalue()


def decode_struct(data: bytes, cls: type[C], max_bytes: int = MAX_FRAME_BYTES) -> C:
    """Inverse of `encode_struct`; the whole of `data` must be consumed."""
    if len(data) > max_bytes:
        raise ProtocolError(f"{cls.__name__}: {len(data)} bytes exceeds the limit of {max_bytes}")
    r = Reader(data)
    obj = read_struct(r, cls)
    if r.remaining:
        raise ProtocolError(f"{cls.__name__}: {r.remaining} trailing bytes")
    return obj


@timed("framing")
def encode(msg: Any) -> bytes:
    """One frame for `msg`; raises ProtocolError if a field is out of range or it is too big."""
    tag = getattr(type(msg), "__wire_tag__", None)
    if tag is None or _MESSAGES.get(int(tag)) is not type(msg):
        raise ProtocolError(f"{type(msg).__name__} is not a registered message")
    w = Writer()
    w.put(bytes((PROTOCOL_VERSION, int(tag))))
    write_struct(w, msg)
    if w.size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {w.size} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    return w.getvalue()


@timed("framing")
def decode(data: bytes | bytearray | memoryview) -> Any:
    """The message in one frame; raises ProtocolError (and nothing else) if it is malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"frame must be bytes, got {type(data).__name__}")
    if len(data) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {MAX_FRAME_BYTES}")
    if len(data) < 2:
        raise ProtocolError(f"frame of {len(data)} bytes is shorter than its 2-byte header")
    version, tag = data[0], data[1]
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {version} (expected {PROTOCOL_VERSION})")
    cls = _MESSAGES.get(tag)
    if cls is None:
        raise ProtocolError(f"unknown message type {tag:#04x}")
    r = Reader(data if isinstance(data, bytes) else bytes(data))
    r.pos = 2
    msg = read_struct(r, cls)
    if r.remaining:
        raise ProtocolError(f"{cls.__name__}: {r.remaining} trailing bytes")
    return msg
