"""Signing the session's work receipts from what the asker itself measured and observed.

One receipt per worker and stage: the rows it served (prompt, answer and any rebuild or
audit it ran), the wall time the asker measured for its requests (never the time the
worker claims), and the device state the worker published in its Health record as this
asker fetched it (temperature, battery, AC, stability): a hot or battery-powered node is
paid less by the reward formula. A node without a published record is paid as one whose
sensors are unknown. A node slashed in this session gets nothing for it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from hive_core.base.health import HealthRecord
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt
from hive_core.events import ReceiptIssued
from hive_core.mesh.node import PeerUnavailable
from hive_core.protocol.inference import EndSession, ReceiptMsg

if TYPE_CHECKING:
    from hive_core.exec.client import HiveSession

STABLE_AFTER_S = 3600.0  # uptime after which a node counts as fully stable


def stability(health: HealthRecord | None, answered: float) -> float:
    """Uptime share (up to STABLE_AFTER_S) x the published success rate x the share of this
    session's requests the worker answered."""
    if health is None:
        return max(0.0, min(1.0, answered)) * 0.5
    up = min(1.0, health.uptime_s / STABLE_AFTER_S)
    return max(0.0, min(1.0, (0.5 + 0.5 * up) * health.success_rate * answered))


def receipt_for(s: HiveSession, node: bytes, layer_start: int, layer_end: int, part: Part,
                rows: float, wall_s: float, answered: float) -> WorkReceipt:
    health = s.client.health.get(node)
    on_ac = health.on_ac if health is not None else False
    return WorkReceipt.create(
        s.client.node.identity, session_id=s.session_id, worker_id=node,
        layer_start=layer_start, layer_end=layer_end, part=part,
        tokens=int(rows), wall_time_s=max(wall_s, 1e-6), timestamp_ms=int(time.time() * 1000),
        stability=stability(health, answered),
        temperature_c=health.temperature_c if health is not None else None,
        battery_pct=health.battery_pct if health is not None else None, on_ac=on_ac)


async def pay_session(s: HiveSession) -> list[WorkReceipt]:
    """Sign and send one receipt per worker and stage; free the caches of every node the
    session asked, paid or not (a slashed liar, a hedge's loser, a silent replica)."""
    receipts = []
    rep = s.client.reputation
    for st in s.stages:
        for node, (rows, wall_s) in st.work.items():
            if rows <= 0 or (node, s.session_id) in rep.forfeits or node in rep.slashed:
                continue
            if s.client.node.peers.best(node) is None:
                continue
            # A node dropped on the way (gone, silent) served less reliably than one that stayed.
            answered = 0.5 if node in st.failed and node not in st.nodes else 1.0
            r = receipt_for(s, node, st.stage.start, st.stage.end, st.stage.part, rows, wall_s,
                            answered)
            receipts.append(r)
            s.client.emit(ReceiptIssued(r, time.monotonic()))
            try:
                await s.client.node.send(node, ReceiptMsg(bytes(r)))
            except (PeerUnavailable, ConnectionError):
                pass
    # After the receipts: a server keeps a receipt only for a session it served.
    for node in sorted(s.asked | {n for st in s.stages for n in st.work}):
        if s.client.node.peers.best(node) is None:
            continue  # its caches went with the link
        try:
            await s.client.node.send(node, EndSession(s.session_id))
        except (PeerUnavailable, ConnectionError):
            pass
    return receipts
