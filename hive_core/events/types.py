"""Hive events: what the inference path reports as it runs, as typed frozen dataclasses.

The asker's client and every shard server emit these (`EventSink`); a headless node logs
them, the game (`world.game.GameState`) folds them into what it draws, and a node's live
feed carries them to spectators (`hive_core.events.feed` is the one mapping to and from the
`FeedEvent` wire message). Constructors validate their fields and raise `EventError`, so a
bad event is refused where it is made, not when it is drawn.

Times (`at`, `sent_at`) are seconds on one monotonic clock shared by emitter and consumer
(`time.monotonic()` in a node; a spectator re-dates feed events on its own clock). Node
ids are the hive's 20-byte ids. A trial is one replicated computation, a stage step of a
session: the pair (`session_id`, `step`) where `step` is `trial_id(...)` of the stage step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from hive_core.base.ids import ID_BYTES
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.protocol.feed import EventKind
from hive_core.protocol.trust import SlashEvidence


class EventError(ValueError):
    """An event is malformed: wrong id length, negative time, bad range, wrong type."""


NODE_ID_BYTES = ID_BYTES
MAX_REASON_CHARS = 256
MAX_QUORUM = 64


def trial_id(step: int, layer_start: int, part: Part) -> int:
    """The trial number of one stage step: each stage of a decode step is a trial of its own.

    Invertible (`trial_fields`), so the feed can carry the step, layer and part as they are.
    """
    if step < 0 or not 0 <= layer_start <= 0xFFFF:
        raise EventError(f"no trial for step {step}, layer {layer_start}")
    return (step << 18) | (int(part) << 16) | layer_start


def trial_fields(trial: int) -> tuple[int, int, Part]:
    """Inverse of `trial_id`: (step, layer_start, part)."""
    try:
        return trial >> 18, trial & 0xFFFF, Part((trial >> 16) & 0x3)
    except ValueError:
        raise EventError(f"{trial} is not a trial id") from None


def _node(name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != NODE_ID_BYTES:
        raise EventError(f"{name} must be {NODE_ID_BYTES} bytes")


def _time(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EventError(f"{name} must be a finite time >= 0, got {value!r}")


def _session(value: bytes) -> None:
    if not isinstance(value, bytes) or not 1 <= len(value) <= 32:
        raise EventError("session_id must be 1..32 bytes")


def _step(value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise EventError(f"step must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class StageStarted:
    """A node began serving a stage (a layer range, one part) of a session."""

    kind: ClassVar[EventKind] = EventKind.STAGE_STARTED
    session_id: bytes
    node_id: bytes  # the worker serving the stage
    layer_start: int
    layer_end: int  # exclusive
    part: Part  # full block, attention (alpha) or MLP (beta)
    at: float

    def __post_init__(self) -> None:
        _session(self.session_id)
        _node("node_id", self.node_id)
        if not 0 <= self.layer_start < self.layer_end:
            raise EventError(f"bad layer span [{self.layer_start}, {self.layer_end})")
        if not isinstance(self.part, Part):
            raise EventError(f"part must be a Part, got {self.part!r}")
        _time("at", self.at)


@dataclass(frozen=True)
class HopSent:
    """A tensor went from one node to the next: drawn as a pulse along the link.

    `hop_time_s` is the measured one-way time of this hop (or the latest RTT / 2 when
    emitted before arrival); the pulse travels from `sent_at` to `sent_at + hop_time_s`.
    """

    kind: ClassVar[EventKind] = EventKind.HOP_SENT
    session_id: bytes
    from_node: bytes
    to_node: bytes
    sent_at: float
    hop_time_s: float
    nbytes: int  # payload size: the pulse's thickness

    def __post_init__(self) -> None:
        _session(self.session_id)
        _node("from_node", self.from_node)
        _node("to_node", self.to_node)
        if self.from_node == self.to_node:
            raise EventError("a hop must go between two different nodes")
        _time("sent_at", self.sent_at)
        if not isinstance(self.hop_time_s, (int, float)) or not (
            math.isfinite(self.hop_time_s) and self.hop_time_s > 0
        ):
            raise EventError(f"hop_time_s must be > 0, got {self.hop_time_s!r}")
        if not isinstance(self.nbytes, int) or self.nbytes < 0:
            raise EventError(f"nbytes must be an integer >= 0, got {self.nbytes!r}")


@dataclass(frozen=True)
class ReplicaAnswered:
    """One replica of a trial returned its output; `digest` is its Merkle root.

    Replicas whose answers agree within tolerance should carry the same digest (the
    trust layer's class of the answer), so the game can show answers converging.
    """

    kind: ClassVar[EventKind] = EventKind.REPLICA_ANSWERED
    session_id: bytes
    step: int
    node_id: bytes
    digest: bytes
    at: float
    quorum: int = 2  # agreeing answers the trial needs to pass: the tower's height

    def __post_init__(self) -> None:
        _session(self.session_id)
        _step(self.step)
        _node("node_id", self.node_id)
        if not isinstance(self.digest, bytes) or not 1 <= len(self.digest) <= 64:
            raise EventError("digest must be 1..64 bytes")
        _time("at", self.at)
        if not isinstance(self.quorum, int) or not 1 <= self.quorum <= MAX_QUORUM:
            raise EventError(f"quorum must be in [1, {MAX_QUORUM}], got {self.quorum!r}")


@dataclass(frozen=True)
class Verified:
    """The trial reached agreement: these replicas' answers were accepted."""

    kind: ClassVar[EventKind] = EventKind.VERIFIED
    session_id: bytes
    step: int
    agreeing: tuple[bytes, ...]  # node ids whose answers agreed (within tolerance)
    at: float

    def __post_init__(self) -> None:
        _session(self.session_id)
        _step(self.step)
        if not isinstance(self.agreeing, tuple) or not self.agreeing:
            raise EventError("agreeing must be a non-empty tuple of node ids")
        for node in self.agreeing:
            _node("agreeing node", node)
        _time("at", self.at)


@dataclass(frozen=True)
class Slashed:
    """A node was caught answering wrong (or forging) and lost stake: its district falls.

    `evidence` is the signed proof (`hive_core.trust`); `GameState` re-checks it before the
    district falls, and a state fed from the network refuses a slashing without it.
    """

    kind: ClassVar[EventKind] = EventKind.SLASHED
    session_id: bytes
    step: int
    node_id: bytes
    reason: str  # e.g. "answer outside tolerance of 2 agreeing replicas"
    at: float
    evidence: SlashEvidence | None = None  # the offender's and its witnesses' signed outputs

    def __post_init__(self) -> None:
        _session(self.session_id)
        _step(self.step)
        _node("node_id", self.node_id)
        if not isinstance(self.reason, str) or len(self.reason) > MAX_REASON_CHARS:
            raise EventError(f"reason must be a string of <= {MAX_REASON_CHARS} chars")
        _time("at", self.at)
        if self.evidence is not None and not isinstance(self.evidence, SlashEvidence):
            raise EventError("evidence must be a SlashEvidence")


@dataclass(frozen=True)
class ReceiptIssued:
    """A client signed a work receipt: its worker's credits grow (once per receipt).

    The game checks the signature itself and derives the credits with the economy's
    reward formula, so the amount drawn is the amount anyone can verify.
    """

    kind: ClassVar[EventKind] = EventKind.RECEIPT_ISSUED
    receipt: WorkReceipt
    at: float

    def __post_init__(self) -> None:
        if not isinstance(self.receipt, WorkReceipt):
            raise EventError("receipt must be a WorkReceipt")
        _time("at", self.at)


@dataclass(frozen=True)
class HealthUpdated:
    """A node's latest Health Vector fields: efficiency (heat, battery) dims its district."""

    kind: ClassVar[EventKind] = EventKind.HEALTH_UPDATED
    node_id: bytes
    temperature_c: float | None  # None: no sensor reported
    battery_pct: float | None  # None: no battery
    on_ac: bool
    stability: float  # uptime share over the Health Vector window, 0..1
    at: float

    def __post_init__(self) -> None:
        _node("node_id", self.node_id)
        t = self.temperature_c
        if t is not None and not (isinstance(t, (int, float)) and -50.0 <= t <= 150.0):
            raise EventError(f"temperature_c out of range: {t!r}")
        b = self.battery_pct
        if b is not None and not (isinstance(b, (int, float)) and 0.0 <= b <= 100.0):
            raise EventError(f"battery_pct must be in [0, 100], got {b!r}")
        s = self.stability
        if not (isinstance(s, (int, float)) and 0.0 <= s <= 1.0):
            raise EventError(f"stability must be in [0, 1], got {s!r}")
        _time("at", self.at)


@dataclass(frozen=True)
class NodeLeft:
    """A node left the hive (closed or declared dead): its district goes dark."""

    kind: ClassVar[EventKind] = EventKind.NODE_LEFT
    node_id: bytes
    at: float

    def __post_init__(self) -> None:
        _node("node_id", self.node_id)
        _time("at", self.at)


HiveEvent = (
    StageStarted
    | HopSent
    | ReplicaAnswered
    | Verified
    | Slashed
    | ReceiptIssued
    | HealthUpdated
    | NodeLeft
)
