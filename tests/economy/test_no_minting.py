"""No minting: credits move from asker to worker; attacks on the ledger raise no credit.

Adversaries: a key farm (fresh keys signing receipts for each other or for one worker),
a self-minter (issue 17: one fresh key paying another 4e9 tokens over 4,096 layers in 1 ms),
a replayer and an inflater (the same work paid twice, or claimed at an impossible rate), and a
convicted worker keeping its pay.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_core.base.stage import Part
from hive_core.economy import Ledger, ReceiptError, Spend, WorkReceipt
from hive_core.economy.ledger import (
    MAX_LAYER_TOKENS_PER_S,
    START_INCOME_MC,
    START_MC,
    check_claim,
)

from .conftest import ident, make_receipt

T0 = 1_700_000_000_000


def receipt(client, worker, *, tokens=100, layers=(0, 10), wall_s=0.25, session=b"s" * 16,
            ts=T0) -> WorkReceipt:
    return WorkReceipt.create(client, session_id=session, worker_id=worker.node_id,
                              layer_start=layers[0], layer_end=layers[1], part=Part.FULL,
                              tokens=tokens, wall_time_s=wall_s, timestamp_ms=ts, stability=1.0,
                              temperature_c=40.0, battery_pct=None, on_ac=True)


def total(led: Ledger, keys) -> int:
    """Everything the keys hold: what is left of their starts plus their balances."""
    return sum(led.start_mc(k.node_id) + led.balance_mc(k.node_id) for k in keys)


def test_the_self_minting_receipt_of_issue_17_moves_nothing(caplog) -> None:
    a, b = ident(40), ident(41)
    mint = receipt(a, b, tokens=4_000_000_000, layers=(0, 4096), wall_s=0.001)
    assert mint.reward_mc() > 10**12  # what the old ledger credited (16.4 billion credits)
    with pytest.raises(ReceiptError, match="layers"):
        check_claim(mint)
    led = Ledger([mint])
    assert led.balance_mc(b.node_id) == 0 and led.earned_mc(b.node_id) == 0
    assert led.start_mc(a.node_id) == START_MC  # and nothing was charged
    [status] = led.receipt_statuses()
    assert status.paid_mc == 0 and "layers" in status.reason
    # The same claim on a plausible layer count is refused for its rate instead.
    fast = receipt(a, b, tokens=4_000_000_000, layers=(0, 30), wall_s=0.001)
    assert Ledger([fast]).balance_mc(b.node_id) == 0
    assert "per second" in Ledger([fast]).receipt_statuses()[0].reason


def test_two_colluding_keys_create_no_credit() -> None:
    """Two keys signing plausible receipts for each other, back and forth: credit only moves
    between them; together they never hold more than their two starts, and what either can
    receive out of the other's start is capped."""
    a, b = ident(42), ident(43)
    entries = []
    for k in range(300):
        client, worker = (a, b) if k % 2 == 0 else (b, a)
        entries.append(receipt(client, worker, tokens=20_000, layers=(0, 30), wall_s=1.0,
                               session=k.to_bytes(16, "little"), ts=T0 + k))
    led = Ledger(entries)
    assert total(led, [a, b]) == 2 * START_MC  # 300 receipts later, not one credit more
    for k in (a, b):  # neither took more than a cap out of the other's start
        assert led.balance_mc(k.node_id) <= 2 * START_MC
    assert sum(s.paid_mc for s in led.receipt_statuses()) > 2 * START_MC  # it only circulated
    # A pair of keys that spent their starts on buildings... cannot: a start buys none.
    spend = Spend.create(a, amount_mc=START_MC, purpose="building:x", timestamp_ms=T0 - 1)
    assert not Ledger(entries, [spend]).is_funded(spend.spend_id_hex)


