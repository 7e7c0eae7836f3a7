"""Where a node's hive events go: one log line each, then every consumer (game, feed).

Every emitter (the asker's client and verifier, a shard server) hands typed events to an
`EventSink`. The sink logs each one on the `hive_core.events` logger (`-v` shows them on a
headless node) and calls its consumers; a failing consumer is logged and skipped, so a bad
game or feed hook never breaks inference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from hive_core.base.ids import short
from hive_core.events.types import (
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

logger = logging.getLogger("hive_core.events")

Consumer = Callable[[HiveEvent], None]


def describe(event: HiveEvent) -> str:
    """One log line for `event`: its kind and the ids and numbers that matter."""
    name = type(event).__name__
    if isinstance(event, StageStarted):
        what = f"{short(event.node_id)} layers {event.layer_start}-{event.layer_end - 1} {event.part.label}"
    elif isinstance(event, HopSent):
        what = (f"{short(event.from_node)} -> {short(event.to_node)} {event.nbytes} B "
                f"in {event.hop_time_s * 1000:.1f} ms")
    elif isinstance(event, ReplicaAnswered):
        what = f"{short(event.node_id)} trial {event.step} root {event.digest.hex()[:12]}"
    elif isinstance(event, Verified):
        what = f"trial {event.step} by {', '.join(short(n) for n in event.agreeing)}"
    elif isinstance(event, Slashed):
        proof = "with evidence" if event.evidence is not None else "without evidence"
        what = f"{short(event.node_id)} trial {event.step}: {event.reason} ({proof})"
    elif isinstance(event, ReceiptIssued):
        r = event.receipt
        what = f"{short(r.client_id)} -> {short(r.worker_id)} {r.tokens} tokens"
    elif isinstance(event, HealthUpdated):
        what = f"{short(event.node_id)} stability {event.stability:.2f}"
    elif isinstance(event, NodeLeft):
        what = short(event.node_id)
    else:  # pragma: no cover - HiveEvent is closed
        what = repr(event)
    session = getattr(event, "session_id", None)
    return f"{name} {what}" + (f" (session {session.hex()[:8]})" if session else "")


class EventSink:
    """Logs each event, then hands it to every consumer in turn."""

    def __init__(self, consumers: Iterable[Consumer | None] = ()) -> None:
        self.consumers: list[Consumer] = [c for c in consumers if c is not None]

    def add(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)

    def __call__(self, event: HiveEvent) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s", describe(event))
        for consumer in list(self.consumers):
            try:
                consumer(event)
            except Exception:  # a consumer's bug must never break inference
                logger.exception("event consumer failed on %s", type(event).__name__)
