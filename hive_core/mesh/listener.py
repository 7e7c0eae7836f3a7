"""A listening node's WebSocket side: accept, authenticate, admit into a budget, sweep idle links.

The WebSocket server bounds handshakes (see `hive_core.mesh.admission`); this class takes the
connections that proved a key and admits them into a lane of the authenticated-link budget:
keys the node knows into the reserved share, others into the general share, evicting the
link idle longest when full, else into a brief slot, else refusing with OVERLOADED. A sweep
closes links that sent nothing but pings for `idle_s` (direct LAN links to known peers stay
until the budget needs their place) and brief links after `brief_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hive_core.mesh.admission import Admission, AdmissionConfig, Lane, decide
from hive_core.mesh.lan import near
from hive_core.mesh.node import Node
from hive_core.mesh.peers import Link
from hive_core.mesh.wschannel import WsChannel, WsServer
from hive_core.protocol import ErrorCode, HandshakeError

logger = logging.getLogger(__name__)


@dataclass
class _Admitted:
    """One authenticated WebSocket link this node accepted, and its lane."""

    link: Link
    lane: Lane
    source: str  # the IP address it came from
    since: float = field(default_factory=time.monotonic)

    @property
    def last_active(self) -> float | None:
        return self.link.last_active


@dataclass
class ListenerStats:
    """What admission did, for tests and logs."""

    admitted: dict[str, int] = field(default_factory=lambda: {lane.value: 0 for lane in Lane})
    refused: int = 0  # authenticated keys turned away (every budget full, nothing idle)
    evicted: int = 0  # idle links closed to make room
    idle_closed: int = 0  # links closed for sending nothing but pings for idle_s
    brief_closed: int = 0  # brief links closed when their time was up


class Listener:
    """Serves WebSocket joiners and status clients for `node`; `is_known(node_id)` says which
    keys may use the reserved share (the node had a data channel with them)."""

    def __init__(self, node: Node, config: AdmissionConfig,
                 is_known: Callable[[bytes], bool], *, lan: bool = False) -> None:
        self.node = node
        self.config = config
        self.is_known = is_known
        self.lan = lan  # a known peer dialling from a near address is a direct LAN link
        self.server = WsServer(self._accept, config)
        self.links: dict[bytes, _Admitted] = {}  # peer id -> its accepted WebSocket link
        self.stats = ListenerStats()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, listen: str) -> str:
        url = await self.server.start(listen)
        self._sweeper = self.node.spawn(self._sweep(), name="ws sweep")
        return url

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        await self.server.stop()

    async def _accept(self, channel: WsChannel) -> None:
        """Authenticate a joiner (or a status client), admit it once it speaks, serve it
        until it leaves.

        Honest clients send a request right after their Hello (a FindNode to join, a status
        request); a key that proves itself and then says nothing stays a handshake (bounded
        per source, dropped at the deadline) and never takes an admitted link's place.
        """
        try:
            link = await self.node.attach(channel, kind="ws", mode="first")
        except HandshakeError:
            return
        link.on_first_active = lambda: self._admit(link, channel)
        try:
            if link.reader is not None:
                await asyncio.gather(link.reader, return_exceptions=True)
        finally:
            entry = self.links.get(link.node_id)
            if entry is not None and entry.link is link:
                del self.links[link.node_id]

    def _admit(self, link: Link, channel: WsChannel) -> bool:
        """Admit `link` into a lane on its first request (evicting a link to make room), or
        refuse it with OVERLOADED; False: its request is dropped."""
        peer_id = link.node_id
        held = [e for pid, e in self.links.items() if pid != peer_id]  # its old link is replaced
        verdict = decide(self.config, self.is_known(peer_id), held, time.monotonic())
        if not isinstance(verdict, Admission):
            self.stats.refused += 1
            logger.warning("%s: refused %s from %s: %s", self.node, peer_id.hex()[:12],
                           channel.peer, verdict)
            self.node.spawn(self.node.refuse_link(link, ErrorCode.OVERLOADED, verdict),
                            name="ws refuse")
            return False
        if verdict.evict is not None:
            assert isinstance(verdict.evict, _Admitted)
            self._close(verdict.evict, "evicted: idle while the node is full")
            self.stats.evicted += 1
        self.server.authenticated(channel)
        link.lan = self.lan and self.is_known(peer_id) and near(channel.source)
        self.links[peer_id] = _Admitted(link, verdict.lane, channel.source)
        self.stats.admitted[verdict.lane.value] += 1
        return True

    def _close(self, entry: _Admitted, reason: str) -> None:
        if self.links.get(entry.link.node_id) is entry:
            del self.links[entry.link.node_id]
        self.node.spawn(self.node.refuse_link(entry.link, ErrorCode.OVERLOADED, reason),
                        name="ws close")

    async def _sweep(self) -> None:
        period = min(self.config.idle_s, self.config.brief_s) / 4
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for entry in list(self.links.values()):
                if entry.lane is Lane.BRIEF and now - entry.since > self.config.brief_s:
                    self.stats.brief_closed += 1
                    self._close(entry, f"brief slot of {self.config.brief_s:g} s is over")
                elif (not entry.link.lan
                      and now - (entry.last_active or entry.since) > self.config.idle_s):
                    self.stats.idle_closed += 1
                    self._close(entry, f"idle for {self.config.idle_s:g} s")