def test_a_key_farm_cannot_multiply_the_start() -> None:
    """Fifty fresh keys each pay one worker all they can: the worker receives at most one
    cap of others' starts; the rest of the farm's starts stay where they were."""
    worker = ident(44)
    farm = [ident(100 + i) for i in range(50)]
    entries = [receipt(k, worker, tokens=33_000, layers=(0, 30), wall_s=1.0,
                       session=bytes([i]) * 16, ts=T0 + i) for i, k in enumerate(farm)]
    led = Ledger(entries)
    assert led.balance_mc(worker.node_id) <= START_INCOME_MC
    assert led.balance_mc(worker.node_id) < len(farm) * entries[0].reward_mc()
    assert total(led, [worker, *farm]) == (len(farm) + 1) * START_MC
    # The farm's starts buy no building of its own either: a start only pays for asking.
    spend = Spend.create(farm[-1], amount_mc=1, purpose="building:x", timestamp_ms=T0 + 999)
    assert not Ledger(entries, [spend]).is_funded(spend.spend_id_hex)


def test_a_replayed_or_re_signed_receipt_pays_once() -> None:
    a, b = ident(45), ident(46)
    r = receipt(a, b)
    again = receipt(a, b, wall_s=0.5, ts=T0 + 5)  # the same stage of the same session, re-signed
    led = Ledger([r, r, again])
    assert led.earned_mc(b.node_id) == r.reward_mc()
    assert [s.paid_mc > 0 for s in led.receipt_statuses()] == [True, False]
    assert "already paid" in led.receipt_statuses()[1].reason


def test_an_inflated_receipt_moves_nothing() -> None:
    a, b = ident(47), ident(48)
    rate = MAX_LAYER_TOKENS_PER_S
    honest = receipt(a, b, tokens=rate // 100, layers=(0, 10), wall_s=1.0)
    inflated = receipt(a, b, tokens=rate, layers=(0, 10), wall_s=1.0, session=b"t" * 16)
    led = Ledger([honest, inflated])
    assert led.earned_mc(b.node_id) == honest.reward_mc()
    assert led.start_mc(a.node_id) == START_MC - honest.reward_mc()


def test_a_convicted_worker_forfeits_the_disputed_session() -> None:
    a, b = ident(49), ident(50)
    caught, other = receipt(a, b, session=b"c" * 16), receipt(a, b, session=b"o" * 16)
    led = Ledger([caught, other], forfeits=[(b.node_id, b"c" * 16)])
    assert led.earned_mc(b.node_id) == other.reward_mc()
    assert "convicted" in led.receipt_statuses()[0].reason or "convicted" in led.receipt_statuses()[1].reason


def test_garbage_receipts_change_no_balance(caplog) -> None:
    a, b = ident(51), ident(52)
    good = bytes(make_receipt(a, b))
    with caplog.at_level(logging.WARNING, logger="hive_core.economy.ledger"):
        led = Ledger.from_entries([b"", b"\x01" + b"\x00" * 40, good[:-1] + bytes([good[-1] ^ 1])])
    assert led.receipts == [] and led.balance_mc(b.node_id) == 0
    assert caplog.text.count("ignored work receipt") == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(1, 50_000),
                          st.integers(1, 64)), min_size=1, max_size=40))
def test_credit_is_conserved_whatever_the_receipts(moves) -> None:
    keys = [ident(60 + i) for i in range(6)]
    entries = [receipt(keys[c], keys[w], tokens=t, layers=(0, n), wall_s=1.0,
                       session=k.to_bytes(16, "little"), ts=T0 + k)
               for k, (c, w, t, n) in enumerate(moves) if c != w]
    led = Ledger(entries)
    assert total(led, keys) == len(keys) * START_MC
    assert all(led.balance_mc(k.node_id) >= 0 and led.start_mc(k.node_id) >= 0 for k in keys)


def test_the_city_refuses_the_mint_and_settles_what_it_records() -> None:
    """Issue 17's hole: `City.record_receipt` took the self-minting receipt as 16.4 billion
    credits. Now it refuses the impossible claim, and a farm of fresh keys paying the city's
    player moves at most one cap of their starts."""
    from world.model import City

    player = ident(53)
    city = City(player)
    try:
        with pytest.raises(ReceiptError):
            city.record_receipt(receipt(ident(54), player, tokens=4_000_000_000,
                                        layers=(0, 4096), wall_s=0.001))
        assert city.balance_mc() == 0
        for i in range(30):
            city.record_receipt(receipt(ident(120 + i), player, tokens=33_000, layers=(0, 30),
                                        wall_s=1.0, session=bytes([i]) * 16, ts=T0 + i))
        assert 0 < city.balance_mc() <= START_INCOME_MC
    finally:
        city.close()
