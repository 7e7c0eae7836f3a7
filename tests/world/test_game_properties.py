"""Game state under real delivery: shuffled and duplicated events give the same picture,
and a whole inference session on a map of real RTTs plays out as expected."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.events import (
    HealthUpdated,
    HiveEvent,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
)
from world.game import GameState, TrialStatus
from world.layout import HiveMap, load_country_rtt, synthetic_hive

CLIENT = Identity.from_seed(b"\x09" * 32)
NODES = [Identity.from_seed(bytes([n]) * 32).node_id for n in range(10, 14)]
SESSIONS = [b"session-a", b"session-b"]
# Signing is slow next to the rest: a few receipts made once, drawn from by the strategy.
RECEIPTS = [
    WorkReceipt.create(
        CLIENT, session_id=b"r" * 16, worker_id=NODES[k % 4], layer_start=0,
        layer_end=10 + k, part=Part.FULL, tokens=40 + 13 * k, wall_time_s=0.2,
        timestamp_ms=k, stability=0.9, temperature_c=70.0, battery_pct=None, on_ac=True,
    )
    for k in range(6)
]
END = 3.0  # every event happens before this; snapshots are compared from here on

times = st.floats(0.0, END, allow_nan=False).map(lambda t: round(t, 3))
nodes = st.sampled_from(NODES)
sessions = st.sampled_from(SESSIONS)
steps = st.integers(0, 2)
event_strategy = st.one_of(
    st.builds(StageStarted, sessions, nodes, st.just(0), st.just(10), st.just(Part.MLP), times),
    st.builds(
        lambda s, a, b, t, h, n: HopSent(s, a, b, t, h, n) if a != b else NodeLeft(a, t),
        sessions, nodes, nodes, times, st.floats(0.001, 0.5).map(lambda h: round(h, 3)),
        st.integers(0, 10_000),
    ),
    st.builds(ReplicaAnswered, sessions, steps, nodes, st.sampled_from([b"x", b"y"]), times,
              st.integers(1, 3)),
    st.builds(lambda s, k, ns, t: Verified(s, k, tuple(ns), t), sessions, steps,
              st.lists(nodes, min_size=1, max_size=3, unique=True), times),
    st.builds(Slashed, sessions, steps, nodes, st.sampled_from(["bad root", "forged"]), times),
    st.builds(ReceiptIssued, st.sampled_from(RECEIPTS), times),
    st.builds(HealthUpdated, nodes, st.sampled_from([None, 50.0, 88.0]),
              st.sampled_from([None, 30.0]), st.booleans(), st.just(1.0), times),
    st.builds(NodeLeft, nodes, times),
)


def play(events: list[HiveEvent]) -> GameState:
    game = GameState()
    game.set_layout({n: (float(i), 0.0, 0.0) for i, n in enumerate(NODES)})
    for e in events:
        game.apply(e, now=END)
    return game


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(event_strategy, min_size=1, max_size=25), st.randoms(use_true_random=False))
def test_shuffled_and_duplicated_delivery_gives_the_same_picture(
    events: list[HiveEvent], rng: object
) -> None:
    delivered = events + [e for i, e in enumerate(events) if i % 3 == 0]  # some twice
    rng.shuffle(delivered)  # type: ignore[attr-defined]
    in_order, shuffled = play(sorted(events, key=repr)), play(delivered)
    for now in (END, END + 1.0, END + 40.0):
        assert in_order.snapshot(now) == shuffled.snapshot(now)


def test_an_inference_session_on_a_real_latency_map() -> None:
    """Five nodes in five real countries: the map from their RTTs, a 3-stage pipeline with
    a replicated stage, one liar slashed, receipts paid, one device on a hot battery."""
    data = load_country_rtt()
    hive = synthetic_hive(data, 5, seed=11)
    ids = [Identity.from_seed(bytes([n]) * 32).node_id for n in range(20, 25)]
    rtt = hive.rtt.copy()
    rtt[np.isnan(rtt)] = np.nanmean(rtt)  # the five measure each other in a live hive
    layout = HiveMap(3).update(ids, rtt)
    game = GameState()
    game.set_layout(layout)
    client, w1, w2, w3, liar = ids
    s = b"ask-0001"
    t = 100.0
    script: list[HiveEvent] = [StageStarted(s, w1, 0, 10, Part.FULL, t)]
    hop = float(rtt[0, 1]) / 2000.0  # one way, in seconds
    script.append(HopSent(s, client, w1, t, hop, 2304))
    t += hop
    for node, digest in ((w2, b"root"), (liar, b"evil"), (w3, b"root")):
        script.append(ReplicaAnswered(s, 1, node, digest, t, quorum=2))
        t += 0.01
    script += [Verified(s, 1, (w2, w3), t), Slashed(s, 1, liar, "root outside tolerance", t)]
    script.append(HealthUpdated(w3, 91.0, 20.0, False, 0.8, t))
    for worker in (w1, w2, w3):
        r = WorkReceipt.create(
            Identity.from_seed(bytes([20]) * 32), session_id=b"q" * 16, worker_id=worker,
            layer_start=0, layer_end=10, part=Part.FULL, tokens=200, wall_time_s=0.3,
            timestamp_ms=1, stability=1.0, temperature_c=40.0, battery_pct=None, on_ac=True,
        )
        script.append(ReceiptIssued(r, t))
    for e in script:
        game.apply(e, now=t)
    mid = game.snapshot(100.0 + hop / 2)
    (pulse,) = mid.pulses
    a, b = np.array(layout.position(client)), np.array(layout.position(w1))
    assert pulse.position is not None and np.allclose(pulse.position, (a + b) / 2)
    end = game.snapshot(t + 3.0)  # towers linger 5 s after their verdict
    (tower,) = end.towers
    assert tower.status is TrialStatus.VERIFIED and tower.slashed == (liar,)
    assert (tower.agreeing, tower.groups) == (2, 2)
    assert end.district(liar).fallen and end.slashings == 1
    assert [end.district(w).floors for w in (w1, w2, w3)] == [2, 2, 2]
    assert end.district(w3).efficiency < end.district(w2).efficiency
    assert end.total_credits_mc == 6000
