"""Players' choices in the city doc: signed, paid by spends in the same edit, seen by every
replica, and refused (nothing written, nothing lost) when they break the rules."""

from __future__ import annotations

import time

import pytest
from pycrdt import Map

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import SpendError, WorkReceipt
from world.model import City, Outcome, SchemaError
from world.model.schema import ACTIONS

ASKER = Identity.from_seed(b"q" * 32)


def paid(city: City, tokens: int = 400) -> WorkReceipt:
    """A receipt an asker signed for `city`'s player's work, recorded in its ledger."""
    r = WorkReceipt.create(ASKER, session_id=bytes(16), worker_id=bytes.fromhex(city.player_id),
                           layer_start=0, layer_end=15, part=Part.FULL, tokens=tokens, wall_time_s=1.0,
                           timestamp_ms=time.time_ns() // 1_000_000, stability=1.0,
                           temperature_c=None, battery_pct=None, on_ac=True)
    city.record_receipt(r)
    return r


@pytest.fixture
def pair() -> tuple[City, City]:
    """Alice and Bob's replicas, syncing by signed edits; Bob keeps what he refused."""
    alice, bob = City(Identity.from_seed(b"a" * 32)), City(Identity.from_seed(b"b" * 32))
    bob.outcomes = []  # type: ignore[attr-defined]
    alice.on_local_edit(lambda e: bob.outcomes.append(bob.receive(e)))  # type: ignore[attr-defined]
    bob.on_local_edit(alice.receive)
    alice.join("alice")
    bob.join("bob")
    return alice, bob


def test_a_paid_stake_is_one_signed_edit_every_replica_sees(pair) -> None:
    alice, bob = pair
    paid(alice)
    before = alice.balance_mc()
    stake = alice.choose("stake", cost_mc=300)
    assert alice.balance_mc() == before - 300  # the spend paid for it, in the same ledger
    seen = bob.actions()[stake.id]
    assert (seen.owner, seen.kind, seen.amount_mc, seen.spend) == (alice.player_id, "stake", 300, stake.spend)
    assert bob.balance_mc(alice.player_id) == before - 300
    assert bob.outcomes[-1] is Outcome.ACCEPTED  # type: ignore[attr-defined]
    host = alice.choose("host", model="smollm2.gguf", start=15, end=30, n_layers=30, part="full",
                        mem_mb=80.0, free_mb=900.0)
    assert bob.actions()[host.id].start == 15 and alice.balance_mc() == before - 300  # hosting is free


def test_refused_choices_write_nothing(pair) -> None:
    alice, bob = pair
    paid(alice, tokens=10)
    balance, edits = alice.balance_mc(), alice.state_vector()
    with pytest.raises(SpendError, match="overdraws"):
        alice.choose("stake", cost_mc=balance + 1)
    with pytest.raises(SchemaError, match="hosting needs 900 MB but the machine reported 500 MB free"):
        alice.choose("host", model="m", start=0, end=30, n_layers=30, part="full", mem_mb=900.0, free_mb=500.0)
    with pytest.raises(SchemaError, match="layers"):
        alice.choose("host", model="m", start=20, end=10, n_layers=30, part="full", mem_mb=1.0, free_mb=5.0)
    with pytest.raises(SchemaError, match="unknown kind"):
        alice.choose("mint")
    assert alice.balance_mc() == balance and alice.state_vector() == edits and bob.actions() == {}


def _forged(alice: City, write) -> Outcome:
    """What a fresh replica holding all of Alice's edits so far does with her next edit, made
    by `write(roots)` directly on her doc (as a hacked client would) and signed as usual."""
    bob = City(Identity.from_seed(b"b" * 32))
    for edit in alice.edits_since({}):
        assert bob.receive(edit) in (Outcome.ACCEPTED, Outcome.DUPLICATE)
    sent: list = []
    stop = alice.on_local_edit(sent.append)
    with alice._txn():
        write(alice._roots[ACTIONS])
    stop()
    before = bob.to_json()
    outcome = bob.receive(sent[-1])
    if outcome is Outcome.REJECTED:
        assert bob.to_json() == before  # nothing of it reached Bob's doc
    return outcome


def test_a_careful_liar_cannot_fake_payments_or_rewrite_choices() -> None:
    """Adversary: a careful player editing their own doc directly and signing the result
    (valid signatures, forged content). Every other replica refuses such an edit."""
    alice = City(Identity.from_seed(b"a" * 32))
    alice.join("alice")
    paid(alice)
    real = alice.choose("stake", cost_mc=100)
    base = {"owner": alice.player_id, "at_ms": time.time_ns() // 1_000_000}
    bob_id = Identity.from_seed(b"b" * 32).node_id.hex()
    forgeries = {
        "a stake naming a spend never made": lambda r: r.__setitem__(
            "0123456789abcdef", Map({**base, "kind": "stake", "amount_mc": 500, "spend": "ab" * 16})),
        "one spend paying for two stakes": lambda r: r.__setitem__(
            "fedcba9876543210", Map({**base, "kind": "stake", "amount_mc": 100, "spend": real.spend})),
        "an achievement the ledger does not prove": lambda r: r.__setitem__(
            "1111111111111111", Map({**base, "kind": "achievement", "name": "thousand-tokens",
                                     "proof": "ledger"})),
        "rewriting a choice after the fact": lambda r: r[real.id].__setitem__("amount_mc", 1),
        "withdrawing a choice": lambda r: r.pop(real.id),
        "a choice signed by Alice, owned by Bob": lambda r: r.__setitem__(
            "2222222222222222", Map({**base, "owner": bob_id, "kind": "host", "model": "m", "start": 0,
                                     "end": 2, "n_layers": 2, "part": "full", "mem_mb": 1.0,
                                     "free_mb": 2.0})),
    }
    host = {**base, "kind": "host", "model": "m", "start": 0, "end": 2, "n_layers": 2, "part": "full",
            "mem_mb": 1.0, "free_mb": 2.0}
    for what, write in [("control: a valid host choice written the same way", None), *forgeries.items()]:
        honest = City(alice.identity)  # a clean copy of Alice's replica for each attempt
        for edit in alice.edits_since({}):
            honest.receive(edit)
        if write is None:
            assert _forged(honest, lambda r: r.__setitem__("3333333333333333", Map(host))) is Outcome.ACCEPTED
        else:
            assert _forged(honest, write) is Outcome.REJECTED, what


def test_achievements_prove_themselves_once(pair) -> None:
    alice, bob = pair
    with pytest.raises(ValueError, match="receipt in the ledger"):
        alice.choose("achievement", name="first-verified-token", proof="00" * 16)
    r = paid(alice, tokens=600)
    first = alice.choose("achievement", name="first-verified-token", proof=r.receipt_id)
    assert bob.actions()[first.id].name == "first-verified-token"
    with pytest.raises(ValueError, match="already holds"):
        alice.choose("achievement", name="first-verified-token", proof=r.receipt_id)
    with pytest.raises(ValueError, match="600 tokens served"):
        alice.choose("achievement", name="thousand-tokens", proof="ledger")
    paid(alice, tokens=500)
    alice.choose("achievement", name="thousand-tokens", proof="ledger")
    assert sorted(a.name for a in bob.actions().values()) == ["first-verified-token", "thousand-tokens"]
