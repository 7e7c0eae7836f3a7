"""Hive events: typed reports of what the hive does, defined once for every consumer.

`types` holds the events (stage started, hop sent, replica answered, verified, slashed,
receipt issued, health updated, node left) and the trial id; `sink` is where emitters hand
them (logged, then passed to the game or the feed); `feed` is the one mapping to and from
the spectator feed's wire message.
"""

from hive_core.events.feed import EvidenceAssembler, from_feed, to_feed
from hive_core.events.sink import Consumer, EventSink, describe
from hive_core.events.types import (
    NODE_ID_BYTES,
    EventError,
    HealthUpdated,
    HiveEvent,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
    trial_fields,
    trial_id,
)
from hive_core.protocol.feed import EventKind

__all__ = [
    "NODE_ID_BYTES", "Consumer", "EventError", "EventKind", "EventSink", "EvidenceAssembler", "HealthUpdated",
    "HiveEvent", "HopSent", "NodeLeft", "ReceiptIssued", "ReplicaAnswered", "Slashed",
    "StageStarted", "Verified", "describe", "from_feed", "to_feed", "trial_fields", "trial_id",
]
