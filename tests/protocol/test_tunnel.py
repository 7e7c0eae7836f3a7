"""Tunnel messages: golden bytes, exact round trips, and the limits decode enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive_core.base.codec import MAX_FRAME_BYTES
from hive_core.protocol import REQUESTS, ProtocolError, decode, encode, registered_messages
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tunnel import (
    MAX_SEALED,
    TunnelClose,
    TunnelFrame,
    TunnelMsgType,
    TunnelOpen,
    TunnelOpened,
)

GOLDEN = Path(__file__).parent / "golden"
OPEN = TunnelOpen(0x0102030405060708, bytes(range(16)), bytes(range(20, 40)),
                  bytes(range(40, 72)), bytes(range(100, 116)))


def test_tunnel_open_matches_its_golden_file() -> None:
    golden = (GOLDEN / "tunnel_open.bin").read_bytes()
    assert encode(OPEN) == golden
    assert decode(golden) == OPEN
    assert golden[:2] == bytes([1, TunnelMsgType.TUNNEL_OPEN])


def test_tunnel_messages_round_trip_in_the_mesh_runtime_range() -> None:
    assert all(0x34 <= t <= 0x3F for t in TunnelMsgType)
    assert TunnelOpen in REQUESTS  # a node without the service says so at once
    for msg in (OPEN, TunnelOpened(9, ErrorCode.OK, "", bytes(range(32))),
                TunnelOpened(9, ErrorCode.NOT_FOUND, "no link to 0011", bytes(32)),
                TunnelFrame(bytes(16), b"\x00" * MAX_SEALED), TunnelClose(bytes(16), "bye")):
        assert registered_messages()[type(msg).__wire_tag__] is type(msg)
        frame = encode(msg)
        assert len(frame) <= MAX_FRAME_BYTES
        assert decode(frame) == msg


def test_tunnel_limits_are_enforced() -> None:
    with pytest.raises(ProtocolError, match="opener's public key"):
        TunnelOpen(1, bytes(16), bytes(20), bytes(32), bytes(16))
    with pytest.raises(ProtocolError):
        encode(TunnelFrame(bytes(16), b"\x00" * (MAX_SEALED + 1)))
    frame = bytearray(encode(OPEN))
    frame[2 + 8 + 16 + 20:2 + 8 + 16 + 20 + 32] = bytes(32)  # the opener key zeroed on the wire
    with pytest.raises(ProtocolError, match="opener's public key"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError):
        decode(encode(OPEN)[:-1])
