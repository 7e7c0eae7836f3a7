"""The mesh runtime's status messages: exact round trips and enforced limits."""

from __future__ import annotations

import time

import pytest

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.mesh.dht import RecordKind, make_record, node_key
from hive_core.protocol import (
    MAX_STATUS_RECORDS,
    MeshMsgType,
    ProtocolError,
    StatusReply,
    StatusRequest,
    decode,
    encode,
    registered_messages,
)

HEALTH = HealthRecord(tflops=1.5, battery_pct=40.0, on_ac=False, rtt_median_ms=3.25,
                      uptime_s=9.0, success_rate=0.5, free_ram_mb=512.0, temperature_c=None,
                      measured_at_ms=1)


def test_status_messages_use_the_mesh_runtime_range_and_round_trip() -> None:
    assert all(0x30 <= t <= 0x3F for t in MeshMsgType)
    assert registered_messages()[MeshMsgType.STATUS_REPLY] is StatusReply
    ident = Identity.from_seed(bytes(32))
    record = make_record(ident, node_key(ident.node_id, RecordKind.HEALTH), HEALTH, seq=3,
                         ttl_s=60, now_s=time.time())
    for msg in (StatusRequest(7), StatusReply(8, ()), StatusReply(9, (record,) * 20)):
        frame = encode(msg)
        assert frame[1] == type(msg).__wire_tag__
        assert decode(frame) == msg


def test_status_reply_limits_are_enforced_both_ways() -> None:
    ident = Identity.from_seed(bytes(32))
    record = make_record(ident, node_key(ident.node_id, RecordKind.HEALTH), HEALTH, seq=3,
                         ttl_s=60, now_s=time.time())
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        encode(StatusReply(1, (record,) * (MAX_STATUS_RECORDS + 1)))
    frame = bytearray(encode(StatusReply(1, (record,))))
    frame[10:12] = (MAX_STATUS_RECORDS + 1).to_bytes(2, "little")  # the list's count prefix
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError):
        decode(encode(StatusReply(1, (record,)))[:-1])
