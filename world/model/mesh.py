"""World sync over a hive node: one SyncProvider per data-channel peer, on label "crdt"."""

from __future__ import annotations

import logging
from typing import Any

from .city import City
from .provider import SyncProvider

log = logging.getLogger(__name__)
LABEL = "crdt"


class MeshSync:
    """Keeps `city` in sync with every peer `node` (a `hive_core.mesh.node.Node`) links to.

    Of two linked nodes, the one with the smaller id opens the "crdt" channel, so each
    pair runs exactly one channel; a lost link stops its provider, a new link starts one.
    """

    def __init__(self, node: Any, city: City, *, interval_s: float = 1.0) -> None:
        self.node = node
        self.city = city
        self.interval_s = interval_s
        self.providers: dict[bytes, SyncProvider] = {}  # peer node id -> provider

    def start(self) -> None:
        self.node.on_channel(LABEL, self._accept)
        self.node.on_link_up.append(self._link_up)
        self.node.on_link_lost.append(self._link_lost)
        for link in self.node.peers.rtc_links():
            self._link_up(link)

    async def stop(self) -> None:
        for hooks, cb in ((self.node.on_link_up, self._link_up),
                          (self.node.on_link_lost, self._link_lost)):
            if cb in hooks:
                hooks.remove(cb)
        providers, self.providers = list(self.providers.values()), {}
        for p in providers:
            await p.stop()

    def _link_up(self, link: Any) -> None:
        if link.rtc is None or link.node_id in self.providers:
            return
        if self.node.node_id < link.node_id:
            self.node.spawn(self._open(link.node_id), name="world-sync-open")

    async def _open(self, peer_id: bytes) -> None:
        channel = await self.node.open_channel(peer_id, LABEL)
        self._run(peer_id, channel)

    def _accept(self, peer_id: bytes, channel: Any) -> None:
        self._run(peer_id, channel)

    def _run(self, peer_id: bytes, channel: Any) -> None:
        old = self.providers.pop(peer_id, None)
        if old is not None:
            self.node.spawn(old.stop(), name="world-sync-stop")
        provider = SyncProvider(self.city, channel, interval_s=self.interval_s)
        provider.start()
        self.providers[peer_id] = provider
        log.info("world sync with %s on %r", peer_id.hex()[:12], LABEL)

    def _link_lost(self, link: Any) -> None:
        if link.rtc is None or self.node.peers.rtc(link.node_id) is not None:
            return  # a WebSocket closed (e.g. the join entry once its data channel is up)
        provider = self.providers.pop(link.node_id, None)
        if provider is not None:
            self.node.spawn(provider.stop(), name="world-sync-stop")
