"""The live hive the web page draws: districts at their map positions, each node's layers,
weights, health and tok/s, and the hive events (tensor pulses, verdicts, slashings, receipts)
as they happen, pushed to every page's WebSocket.

Two sources feed it: the status of the hive (its signed records, polled: nodes, roles,
health, measured RTTs, which the injected `layout` turns into positions, MDS in the app)
and the events this server's own asker emits while it answers. Events are sent in batches
(`flush_s`); each page has a bounded queue, so a slow page loses batches (counted), never
slows answering.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hive_core.api.engine import Engine
from hive_core.events import (
    HiveEvent,
    HopSent,
    NodeLeft,
    ReceiptIssued,
    ReplicaAnswered,
    Slashed,
    StageStarted,
    Verified,
)

logger = logging.getLogger(__name__)

Layout = Callable[[Sequence[str], np.ndarray], dict[str, tuple[float, ...]]]
Status = Callable[[], Awaitable[dict[str, Any]]]
MAX_BATCH = 256  # events in one message to a page; more in one flush are dropped (counted)
PAGE_QUEUE = 32  # messages waiting per page


def ring_layout(ids: Sequence[str], rtt: np.ndarray) -> dict[str, tuple[float, ...]]:
    """Nodes evenly on a circle: where no RTT was measured, no position can say more."""
    n = len(ids)
    return {nid: (math.cos(2 * math.pi * k / n), math.sin(2 * math.pi * k / n))
            for k, nid in enumerate(sorted(ids))}


@dataclass
class NodeView:
    """One district as the page draws it."""

    id: str
    role: str = "node"
    layers: list[list[int]] = field(default_factory=list)
    weights: str | None = None
    health: dict[str, Any] | None = None
    pos: tuple[float, ...] = (0.0, 0.0)
    tok_s: float | None = None  # tokens per compute second, from its latest receipt
    state: str = "ok"  # "ok", "slashed" or "left"
    me: bool = False  # this server's own asker

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "layers": self.layers, "weights": self.weights,
                "health": self.health, "pos": [round(p, 4) for p in self.pos[:2]],
                "tok_s": None if self.tok_s is None else round(self.tok_s, 1),
                "state": self.state, "me": self.me}


def event_dict(event: HiveEvent) -> dict[str, Any] | None:
    """The page's form of a hive event (None: not drawn)."""
    if isinstance(event, HopSent):
        return {"t": "hop", "from": event.from_node.hex(), "to": event.to_node.hex(),
                "ms": round(event.hop_time_s * 1000, 3), "bytes": event.nbytes}
    if isinstance(event, StageStarted):
        return {"t": "stage", "node": event.node_id.hex(),
                "layers": [event.layer_start, event.layer_end], "part": event.part.name.lower()}
    if isinstance(event, ReplicaAnswered):
        return {"t": "replica", "node": event.node_id.hex(), "quorum": event.quorum}
    if isinstance(event, Verified):
        return {"t": "verified", "nodes": [n.hex() for n in event.agreeing]}
    if isinstance(event, Slashed):
        return {"t": "slashed", "node": event.node_id.hex(), "reason": event.reason}
    if isinstance(event, ReceiptIssued):
        r = event.receipt
        return {"t": "receipt", "node": r.worker_id.hex(), "tokens": r.tokens,
                "tok_s": round(r.tokens / max(r.wall_time_s, 1e-6), 1)}
    if isinstance(event, NodeLeft):
        return {"t": "left", "node": event.node_id.hex()}
    return None


