"""Checks and orderings of incoming events: slashing evidence, health order, event times, map keys."""

from __future__ import annotations

from hive_core.events import NODE_ID_BYTES, HealthUpdated, HopSent, Slashed
from hive_core.trust import EvidenceError, check_evidence

from .errors import GameError, GameEventError


def check_slashing(event: Slashed, required: bool) -> None:
    who = event.node_id.hex()[:12]
    ev = event.evidence
    if ev is None:
        if required:
            raise GameEventError(f"refused slashing of {who}: it carries no evidence")
        return
    try:
        offender = check_evidence(ev)
    except EvidenceError as exc:
        raise GameEventError(f"refused slashing of {who}: {exc}") from None
    if offender != event.node_id:
        raise GameEventError(f"refused slashing of {who}: the evidence is against "
                             f"{offender.hex()[:12]}")
    if ev.offender.session_id != event.session_id:
        raise GameEventError(f"refused slashing of {who}: the evidence is from another session")


def health_order(h: HealthUpdated) -> tuple[float, float, float, bool, float]:
    return (
        h.at,
        -1.0 if h.temperature_c is None else h.temperature_c,
        -1.0 if h.battery_pct is None else h.battery_pct,
        h.on_ac,
        h.stability,
    )


def pulse_order(p: HopSent) -> tuple[float, bytes, bytes, bytes, float, int]:
    return (p.sent_at, p.from_node, p.to_node, p.session_id, p.hop_time_s, p.nbytes)


def event_time(event: object) -> float:
    if isinstance(event, HopSent):
        return event.sent_at
    at = getattr(event, "at", None)
    if not isinstance(at, (int, float)):
        raise GameEventError(f"not a game event: {type(event).__name__}")
    return float(at)


def node_key(key: object) -> bytes:
    """A node id from a map key: the 20 raw bytes, or their hex form."""
    if isinstance(key, bytes) and len(key) == NODE_ID_BYTES:
        return key
    if isinstance(key, str):
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            raw = b""
        if len(raw) == NODE_ID_BYTES:
            return raw
    raise GameError(f"map key {key!r} is not a node id (20 bytes or their hex)")
