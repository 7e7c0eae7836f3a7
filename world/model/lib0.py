"""lib0 binary encoding as Yjs uses it: var-uints, var-byte-arrays, state vectors."""

from __future__ import annotations

from .errors import ProtocolError

MAX_VAR_UINT = 2**53 - 1  # JavaScript numbers: Yjs never writes more


def write_var_uint(num: int) -> bytes:
    """Little-endian base-128, 7 bits a byte, high bit = more bytes follow."""
    if not 0 <= num <= MAX_VAR_UINT:
        raise ProtocolError(f"var-uint out of range: {num}")
    out = bytearray()
    while num > 0x7F:
        out.append(0x80 | (num & 0x7F))
        num >>= 7
    out.append(num)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + bytes(data)


def write_var_string(text: str) -> bytes:
    return write_var_bytes(text.encode("utf-8"))


class Reader:
    """A bounds-checked cursor over a message; every read raises ProtocolError on overrun."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("message truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def var_uint(self) -> int:
        num = shift = 0
        while True:
            b = self.byte()
            num |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 56:
                raise ProtocolError("var-uint too long")
        if num > MAX_VAR_UINT:
            raise ProtocolError("var-uint out of range")
        return num

    def raw(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ProtocolError(f"message truncated: needs {n} bytes at {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def var_bytes(self) -> bytes:
        return self.raw(self.var_uint())

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("string is not UTF-8") from None

    def end(self) -> None:
        if not self.done():
            raise ProtocolError(f"{len(self.data) - self.pos} trailing bytes")


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Yjs state vector: count, then (client id, clock) pairs.

    Inlined (no Reader calls): sync rounds decode one of these per message.
    """
    buf = bytes(data)
    n = len(buf)
    pos = 0
    values: list[int] = []
    while pos < n:
        num = shift = 0
        while True:
            if pos >= n:
                raise ProtocolError("state vector truncated")
            b = buf[pos]
            pos += 1
            num |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 56:
                raise ProtocolError("var-uint too long")
        values.append(num)
    if not values or len(values) != 1 + 2 * values[0]:
        raise ProtocolError("malformed state vector")
    return dict(zip(values[1::2], values[2::2], strict=True))


def encode_state_vector(sv: dict[int, int]) -> bytes:
    parts = [write_var_uint(len(sv))]
    for client, clock in sorted(sv.items(), reverse=True):
        parts.append(write_var_uint(client) + write_var_uint(clock))
    return b"".join(parts)
