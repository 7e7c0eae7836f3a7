"""Balances derived from receipts; forged entries ignored; spends refused twice or overdrawn."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.economy import Ledger, Spend, SpendError

from .conftest import ident, make_receipt

T0 = 1_700_000_000_000


def earn(worker, n=1, tokens=100):
    """n distinct receipts (different clients/sessions) for `worker`: 1000 mc each."""
    return [
        bytes(make_receipt(ident(100 + i), worker, tokens=tokens, session=bytes([i]) * 16))
        for i in range(n)
    ]


def spend(player, amount, ts=T0, sid=None):
    return Spend.create(player, amount_mc=amount, purpose="building:b1", timestamp_ms=ts,
                        spend_id=sid)


def test_balance_is_derived_from_receipts(bob):
    assert Ledger.from_entries(earn(bob, 3)).balance_mc(bob.node_id) == 3000
    assert Ledger.from_entries(earn(bob, 1)).balance_mc(bob.node_id) == 1000
    assert Ledger.from_entries([]).balance_mc(bob.node_id) == 0


def test_balance_is_never_a_stored_number(bob):
    led = Ledger.from_entries(earn(bob, 2))
    # The view holds entries only: nothing numeric that could be edited.
    assert Ledger.__slots__ == ("_forfeits", "_receipts", "_spends")
    with pytest.raises(AttributeError):
        led.balance_mc = lambda _acct: 10**9  # type: ignore[method-assign]
    with pytest.raises(AttributeError):
        led.balance = 10**9  # type: ignore[attr-defined]
    # ...and the worth of an entry is bound to its signed bytes: raising the tokens
    # inside a receipt makes it forged, not richer.
    raw = bytearray(earn(bob, 1)[0])
    raw[74] = 0xFF
    assert Ledger.from_entries([bytes(raw)]).balance_mc(bob.node_id) == 0


def test_forged_receipt_is_ignored_and_logged(bob, caplog):
    good = earn(bob, 1)
    bad = bytearray(good[0])
    bad[-1] ^= 1
    with caplog.at_level(logging.WARNING, logger="hive_core.economy.ledger"):
        led = Ledger.from_entries([bytes(bad), b"\x01garbage", *good])
    assert led.earned_mc(bob.node_id) == 1000
    assert "signature does not verify" in caplog.text
    assert "malformed receipt: truncated frame" in caplog.text


def test_duplicate_receipt_counted_once(bob):
    r = earn(bob, 1)
    assert Ledger.from_entries(r * 5).earned_mc(bob.node_id) == 1000


def test_credits_go_to_the_worker_only(alice, bob):
    led = Ledger.from_entries(earn(bob, 2))
    assert led.earned_mc(alice.node_id) == 0
    assert led.earned_mc(ident(100).node_id) == 0  # the client earns nothing


def test_spend_reduces_balance_and_cannot_be_spent_twice(bob):
    s = spend(bob, 700)
    led = Ledger.from_entries(earn(bob, 1))
    led.check_spend(bytes(s))
    led2 = Ledger.from_entries(earn(bob, 1), [bytes(s)])
    assert led2.balance_mc(bob.node_id) == 300
    assert led2.is_funded(s.spend_id_hex)
    with pytest.raises(SpendError, match="already recorded"):
        led2.check_spend(bytes(s))
    # the same spend merged in many times still charges once
    assert Ledger.from_entries(earn(bob, 1), [bytes(s)] * 3).balance_mc(bob.node_id) == 300


def test_overdraw_refused(bob):
    led = Ledger.from_entries(earn(bob, 1))
    with pytest.raises(SpendError, match="overdraws: balance is 1000 mc"):
        led.check_spend(spend(bob, 1001))
    led.check_spend(spend(bob, 1000))


def test_forged_spend_refused_and_ignored(alice, bob):
    s = spend(bob, 500)
    forged = Spend.parse(bytes(s)[:-64] + spend(alice, 500).signature)
    with pytest.raises(SpendError, match="signature does not verify"):
        Ledger.from_entries(earn(bob, 1)).check_spend(forged)
    led = Ledger.from_entries(earn(bob, 1), [bytes(forged)])
    assert led.balance_mc(bob.node_id) == 1000


def test_concurrent_spends_from_two_devices(bob):
    # Two devices of one player each saw 1000 mc and spent 700 before syncing.
    laptop = spend(bob, 700, ts=T0 + 5, sid=b"\x01" * 16)
    phone = spend(bob, 700, ts=T0 + 5, sid=b"\x02" * 16)
    receipts = earn(bob, 1)
    for a, b in ((laptop, phone), (phone, laptop)):
        led = Ledger.from_entries(receipts, [bytes(a), bytes(b)])
        statuses = led.settle(bob.node_id)
        # same timestamp: the lower spend id goes first, the other is void
        assert [(st.spend.spend_id[0], st.valid) for st in statuses] == [(1, True), (2, False)]
        assert led.balance_mc(bob.node_id) == 300
        assert led.is_funded(laptop.spend_id_hex) and not led.is_funded(phone.spend_id_hex)


def test_later_earnings_fund_a_void_spend(bob):
    a, b = spend(bob, 700, ts=T0), spend(bob, 700, ts=T0 + 1)
    assert not Ledger.from_entries(earn(bob, 1), [bytes(a), bytes(b)]).is_funded(b.spend_id_hex)
    assert Ledger.from_entries(earn(bob, 2), [bytes(a), bytes(b)]).is_funded(b.spend_id_hex)


def test_backdated_spend_cannot_void_a_valid_one(bob):
    first = spend(bob, 800, ts=T0 + 10)
    led = Ledger.from_entries(earn(bob, 1), [bytes(first)])
    with pytest.raises(SpendError, match="void an earlier valid spend"):
        led.check_spend(spend(bob, 300, ts=T0))
    led.check_spend(spend(bob, 200, ts=T0))  # earlier but fits: nothing is voided
    led.check_spend(spend(bob, 200, ts=T0 + 20))


def test_spend_codec_strict(bob):
    raw = bytes(spend(bob, 5))
    assert Spend.parse(raw) == spend(bob, 5, sid=Spend.parse(raw).spend_id)
    for bad, msg in [
        (raw[:-1], "truncated frame: need 64 bytes"),
        (raw[:10], "truncated frame: need 16 bytes"),
        (raw + b"\0", "1 trailing bytes"),
        (b"", "empty spend"),
        (b"\x09" + raw[1:], "unknown spend version 9"),
    ]:
        with pytest.raises(SpendError, match=msg):
            Spend.parse(bad)
    with pytest.raises(SpendError, match="amount must be positive"):
        spend(bob, 0)
    with pytest.raises(SpendError, match="purpose longer"):
        Spend.create(bob, amount_mc=1, purpose="x" * 97, timestamp_ms=T0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_spend_random_bytes_never_crash(data):
    try:
        Spend.parse(data)
    except SpendError:
        pass


@settings(max_examples=30, deadline=None)
@given(
    earned=st.integers(0, 5),
    amounts=st.lists(st.tuples(st.integers(1, 3000), st.integers(0, 50)), max_size=8),
    perm=st.randoms(use_true_random=False),
)
def test_settlement_is_order_independent_and_never_overdraws(earned, amounts, perm):
    bob = ident(2)
    receipts = earn(bob, earned)
    spends = [bytes(spend(bob, a, ts=T0 + t, sid=bytes([i]) * 16))
              for i, (a, t) in enumerate(amounts)]
    led = Ledger.from_entries(receipts, spends)
    shuffled = spends * 2
    perm.shuffle(shuffled)
    led2 = Ledger.from_entries(list(reversed(receipts)), shuffled)
    valid = [st.spend.spend_id for st in led.settle(bob.node_id) if st.valid]
    assert valid == [st.spend.spend_id for st in led2.settle(bob.node_id) if st.valid]
    assert 0 <= led.balance_mc(bob.node_id) == led2.balance_mc(bob.node_id)
    spent = sum(st.spend.amount_mc for st in led.settle(bob.node_id) if st.valid)
    assert spent + led.balance_mc(bob.node_id) == earned * 1000
