"""Game state's work view: layer spans, step times, queues, link rates, sessions' askers and rates."""

from __future__ import annotations

import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.events import (
    HopSent,
    ReceiptIssued,
    ReplicaAnswered,
    StageStarted,
    Verified,
    trial_id,
)
from world.game import GameState
from world.game.traffic import RATE_WINDOW_S

ASKER = Identity.from_seed(b"\x01" * 32)
Q, FAST, SLOW = ASKER.node_id, b"f" * 20, b"s" * 20
S = b"session-0000001!"


def trial(step: int, start: int = 0) -> int:
    return trial_id(step, start, Part.FULL)


def asker_run(game: GameState, steps: int, fast_s: float, slow_s: float, t0: float = 10.0) -> float:
    """What an asker reports for a 2-stage pipeline: each request once answered (a hop with
    its round trip), a StageStarted after a node's first answer, the replica's answer."""
    t = t0
    for step in range(steps):
        for node, start, took in ((FAST, 0, fast_s), (SLOW, 15, slow_s)):
            game.apply(HopSent(S, Q, node, t, took / 2, 2304), now=t + took)
            t += took
            if step == 0:
                game.apply(StageStarted(S, node, start, start + 15, Part.FULL, t), now=t)
            game.apply(ReplicaAnswered(S, trial(step, start), node, b"r", t), now=t)
            game.apply(Verified(S, trial(step, start), (node,), t), now=t)
    return t


def test_an_askers_reports_give_spans_step_times_and_the_slowest_node() -> None:
    game = GameState()
    end = asker_run(game, steps=12, fast_s=0.010, slow_s=0.040)
    snap = game.snapshot(end)
    work = {w.node_id: w for w in snap.work}
    assert work[FAST].spans == ((0, 15, Part.FULL),) and work[SLOW].spans == ((15, 30, Part.FULL),)
    assert snap.n_layers == 30
    assert work[FAST].step_ms == pytest.approx(10.0) and work[SLOW].step_ms == pytest.approx(40.0)
    assert work[FAST].answered == work[SLOW].answered == 12
    # An asker reports a request once answered: nothing is queued anywhere.
    assert work[FAST].queued == work[SLOW].queued == 0
    assert work[FAST].verified == work[SLOW].verified == 12
    (session,) = snap.sessions
    assert session.asker == Q and session.verified == 24 and session.steps == 11
    # One token per step: 11 decode steps over the 10 step periods between the first and last.
    assert session.tokens_per_s == pytest.approx(1.0 / 0.05, rel=0.01)


def test_without_attested_steps_the_decode_rate_comes_from_the_requests() -> None:
    """Single replicas attest nothing: a spectator still reads the rate off the requests each
    worker took (one per decode step), the prompt's first request left out."""
    game = GameState()
    for k in range(11):  # a step every 40 ms after a slow prompt
        t = 10.0 + (0.5 if k else 0.0) + 0.04 * k
        for node in (FAST, SLOW):
            game.apply(HopSent(S, Q, node, t, 0.005, 100), now=t + 0.01)
    (session,) = game.snapshot(11.0).sessions
    assert session.asker == Q and session.tokens_per_s == pytest.approx(25.0)


def test_a_live_servers_reports_give_service_time_and_queued_work() -> None:
    """A server reports taking each request (StageStarted) and answering it (a hop): the
    time between is its step time, queueing included; requests not answered yet are queued."""
    game = GameState()
    t = 10.0
    for k in range(5):  # five requests arrive within 4 ms; it answers one every 30 ms
        game.apply(StageStarted(S, SLOW, 0, 15, Part.FULL, t + 0.001 * k), now=t)
    for k in range(3):
        done = t + 0.03 * (k + 1)
        # the link's own round trip is 2 ms: the hop says so, the queue made the rest
        game.apply(HopSent(S, Q, SLOW, done - 0.002, 0.001, 2304), now=done)
    (work,) = game.snapshot(t + 0.1).work
    assert work.queued == 2
    # first taken, first answered: 30, 59 and 88 ms from taking to answering, queue included
    assert work.step_ms == pytest.approx(59.0)
    # A start reported after the answer (an asker's report of it) is not queued work.
    game2 = GameState()
    game2.apply(HopSent(S, Q, FAST, 1.0, 0.005, 10), now=1.01)
    game2.apply(StageStarted(S, FAST, 0, 15, Part.FULL, 1.011), now=1.1)
    (work2,) = game2.snapshot(1.2).work
    assert work2.queued == 0 and work2.step_ms == pytest.approx(10.0)


def test_link_rates_count_hops_per_second_in_the_window() -> None:
    game = GameState()
    for k in range(20):  # 4 hops/s to FAST for 5 s, 1 hop/s to SLOW
        game.apply(HopSent(S, Q, FAST, 10.0 + 0.25 * k, 0.001, 10), now=15.0)
        if k % 4 == 0:
            game.apply(HopSent(S, Q, SLOW, 10.0 + 0.25 * k, 0.001, 10), now=15.0)
    rates = {(f.src, f.dst): f.rate_hz for f in game.snapshot(14.99).flows}
    assert rates[(Q, FAST)] == pytest.approx(20 / RATE_WINDOW_S)
    assert rates[(Q, SLOW)] == pytest.approx(5 / RATE_WINDOW_S)
    later = {(f.src, f.dst): f.rate_hz for f in game.snapshot(30.0).flows}
    assert later[(Q, FAST)] == 0.0  # traffic stopped: the road goes quiet


def test_receipts_count_tokens_served_once() -> None:
    game = GameState()
    r = WorkReceipt.create(ASKER, session_id=S, worker_id=FAST, layer_start=0, layer_end=15,
                           part=Part.FULL, tokens=120, wall_time_s=1.0, timestamp_ms=1,
                           stability=1.0, temperature_c=None, battery_pct=None, on_ac=True)
    for _ in range(3):
        game.apply(ReceiptIssued(r, 5.0), now=5.0)
    (work,) = game.snapshot(6.0).work
    assert work.tokens == 120
