"""Work receipts: canonical codec, strict parsing, signatures."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.base.identity import node_id_of
from hive_core.base.stage import Part
from hive_core.economy import ReceiptError, WorkReceipt
from hive_core.economy.receipt import MAX_SIZE

from .conftest import ident, make_receipt


def test_round_trip_is_exact(alice, bob):
    r = make_receipt(alice, bob, battery_pct=42, on_ac=False, temperature_c=71.3)
    raw = bytes(r)
    assert len(raw) == MAX_SIZE  # both sensors reported: the longest receipt
    back = WorkReceipt.parse(raw)
    assert back == r
    back.verify()
    assert back.worker_id == bob.node_id
    assert back.client_id == alice.node_id
    assert back.temperature_c == pytest.approx(71.3)
    assert back.battery_pct == 42 and back.on_ac is False
    assert back.wall_time_s == pytest.approx(0.25)


def test_unknown_sensors_round_trip(alice, bob):
    r = make_receipt(alice, bob, temperature_c=None, battery_pct=None)
    raw = bytes(r)
    assert len(raw) == MAX_SIZE - 3  # each absent sensor is one presence byte
    back = WorkReceipt.parse(raw)
    assert back == r
    assert back.temperature_c is None and back.battery_pct is None


def test_tampered_field_fails_verification(alice, bob):
    raw = bytearray(bytes(make_receipt(alice, bob, tokens=100)))
    # tokens live after version(1) session(16) worker(20) key(32) layers(4) part(1)
    struct.pack_into("<I", raw, 1 + 16 + 20 + 32 + 4 + 1, 100_000)
    forged = WorkReceipt.parse(bytes(raw))
    assert forged.tokens == 100_000
    with pytest.raises(ReceiptError, match="signature does not verify"):
        forged.verify()


def test_signature_by_another_key_is_rejected(alice, bob, carol):
    honest = make_receipt(alice, bob)
    # carol signs a receipt that claims to come from alice
    forged = make_receipt(carol, bob)
    frankenstein = WorkReceipt.parse(bytes(honest)[:-64] + forged.signature)
    assert frankenstein.client_public_key == alice.public_key
    with pytest.raises(ReceiptError):
        frankenstein.verify()


def test_self_paid_receipt_is_refused(alice):
    with pytest.raises(ReceiptError, match="client and worker must differ"):
        make_receipt(alice, alice)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "truncated frame: need 64 bytes"),
        (lambda b: b + b"\0", "166 bytes exceeds the limit of 165"),
        # the battery said absent, its byte left in: one byte too many
        (lambda b: b[:99] + b"\0" + b[101:] + b"\0", "1 trailing bytes"),
        (lambda b: b"", "empty receipt"),
        (lambda b: b"\x02" + b[1:], "unknown receipt version 2"),
        # offsets: version 0, session 1, worker 17, key 37, layers 69/71, part 73,
        # tokens 74, wall time 78, timestamp 86, stability 94, temperature 96 (presence)
        # and 97, battery 99 (presence) and 100, on AC 101, signature 102
        (lambda b: b[:69] + b"\x05\x00" + b[71:], "bad layer span \\[5, 4\\)"),
        (lambda b: b[:73] + b"\x07" + b[74:], "unknown Part 7"),
        (lambda b: b[:74] + bytes(4) + b[78:], "tokens must be positive"),
        (lambda b: b[:101] + b"\x02" + b[102:], "'on_ac': bool byte must be 0 or 1"),
        (lambda b: b[:100] + b"\x65" + b[101:], "battery must be in"),
        (lambda b: b[:99] + b"\x02" + b[100:], "'battery_pct': presence byte must be 0 or 1"),
        (lambda b: b[:94] + b"\xe9\x03" + b[96:], "stability must be in"),
        (lambda b: b[:97] + b"\xd0\x07" + b[99:], "temperature 200.0 °C out of range"),
        (lambda b: b[:17] + node_id_of(b[37:69]) + b[37:], "client and worker must differ"),
    ],
)
def test_strict_parsing(alice, bob, mutate, message):
    raw = bytes(make_receipt(alice, bob, layers=(0, 4), battery_pct=42))
    assert len(raw) == MAX_SIZE
    with pytest.raises(ReceiptError, match=message):
        WorkReceipt.parse(mutate(raw))


def test_not_bytes_is_refused():
    with pytest.raises(ReceiptError, match="must be bytes"):
        WorkReceipt.parse("a string")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": 0},
        {"layers": (3, 3)},
        {"layers": (0, 5000)},
        {"temperature_c": 400.0},
        {"stability": 1.5},
        {"battery_pct": 120},
        {"session": b"short"},
    ],
)
def test_create_refuses_bad_fields(alice, bob, kwargs):
    with pytest.raises(ReceiptError):
        make_receipt(alice, bob, **kwargs)


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.integers(1, 2**32 - 1),
    start=st.integers(0, 100),
    span=st.integers(1, 100),
    part=st.sampled_from(list(Part)),
    temp=st.one_of(st.none(), st.floats(-50, 150)),
    battery=st.one_of(st.none(), st.integers(0, 100)),
    on_ac=st.booleans(),
    stability=st.floats(0, 1),
)
def test_round_trip_property(tokens, start, span, part, temp, battery, on_ac, stability):
    r = make_receipt(
        ident(1),
        ident(2),
        tokens=tokens,
        layers=(start, start + span),
        part=part,
        temperature_c=temp,
        battery_pct=battery,
        on_ac=on_ac,
        stability=stability,
    )
    back = WorkReceipt.parse(bytes(r))
    assert back == r
    back.verify()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_crash(data):
    try:
        WorkReceipt.parse(data)
    except ReceiptError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.data(), st.integers(1, 255))
def test_any_flipped_byte_is_caught(data, xor):
    raw = bytearray(bytes(make_receipt(ident(1), ident(2))))
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= xor
    with pytest.raises(ReceiptError):
        WorkReceipt.parse(bytes(raw)).verify()
