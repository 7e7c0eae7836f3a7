"""Hive events: every constructor refuses malformed fields with a clear EventError."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hive_core.base.stage import Part
from hive_core.events import (
    EventError,
    EventKind,
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

A, B = b"a" * 20, b"b" * 20
S = b"s" * 16


def test_valid_events_carry_their_kind() -> None:
    events: list[HiveEvent] = [
        StageStarted(S, A, 0, 10, Part.ATTENTION, 1.0),
        HopSent(S, A, B, 1.0, 0.02, 4096),
        ReplicaAnswered(S, 3, A, b"root", 1.0),
        Verified(S, 3, (A, B), 1.0),
        Slashed(S, 3, B, "answer outside tolerance", 1.0),
        HealthUpdated(A, 55.0, 80.0, False, 0.99, 1.0),
        NodeLeft(A, 1.0),
    ]
    assert [e.kind for e in events] == [
        EventKind.STAGE_STARTED,
        EventKind.HOP_SENT,
        EventKind.REPLICA_ANSWERED,
        EventKind.VERIFIED,
        EventKind.SLASHED,
        EventKind.HEALTH_UPDATED,
        EventKind.NODE_LEFT,
    ]
    assert ReplicaAnswered(S, 3, A, b"root", 1.0).quorum == 2
    with pytest.raises(AttributeError):
        events[0].at = 2.0  # type: ignore[misc, union-attr]


VALID: dict[type, dict[str, Any]] = {
    StageStarted: {"session_id": S, "node_id": A, "layer_start": 0, "layer_end": 1,
                   "part": Part.FULL, "at": 0.0},
    HopSent: {"session_id": S, "from_node": A, "to_node": B, "sent_at": 0.0,
              "hop_time_s": 0.1, "nbytes": 1},
    ReplicaAnswered: {"session_id": S, "step": 0, "node_id": A, "digest": b"r", "at": 0.0},
    Verified: {"session_id": S, "step": 0, "agreeing": (A,), "at": 0.0},
    Slashed: {"session_id": S, "step": 0, "node_id": A, "reason": "bad", "at": 0.0},
    HealthUpdated: {"node_id": A, "temperature_c": None, "battery_pct": None, "on_ac": True,
                    "stability": 1.0, "at": 0.0},
    NodeLeft: {"node_id": A, "at": 0.0},
}


@pytest.mark.parametrize(
    ("cls", "change", "message"),
    [
        (StageStarted, {"node_id": b"short"}, "node_id must be 20 bytes"),
        (StageStarted, {"layer_start": 5, "layer_end": 5}, r"bad layer span \[5, 5\)"),
        (StageStarted, {"part": 7}, "part must be a Part"),
        (StageStarted, {"session_id": b""}, "session_id must be 1..32 bytes"),
        (HopSent, {"to_node": A}, "two different nodes"),
        (HopSent, {"hop_time_s": 0.0}, "hop_time_s must be > 0"),
        (HopSent, {"sent_at": math.nan}, "sent_at must be a finite time"),
        (HopSent, {"nbytes": -1}, "nbytes must be an integer >= 0"),
        (ReplicaAnswered, {"step": -1}, "step must be an integer >= 0"),
        (ReplicaAnswered, {"digest": b""}, "digest must be 1..64 bytes"),
        (ReplicaAnswered, {"quorum": 0}, "quorum must be in"),
        (Verified, {"agreeing": ()}, "non-empty tuple"),
        (Verified, {"agreeing": [A]}, "non-empty tuple"),
        (Verified, {"agreeing": (A, b"x")}, "agreeing node must be 20 bytes"),
        (Slashed, {"reason": "x" * 300}, "reason must be a string"),
        (HealthUpdated, {"temperature_c": 400.0}, "temperature_c out of range"),
        (HealthUpdated, {"battery_pct": 101.0}, r"battery_pct must be in \[0, 100\]"),
        (HealthUpdated, {"stability": 1.5}, r"stability must be in \[0, 1\]"),
        (NodeLeft, {"at": -1.0}, "at must be a finite time >= 0"),
    ],
)
def test_malformed_events_are_refused(cls: type, change: dict[str, Any], message: str) -> None:
    cls(**VALID[cls])  # the base is valid: only the change is refused
    with pytest.raises(EventError, match=message):
        cls(**{**VALID[cls], **change})


def test_receipt_event_needs_a_receipt() -> None:
    with pytest.raises(EventError, match="must be a WorkReceipt"):
        ReceiptIssued(b"not a receipt", 0.0)  # type: ignore[arg-type]
