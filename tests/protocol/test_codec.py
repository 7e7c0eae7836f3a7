"""The codec's exact bytes, limits and error messages."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated

import pytest

from hive_core.base.identity import Identity
from hive_core.protocol import (
    MAX_FRAME_BYTES,
    Contact,
    Error,
    ErrorCode,
    FindNode,
    Nodes,
    Ping,
    ProtocolError,
    Signal,
    SignalKind,
    Text,
    UInt,
    decode,
    encode,
    make_hello,
    message,
    registered_messages,
)
from hive_core.protocol.messages import MAX_CONTACTS

GOLDEN = Path(__file__).parent / "golden"


def test_ping_golden_bytes() -> None:
    frame = encode(Ping(rpc_id=0x0102030405060708, sent_at=1.5))
    assert frame.hex() == "0103" "0807060504030201" "000000000000f83f"
    assert decode(frame) == Ping(0x0102030405060708, 1.5)


def test_hello_matches_golden_file() -> None:
    ident = Identity.from_seed(bytes(range(32)))
    hello = make_hello(ident, listen="ws://127.0.0.1:9000", now_ms=1_700_000_000_000,
                       nonce=bytes(16))
    golden = (GOLDEN / "hello.bin").read_bytes()
    assert encode(hello) == golden
    assert decode(golden) == hello


def test_header_errors_have_exact_messages() -> None:
    with pytest.raises(ProtocolError, match=r"^frame of 1 bytes is shorter than its 2-byte header$"):
        decode(b"\x01")
    with pytest.raises(ProtocolError, match=r"^unsupported protocol version 9 \(expected 1\)$"):
        decode(b"\x09\x03")
    with pytest.raises(ProtocolError, match=r"^unknown message type 0xfe$"):
        decode(b"\x01\xfe")
    with pytest.raises(ProtocolError, match=r"^frame of 262145 bytes exceeds the limit of 262144$"):
        decode(bytes(MAX_FRAME_BYTES + 1))


def test_field_errors_have_exact_messages() -> None:
    frame = encode(Ping(1, 2.0))
    with pytest.raises(ProtocolError, match=r"^truncated frame: need 8 bytes at offset 10, 7 left$"):
        decode(frame[:-1])
    with pytest.raises(ProtocolError, match=r"^Ping: 1 trailing bytes$"):
        decode(frame + b"\x00")
    bad_enum = bytearray(encode(Error(1, ErrorCode.MALFORMED, "x")))
    bad_enum[10:12] = (999).to_bytes(2, "little")
    with pytest.raises(ProtocolError, match=r"^field 'code': unknown ErrorCode 999$"):
        decode(bytes(bad_enum))


def test_oversized_fields_are_refused_on_both_sides() -> None:
    contact = Contact(Identity.from_seed(bytes(32)).node_id, Identity.from_seed(bytes(32)).public_key, "")
    with pytest.raises(ProtocolError, match=r"^field 'contacts': 65 items exceeds the limit of 64$"):
        encode(Nodes(1, (contact,) * (MAX_CONTACTS + 1)))
    frame = bytearray(encode(Nodes(1, ())))
    frame[10:12] = (MAX_CONTACTS + 1).to_bytes(2, "little")
    with pytest.raises(ProtocolError, match=r"^field 'contacts': 65 items exceeds the limit of 64$"):
        decode(bytes(frame))
    # a length prefix far beyond the frame is refused before any allocation
    sig = encode(Signal(1, bytes(20), bytes(20), SignalKind.OFFER, "", bytes(32), 0, 0, 0, bytes(64)))
    bad = bytearray(sig)
    bad[2 + 8 + 40 + 1 : 2 + 8 + 40 + 5] = (2**31).to_bytes(4, "little")
    with pytest.raises(ProtocolError, match=r"^field 'sdp': 2147483648 bytes exceeds the limit of 65536$"):
        decode(bytes(bad))


def test_values_out_of_range_are_refused_at_encode() -> None:
    with pytest.raises(ProtocolError, match=r"^field 'rpc_id': -1 is not an integer"):
        encode(Ping(-1, 0.0))
    with pytest.raises(ProtocolError, match=r"^field 'sent_at': nan is not finite$"):
        encode(Ping(1, float("nan")))
    with pytest.raises(ProtocolError, match=r"^field 'target': must be 20 bytes, got 3$"):
        encode(FindNode(1, b"abc"))
    with pytest.raises(ProtocolError, match=r"is not a registered message$"):
        ident = Identity.from_seed(bytes(32))
        encode(Contact(ident.node_id, ident.public_key, ""))


def test_contact_whose_id_is_not_its_key_hash_is_refused() -> None:
    ident = Identity.from_seed(bytes(32))
    good = Contact(ident.node_id, ident.public_key, "sim:1")
    frame = bytearray(encode(Nodes(7, (good,))))
    frame[12] ^= 0xFF  # first byte of the node id
    with pytest.raises(ProtocolError, match=r"contact node id does not match its public key$"):
        decode(bytes(frame))


def test_invalid_utf8_is_refused() -> None:
    frame = bytearray(encode(Error(0, ErrorCode.INTERNAL, "ab")))
    frame[-1] = 0xFF
    with pytest.raises(ProtocolError, match=r"^field 'message': invalid UTF-8$"):
        decode(bytes(frame))


def test_later_modules_register_their_own_messages() -> None:
    class ExtType(IntEnum):
        PROBE = 0xE7

    @message(ExtType.PROBE)
    @dataclass(frozen=True)
    class Probe:
        rpc_id: Annotated[int, UInt(8)]
        note: Annotated[str, Text(16)]

    assert registered_messages()[0xE7] is Probe
    assert decode(encode(Probe(3, "hi"))) == Probe(3, "hi")
    with pytest.raises(ValueError, match=r"already used by"):

        @message(0x03)
        @dataclass(frozen=True)
        class Clash:
            x: Annotated[int, UInt(1)]

    with pytest.raises(TypeError, match=r"needs exactly one Field spec"):

        @message(0xE8)
        @dataclass(frozen=True)
        class Untyped:
            x: int
