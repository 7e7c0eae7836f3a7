"""Signed joins: forged, replayed, stale and misaddressed hellos are refused and logged."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from hive_core.base.identity import Identity
from hive_core.protocol import (
    HandshakeError,
    ReplayGuard,
    SignalKind,
    decode,
    encode,
    make_hello,
    make_signal,
    relayed,
    verify_hello,
    verify_signal,
)

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
NOW = 1_700_000_000_000


def guard() -> ReplayGuard:
    return ReplayGuard(window_s=30, clock_ms=lambda: NOW)


def test_valid_hello_proves_the_sender() -> None:
    hello = decode(encode(make_hello(ALICE, audience=BOB.node_id, now_ms=NOW)))
    assert verify_hello(hello, guard(), me=BOB.node_id) == ALICE.node_id


def test_replayed_hello_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    g = guard()
    hello = make_hello(ALICE, now_ms=NOW)
    verify_hello(hello, g)
    with caplog.at_level(logging.WARNING), pytest.raises(HandshakeError, match=r"^replayed hello"):
        verify_hello(hello, g)
    assert "refused hello" in caplog.text


def test_forged_hello_is_refused() -> None:
    hello = make_hello(ALICE, now_ms=NOW)
    stolen = replace(hello, public_key=BOB.public_key)  # claims Bob's identity with Alice's sig
    with pytest.raises(HandshakeError, match=r"^hello signature: signature does not verify$"):
        verify_hello(stolen, guard())
    tampered = replace(hello, listen="ws://evil:1")
    with pytest.raises(HandshakeError, match=r"signature does not verify"):
        verify_hello(tampered, guard())


def test_stale_and_misaddressed_hellos_are_refused() -> None:
    with pytest.raises(HandshakeError, match=r"outside the 30000 ms window"):
        verify_hello(make_hello(ALICE, now_ms=NOW - 31_000), guard())
    with pytest.raises(HandshakeError, match=r"^hello is addressed to another node$"):
        verify_hello(make_hello(ALICE, audience=ALICE.node_id, now_ms=NOW), guard(), me=BOB.node_id)


def test_nonce_cache_is_bounded() -> None:
    g = ReplayGuard(window_s=30, max_nonces=10, clock_ms=lambda: NOW)
    for _ in range(50):
        verify_hello(make_hello(ALICE, now_ms=NOW), g)
    assert len(g._seen) <= 10


def test_signals_survive_relays_but_not_tampering() -> None:
    sig = make_signal(ALICE, to_id=BOB.node_id, kind=SignalKind.OFFER, sdp="v=0", session=7,
                      ttl=2, now_ms=NOW)
    hop1 = relayed(decode(encode(sig)))
    hop2 = relayed(hop1)
    verify_signal(hop2, now_ms=NOW)
    assert (hop2.ttl, hop2.hops) == (0, 2)
    with pytest.raises(HandshakeError, match=r"^signal ttl exhausted$"):
        relayed(hop2)
    with pytest.raises(HandshakeError, match=r"signature does not verify"):
        verify_signal(replace(sig, sdp="v=0 evil"), now_ms=NOW)
    with pytest.raises(HandshakeError, match=r"^signal sender key does not match from_id$"):
        verify_signal(replace(sig, from_id=BOB.node_id), now_ms=NOW)
    with pytest.raises(HandshakeError, match=r"ms old$"):
        verify_signal(sig, now_ms=NOW + 120_000)
