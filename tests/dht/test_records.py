"""Signed records: forged, expired, misplaced and stale records are refused and logged."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.mesh.dht import (
    LayerSpanRecord,
    RecordError,
    RecordKind,
    RecordStore,
    Role,
    RolesRecord,
    decode_value,
    layer_key,
    make_record,
    node_key,
    verify_record,
)
from hive_core.protocol import SignedRecord, decode_struct, encode_struct

OWNER = Identity.from_seed(b"o" * 32)
MALLORY = Identity.from_seed(b"m" * 32)
NOW = 1_700_000_000.0

HEALTH = HealthRecord(tflops=0.4, battery_pct=None, on_ac=True, rtt_median_ms=12.5,
                      uptime_s=100.0, success_rate=0.99, free_ram_mb=2048.0,
                      temperature_c=None, measured_at_ms=int(NOW * 1000))


def health_record(seq: int = 1, ttl: float = 60.0, ident: Identity = OWNER) -> SignedRecord:
    return make_record(ident, node_key(ident.node_id, RecordKind.HEALTH), HEALTH,
                       seq=seq, ttl_s=ttl, now_s=NOW)


def test_valid_record_verifies_and_survives_the_codec() -> None:
    rec = decode_struct(encode_struct(health_record()), SignedRecord)
    assert verify_record(rec, NOW) == HEALTH
    roles = make_record(OWNER, node_key(OWNER.node_id, RecordKind.ROLES),
                        RolesRecord((Role.ALPHA, Role.BETA)), seq=1, ttl_s=60, now_s=NOW)
    assert decode_value(roles) == RolesRecord((Role.ALPHA, Role.BETA))


def test_forged_records_are_refused() -> None:
    rec = health_record()
    tampered = replace(rec, value=rec.value[:-1] + bytes([rec.value[-1] ^ 1]))
    with pytest.raises(RecordError, match=r"^forged record: signature does not verify$"):
        verify_record(tampered, NOW)
    # Mallory re-signs Owner's record under her key: signature fine, but wrong key slot
    stolen = make_record(MALLORY, node_key(OWNER.node_id, RecordKind.HEALTH), HEALTH,
                         seq=99, ttl_s=60, now_s=NOW)
    with pytest.raises(RecordError, match=r"key its value does not belong to$"):
        verify_record(stolen, NOW)
    swapped = replace(rec, owner_key=MALLORY.public_key)
    with pytest.raises(RecordError, match=r"^forged record"):
        verify_record(swapped, NOW)


def test_expired_and_far_future_records_are_refused() -> None:
    with pytest.raises(RecordError, match=r"^record expired$"):
        verify_record(health_record(ttl=10), NOW + 11)
    far = health_record(ttl=3600)
    with pytest.raises(RecordError, match=r"too far in the future$"):
        verify_record(far, NOW - 2 * 24 * 3600)
    with pytest.raises(RecordError, match=r"^ttl"):
        health_record(ttl=0)


def test_layer_span_records_live_under_each_layer_key() -> None:
    span = LayerSpanRecord("smollm2-135m", 4, 8, 30)
    for layer in range(4, 8):
        rec = make_record(OWNER, layer_key("smollm2-135m", layer), span, seq=1, ttl_s=60, now_s=NOW)
        assert verify_record(rec, NOW) == span
    wrong = make_record(OWNER, layer_key("smollm2-135m", 9), span, seq=1, ttl_s=60, now_s=NOW)
    with pytest.raises(RecordError, match=r"does not belong to"):
        verify_record(wrong, NOW)
    with pytest.raises(ValueError, match=r"bad layer span"):
        LayerSpanRecord("m", 5, 5, 30)


def test_store_keeps_newest_seq_and_refuses_stale_or_forged(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordStore()
    store.put(health_record(seq=2), NOW)
    store.put(health_record(seq=2), NOW)  # the same record again is fine (republish race)
    with caplog.at_level(logging.WARNING), pytest.raises(RecordError, match=r"^stale record"):
        store.put(health_record(seq=1), NOW)
    assert "refused record" in caplog.text
    store.put(health_record(seq=3), NOW)
    assert [r.seq for r in store.get(health_record().key, NOW)] == [3]
    forged = replace(health_record(seq=4), seq=5)
    with pytest.raises(RecordError, match=r"^forged"):
        store.put(forged, NOW)
    assert store.rejected == 2
    assert store.get(health_record().key, NOW + 61) == []
    assert store.expire(NOW + 61) == 1 and len(store) == 0


def test_store_bounds_records_per_key() -> None:
    store = RecordStore(max_per_key=3)
    key = layer_key("m", 0)
    owners = [Identity.from_seed(bytes([i]) * 32) for i in range(5)]
    for i, o in enumerate(owners[:3]):
        store.put(make_record(o, key, LayerSpanRecord("m", 0, 1, 1), seq=1, ttl_s=10 + i,
                              now_s=NOW), NOW)
    with pytest.raises(RecordError, match=r"already holds 3 records$"):
        store.put(make_record(owners[3], key, LayerSpanRecord("m", 0, 1, 1), seq=1, ttl_s=5,
                              now_s=NOW), NOW)
    store.put(make_record(owners[4], key, LayerSpanRecord("m", 0, 1, 1), seq=1, ttl_s=50,
                          now_s=NOW), NOW)
    assert len(store.get(key, NOW)) == 3


def test_links_record_carries_a_latency_row() -> None:
    from hive_core.mesh.dht import LinkRtt, LinksRecord

    row = LinksRecord((LinkRtt(MALLORY.node_id, 12.5), LinkRtt(bytes(20), 80.0)))
    rec = make_record(OWNER, node_key(OWNER.node_id, RecordKind.LINKS), row, seq=1, ttl_s=60,
                      now_s=NOW)
    assert verify_record(decode_struct(encode_struct(rec), SignedRecord), NOW) == row