class LiveHub:
    """Folds status and events into `NodeView`s and pushes them to the pages subscribed."""

    def __init__(self, engine: Engine, *, model: str, status: Status | None = None,
                 layout: Layout | None = None, poll_s: float = 5.0, flush_s: float = 0.1) -> None:
        self.engine, self.model, self.status, self.layout = engine, model, status, layout
        self.poll_s, self.flush_s = poll_s, flush_s
        self.nodes: dict[str, NodeView] = {}
        self.links: list[tuple[str, str, float]] = []
        self.pages: set[asyncio.Queue[dict[str, Any]]] = set()
        self.pending: list[dict[str, Any]] = []
        self.dropped = 0  # events or messages a page did not get
        self.events = 0
        self.answers = {"count": 0, "tokens": 0, "last_tok_s": 0.0}
        self.status_error: str | None = None
        self._view: dict[str, Any] | None = None  # the latest status view
        self._tasks: list[asyncio.Task[None]] = []

    # -- inputs ---------------------------------------------------------------------------

    def on_event(self, event: HiveEvent) -> None:
        """A hive event from this server's asker (called on the event loop's thread)."""
        doc = event_dict(event)
        if doc is None:
            return
        self.events += 1
        node = self.nodes.get(doc.get("node", ""))
        if node is not None:
            if doc["t"] == "slashed":
                node.state = "slashed"
            elif doc["t"] == "left":
                node.state = "left"
            elif doc["t"] == "receipt":
                node.tok_s = doc["tok_s"]
        if len(self.pending) < MAX_BATCH:
            self.pending.append(doc)
        else:
            self.dropped += 1

    def answered(self, tokens: int, tok_s: float, ttft_s: float, extension: dict[str, Any]) -> None:
        """An answer finished: its speed and verdict, for the page's header."""
        self.answers["count"] += 1
        self.answers["tokens"] += tokens
        self.answers["last_tok_s"] = round(tok_s, 1)
        self.pending.append({"t": "answer", "tokens": tokens, "tok_s": round(tok_s, 1),
                             "ttft_s": round(ttft_s, 3), "verified": extension.get("verified")})

    # -- the view -------------------------------------------------------------------------

    def refresh(self, view: dict[str, Any] | None) -> None:
        """Rebuild the districts from a status view (None: none) and the engine's route."""
        seen: dict[str, NodeView] = {}
        rtt_rows: dict[str, dict[str, float]] = {}
        if view is not None:
            for n in view.get("nodes", []):
                nid = str(n["id"])
                old = self.nodes.get(nid)
                seen[nid] = NodeView(nid, n.get("role", "node"), list(n.get("layers") or []),
                                     n.get("weights"), n.get("health"),
                                     tok_s=old.tok_s if old else None,
                                     state=old.state if old else "ok")
            rtt_rows = view.get("rtt_ms") or {}
        route = self.engine.describe()
        told = {nid for nid, node in seen.items() if node.layers}  # their own records say
        for stage in route.get("stages", []):
            for nid in stage["nodes"]:
                old = self.nodes.get(nid)
                node = seen.setdefault(nid, NodeView(
                    nid, "local" if route.get("mode") == "local" else "node",
                    tok_s=old.tok_s if old else None, state=old.state if old else "ok"))
                if nid not in told and stage["layers"] not in node.layers:
                    node.layers.append(stage["layers"])
                node.weights = node.weights or stage.get("weights")
        me = route.get("asker")
        if me:
            asker = seen.setdefault(me, NodeView(me))
            asker.role, asker.me = "asker", True
        ids = sorted(seen)
        self.links, rtt = self._links(ids, rtt_rows)
        positions = self._positions(ids, rtt)
        for nid, node in seen.items():
            node.pos = positions.get(nid, (0.0, 0.0))
        self.nodes = seen

    def _links(self, ids: list[str], rows: dict[str, dict[str, float]]
               ) -> tuple[list[tuple[str, str, float]], np.ndarray]:
        index = {nid: k for k, nid in enumerate(ids)}
        rtt = np.full((len(ids), len(ids)), np.nan)
        np.fill_diagonal(rtt, 0.0)
        for a, row in rows.items():
            for b, ms in (row or {}).items():
                if a in index and b in index and isinstance(ms, (int, float)) and 0 <= ms < 1e5:
                    rtt[index[a], index[b]] = float(ms)
        links = []
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                vals = [v for v in (rtt[i, j], rtt[j, i]) if np.isfinite(v)]
                if vals:
                    links.append((ids[i], ids[j], round(sum(vals) / len(vals), 3)))
        return links, rtt

    def _positions(self, ids: list[str], rtt: np.ndarray) -> dict[str, tuple[float, ...]]:
        if not ids:
            return {}
        if len(ids) < 3 or self.layout is None or np.isfinite(rtt).sum() <= len(ids):
            return ring_layout(ids, rtt)
        try:
            return self.layout(ids, rtt)
        except ValueError as exc:  # a map that cannot be fitted yet: a ring until it can
            logger.info("map layout failed: %s", exc)
            return ring_layout(ids, rtt)

    def snapshot(self) -> dict[str, Any]:
        route = self.engine.describe()
        return {"type": "hive", "mode": self.engine.mode, "model": self.model,
                "nodes": [n.as_dict() for n in sorted(self.nodes.values(), key=lambda n: n.id)],
                "links": [list(link) for link in self.links], "route": route.get("stages", []),
                "answers": dict(self.answers), "status_error": self.status_error,
                "at": time.time()}

    # -- pages ----------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(PAGE_QUEUE)
        queue.put_nowait(self.snapshot())
        self.pages.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.pages.discard(queue)

    def _push(self, message: dict[str, Any]) -> None:
        for queue in list(self.pages):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1

    # -- running ------------------------------------------------------------------------

    async def poll_once(self) -> None:
        view = None
        if self.status is not None:
            try:
                view = self._view = await self.status()
                self.status_error = None
            except (ConnectionError, OSError, TimeoutError, ValueError) as exc:
                self.status_error = str(exc)
        self.refresh(view)
        self._push(self.snapshot())

    async def _poll(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.poll_s)

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            if self.pending:
                batch, self.pending = self.pending, []
                self._push({"type": "events", "events": batch})

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._poll()), asyncio.ensure_future(self._flush())]

    def route_changed(self) -> None:
        """The engine routed again: redraw now rather than at the next poll."""
        self.refresh(self._view)
        self._push(self.snapshot())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
