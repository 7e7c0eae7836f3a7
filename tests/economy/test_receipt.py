"""Work receipts: canonical codec, strict parsing, signatures."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.base.stage import Part
from hive_core.economy import ReceiptError, WorkReceipt
from hive_core.economy.receipt import SIZE

from .conftest import ident, make_receipt


def test_round_trip_is_exact(alice, bob):
    r = make_receipt(alice, bob, battery_pct=42, on_ac=False, temperature_c=71.3)
    raw = bytes(r)
    assert len(raw) == SIZE
    back = WorkReceipt.parse(raw)
    assert back == r
    back.verify()
    assert back.worker_id == bob.node_id
    assert back.client_id == alice.node_id
    assert back.temperature_c == pytest.approx(71.3)
    assert back.battery_pct == 42 and back.on_ac is False
    assert back.wall_time_s == pytest.approx(0.25)


def test_golden_encoding_is_stable(alice, bob):
    # Ed25519 signatures are deterministic: the same fields give the same bytes forever.
    # A change here breaks every receipt already stored in players' ledgers.
    raw = bytes(make_receipt(alice, bob))
    assert raw[0] == 1
    assert hashlib.sha256(raw).hexdigest() == GOLDEN_SHA256


GOLDEN_SHA256 = "61c2aaa924026108499e3498a91d4fe0acd53a8f1e19b391afc06362c6730d09"


def test_unknown_sensors_round_trip(alice, bob):
    r = make_receipt(alice, bob, temperature_c=None, battery_pct=None)
    back = WorkReceipt.parse(bytes(r))
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
    frankenstein = WorkReceipt.parse(honest.body() + forged.signature)
    with pytest.raises(ReceiptError):
        frankenstein.verify()


def test_self_paid_receipt_is_refused(alice):
    with pytest.raises(ReceiptError, match="client and worker must differ"):
        make_receipt(alice, alice)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-1], "must be 164 bytes, got 163"),
        (lambda b: b + b"\0", "must be 164 bytes, got 165"),
        (lambda b: b"\x02" + b[1:], "unknown receipt version 2"),
        # offsets: version 0, session 1, worker 17, key 37, layers 69/71, part 73,
        # tokens 74, wall time 78, timestamp 86, stability 94, temperature 96,
        # battery 98, on AC 99, signature 100
        (lambda b: b[:69] + b"\x05\x00" + b[71:], "bad layer span \\[5, 4\\)"),
        (lambda b: b[:73] + b"\x07" + b[74:], "unknown part 7"),
        (lambda b: b[:99] + b"\x02" + b[100:], "on_ac must be 0 or 1"),
        (lambda b: b[:98] + b"\x65" + b[99:], "battery must be in"),
        (lambda b: b[:94] + b"\xe9\x03" + b[96:], "stability must be in"),
        (lambda b: b[:96] + b"\xd0\x07" + b[98:], "temperature 200.0 °C out of range"),
    ],
)
def test_strict_parsing(alice, bob, mutate, message):
    raw = bytes(make_receipt(alice, bob, layers=(0, 4)))
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
@given(st.integers(0, SIZE - 1), st.integers(1, 255))
def test_any_flipped_byte_is_caught(pos, xor):
    raw = bytearray(bytes(make_receipt(ident(1), ident(2))))
    raw[pos] ^= xor
    with pytest.raises(ReceiptError):
        WorkReceipt.parse(bytes(raw)).verify()
