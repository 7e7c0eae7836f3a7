"""Who serves what and how fast: layer spans, step times, queues, hop rates and live sessions.

Folded from the same hive events as the rest of the game (`GameState` calls `apply` under
its lock and reads the snapshots when it draws). Like the rest of the game state, the result
does not depend on the order events arrive in, nor on an event arriving twice: everything is
kept as sets of events and derived when read.

- A node's layer spans are those `StageStarted` reported for it.
- A node's step time is the median over its last `STEP_SAMPLES` answered requests (hops to
  it): the asker's measured round trip of the request (`2 * hop_time_s`, compute included),
  or, where the server itself reported taking the request (`StageStarted` on a live feed),
  the time from taking it to answering, queueing included, if that is longer.
- Requests a server reported taking and has not answered yet are its queue (live feeds only:
  an asker reports a node's start once, after its first answer, and such a report is told
  apart by coming after that answer).
- A link's rate is its hops per second over the last `RATE_WINDOW_S`.
- A session's asker is the node most of its hops come from; its decode rate is the stage
  steps it completed per second (one step per generated token), read from replica answers,
  verdicts and slashings, whose trial ids carry the step, or, where none are reported, from
  the requests its busiest worker took (one per step; the first, the prompt's, left out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hive_core.base.stage import Part
from hive_core.events import (
    HiveEvent,
    HopSent,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
    trial_fields,
)

from .snapshot import FlowSnapshot, SessionSnapshot, WorkSnapshot

STEP_SAMPLES = 16  # answered requests a node's step time is the median of
RATE_WINDOW_S = 10.0  # hop rates count the hops sent in this window (an answer's traffic stays readable a while after it)
PENDING_S = 30.0  # a request unanswered this long is no longer counted as queued
READ_EVERY_S = 0.2  # a read is reused this long while no event came
FRESH_S = 0.05  # and this long even if events came (a busy hive reports every frame)
KEEP = 256  # hops and starts kept per node (the newest), and hops per link
MAX_SESSIONS = 64  # sessions remembered (the least recently active is forgotten)
MAX_STEPS = 4096  # steps remembered per session, trials per node


@dataclass
class _Work:
    spans: set[tuple[int, int, Part]] = field(default_factory=set)
    hops: set[HopSent] = field(default_factory=set)  # requests answered (newest KEEP)
    starts: set[tuple[bytes, float]] = field(default_factory=set)  # (session, taken at)
    answered: set[HopSent] = field(default_factory=set)  # every request, for the count
    tokens: int = 0  # tokens pushed through its stages, from verified receipts
    verified: set[tuple[bytes, int]] = field(default_factory=set)  # (session, trial) accepted


@dataclass
class _Session:
    hops: set[HopSent] = field(default_factory=set)
    steps: dict[int, float] = field(default_factory=dict)  # decode step -> first seen at
    verified: set[int] = field(default_factory=set)  # trial ids verified
    first_at: float = float("inf")
    last_at: float = float("-inf")

    def saw(self, at: float) -> None:
        self.first_at, self.last_at = min(self.first_at, at), max(self.last_at, at)


def _newest(items: set[Any], key: Callable[[Any], Any], keep: int = KEEP) -> None:
    """Trim `items` to its `keep` newest by `key` (a deterministic order)."""
    if len(items) > 2 * keep:
        for old in sorted(items, key=key)[:-keep]:
            items.discard(old)


def _hop_key(h: HopSent) -> tuple[float, bytes, bytes, bytes, float, int]:
    return (h.sent_at, h.from_node, h.to_node, h.session_id, h.hop_time_s, h.nbytes)


class Traffic:
    """The work part of the game state (not thread-safe: `GameState` holds its lock)."""

    def __init__(self) -> None:
        self._work: dict[bytes, _Work] = {}
        self._links: dict[tuple[bytes, bytes], set[HopSent]] = {}
        self._sessions: dict[bytes, _Session] = {}
        self.n_layers = 0  # the deepest layer end any stage reported: the model's depth
        self._version = 0  # bumped by every event: the cache below is keyed by it
        self._cache: tuple[tuple[int, float], tuple[tuple[WorkSnapshot, ...],
                           tuple[FlowSnapshot, ...], tuple[SessionSnapshot, ...]]] | None = None

    def apply(self, event: HiveEvent) -> None:
        """Fold one event in (a receipt must be passed once: `GameState` keeps the ids)."""
        self._version += 1
        if isinstance(event, StageStarted):
            w = self._node(event.node_id)
            w.spans.add((event.layer_start, event.layer_end, event.part))
            self.n_layers = max(self.n_layers, event.layer_end)
            w.starts.add((event.session_id, event.at))
            _newest(w.starts, lambda s: (s[1], s[0]))
        elif isinstance(event, HopSent):
            w = self._node(event.to_node)
            w.hops.add(event)
            _newest(w.hops, _hop_key)
            if len(w.answered) < 64 * KEEP:
                w.answered.add(event)
            link = self._links.setdefault((event.from_node, event.to_node), set())
            link.add(event)
            _newest(link, _hop_key)
            s = self._session(event.session_id)
            if len(s.hops) < MAX_STEPS:
                s.hops.add(event)
            s.saw(event.sent_at)
            s.saw(event.sent_at + 2 * event.hop_time_s)
        elif isinstance(event, (ReplicaAnswered, Slashed)):
            self._step(event.session_id, event.step, event.at)
        elif isinstance(event, Verified):
            s = self._step(event.session_id, event.step, event.at)
            s.verified.add(event.step)
            for node in event.agreeing:
                w = self._node(node)
                if len(w.verified) < 64 * MAX_STEPS:
                    w.verified.add((event.session_id, event.step))
        elif isinstance(event, ReceiptIssued):
            self._node(event.receipt.worker_id).tokens += event.receipt.tokens

    def _node(self, node: bytes) -> _Work:
        w = self._work.get(node)
        if w is None:
            w = self._work[node] = _Work()
        return w

    def _session(self, session_id: bytes) -> _Session:
        s = self._sessions.get(session_id)
        if s is None:
            if len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[min(self._sessions, key=lambda k: (self._sessions[k].last_at, k))]
            s = self._sessions[session_id] = _Session()
        return s

    def _step(self, session_id: bytes, trial: int, at: float) -> _Session:
        s = self._session(session_id)
        step = trial_fields(trial)[0]
        if step in s.steps or len(s.steps) < MAX_STEPS:
            s.steps[step] = min(s.steps.get(step, at), at)
        s.saw(at)
        return s

    # -- reading ----------------------------------------------------------------------------

    def read(self, now: float) -> tuple[tuple[WorkSnapshot, ...], tuple[FlowSnapshot, ...],
                                        tuple[SessionSnapshot, ...]]:
        """Work, flows and sessions at `now`. A frame loop reads this every frame: the last answer
        is reused while the clock is less than `READ_EVERY_S` past it and no event came, or less
        than `FRESH_S` past it whatever came."""
        cached = self._cache
        if cached is not None:
            version, at = cached[0]
            if at <= now < at + (READ_EVERY_S if version == self._version else FRESH_S):
                return cached[1]
        self._cache = ((self._version, now), (self.work(now), self.flows(now), self.sessions(now)))
        return self._cache[1]

    def work(self, now: float) -> tuple[WorkSnapshot, ...]:
        return tuple(self._work_of(node, self._work[node], now) for node in sorted(self._work))

    @staticmethod
    def _work_of(node: bytes, w: _Work, now: float) -> WorkSnapshot:
        by_session: dict[bytes, list[tuple[float, float]]] = {}
        for h in w.hops:
            if h.sent_at <= now:
                by_session.setdefault(h.session_id, []).append((h.sent_at + 2 * h.hop_time_s,
                                                                2 * h.hop_time_s))
        starts: dict[bytes, list[float]] = {}
        for sid, at in w.starts:
            if at <= now:
                starts.setdefault(sid, []).append(at)
        samples: list[tuple[float, float]] = []  # (answered at, took)
        queued = 0
        for sid in set(by_session) | set(starts):
            ends = sorted(by_session.get(sid, []))
            taken = sorted(starts.get(sid, []))
            if ends and taken and taken[0] >= ends[0][0]:
                taken = []  # an asker's report, after the answer: not the server's own
            k = 0
            for end, rtt in ends:  # first taken, first answered
                if k < len(taken) and taken[k] <= end:
                    samples.append((end, max(rtt, end - taken[k])))
                    k += 1
                else:
                    samples.append((end, rtt))
            queued += sum(1 for t in taken[k:] if t >= now - PENDING_S)
        recent = sorted(took for _, took in sorted(samples)[-STEP_SAMPLES:])
        step_ms = recent[len(recent) // 2] * 1000.0 if recent else None
        answered = sum(1 for h in w.answered if h.sent_at <= now)
        return WorkSnapshot(node, tuple(sorted(w.spans)), step_ms, answered, queued, w.tokens,
                            len(w.verified))

    def flows(self, now: float) -> tuple[FlowSnapshot, ...]:
        out = []
        for (a, b), hops in sorted(self._links.items()):
            recent = sum(1 for h in hops if now - RATE_WINDOW_S < h.sent_at <= now)
            out.append(FlowSnapshot(a, b, recent / RATE_WINDOW_S))
        return tuple(out)

    def sessions(self, now: float) -> tuple[SessionSnapshot, ...]:
        out = []
        for sid, s in sorted(self._sessions.items(), key=lambda kv: (kv[1].first_at, kv[0])):
            if s.first_at > now:
                continue
            counts: dict[bytes, int] = {}
            sent: dict[bytes, list[float]] = {}  # worker -> when this session's hops reached it
            for h in s.hops:
                if h.sent_at <= now:
                    counts[h.from_node] = counts.get(h.from_node, 0) + 1
                    sent.setdefault(h.to_node, []).append(h.sent_at)
            asker = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else None
            seen = sorted(at for step, at in s.steps.items() if at <= now and step > 0)
            if len(seen) < 2 and sent:
                # No trial ids (replicas not attested): every decode step sends one request to
                # each worker of the route, so the busiest worker's requests keep the step time.
                seen = sorted(max(sorted(sent.items()), key=lambda kv: len(kv[1]))[1])[1:]
            rate = (len(seen) - 1) / (seen[-1] - seen[0]) if len(seen) >= 2 and seen[-1] > seen[0] else 0.0
            out.append(SessionSnapshot(sid, asker, len(seen), rate, len(s.verified), s.first_at,
                                       s.last_at))
        return tuple(out)
