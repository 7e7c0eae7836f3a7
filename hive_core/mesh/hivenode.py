"""A full hive peer: node runtime + WebSocket entry + mesh signaling + DHT + published records.

`HiveNode.start()` listens (if configured), joins through the first reachable ``join``
URL (a sentinel, or any node that listens), asks it for the contacts nearest its own id,
opens WebRTC links to them with offers relayed by that entry, joins the DHT, and
publishes its records: Health Vector, roles, reachability, per-peer RTTs and the layer
spans it serves. After that nothing depends on the entry: later links are signaled
through mesh peers, and the records are republished until the node stops.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.dht import (
    DhtConfig,
    DhtNode,
    LinkRtt,
    LinksRecord,
    ReachRecord,
    RecordKind,
    Role,
    RolesRecord,
    RpcError,
    node_key,
)
from hive_core.mesh.dht.records import RecordError, ServingRecord, decode_value, owner_of
from hive_core.mesh.events import RecordsPublished
from hive_core.mesh.ice import IceOffer
from hive_core.mesh.joining import join_mesh
from hive_core.mesh.lan import LanLinks
from hive_core.mesh.listener import Listener
from hive_core.mesh.node import Node, NodeConfig, PeerUnavailable
from hive_core.mesh.peers import Link, Unreachable
from hive_core.mesh.rtc import ConnectFailed
from hive_core.mesh.signaling import Signaler
from hive_core.protocol import (
    MAX_STATUS_NODES,
    MAX_STATUS_RECORDS,
    Contact,
    FindNode,
    FindValue,
    HandshakeError,
    IceQuery,
    Ping,
    SignedRecord,
    StatusReply,
    StatusRequest,
    Store,
    Value,
)
from hive_core.sched.health import local_health

logger = logging.getLogger(__name__)

STATUS_KINDS = (RecordKind.HEALTH, RecordKind.ROLES, RecordKind.LINKS, RecordKind.SERVING)
MAX_UPKEEP_ROUNDS = 3  # republish rounds in flight at once
MAX_KNOWN = 4096  # ids remembered as known (had a data channel with us): the reserved lane
ROLE_NAMES = {r.name.lower(): r for r in Role}


class HiveNode:
    """One peer of the hive; sentinels are HiveNodes that listen and take the sentinel role."""

    class State(enum.Enum):
        NEW = "new"
        STARTING = "starting"  # listening, joining, publishing its first records
        RUNNING = "running"
        CLOSED = "closed"  # final

    def __init__(self, identity: Identity, config: NodeConfig | None = None) -> None:
        self.config = config or NodeConfig()
        self.node = Node(identity, self.config)
        self.signaler = Signaler(self.node)
        self.signaler.find_relays = self.relays_for
        self.dht = DhtNode(identity, "mesh", self._dht_rpc, config=DhtConfig(
            k=self.config.dht_k, rpc_timeout_s=self.config.request_timeout_s,
            record_ttl_s=self.config.record_ttl_s, republish_s=self.config.republish_s,
        ))
        self.listener: Listener | None = None
        self.entry: Link | None = None
        self.ice_offer: IceOffer | None = None  # a sentinel's STUN/TURN servers for joiners
        self.health: Any = None  # the last HealthRecord published
        self.node.request_handler = self._serve
        self.node.register_reply(StatusReply)
        self.node.on_link_up.append(self._link_up)
        self.node.on_link_lost.append(self._link_lost)
        self.state = HiveNode.State.NEW
        self._entries: dict[str, None] = {}  # listen URLs of peers seen, oldest first
        self._known: dict[bytes, None] = {}  # ids that had a data channel with us, oldest first
        self.unreachable = Unreachable()  # peers that did not link when asked, backing off
        self.lan = LanLinks(self)  # direct WebSockets to near peers beside the data channels

    def __repr__(self) -> str:
        return f"HiveNode({self.node.node_id_hex[:8]}, {len(self.node.peers)} peers)"

    @property
    def node_id(self) -> bytes:
        return self.node.node_id

    @property
    def listen_url(self) -> str:
        return self.node.listen_url

    @property
    def roles(self) -> tuple[Role, ...]:
        try:
            return tuple(ROLE_NAMES[name] for name in self.config.roles)
        except KeyError as exc:
            raise ValueError(f"unknown role {exc.args[0]!r}") from None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, join, link up with the entry's neighbourhood, publish records."""
        if self.state is not HiveNode.State.NEW:
            return
        self._set_state(HiveNode.State.STARTING)
        self.roles  # noqa: B018 - validate role names before any network work
        if self.config.listen is not None:
            self.listener = Listener(self.node, self.config.admission, self.is_known,
                                     lan=self.config.lan_links)
            self.node.listen_url = await self.listener.start(self.config.listen)
            self.dht.contact = Contact(self.node_id, self.node.identity.public_key,
                                       self.node.listen_url)
            logger.info("%s listening on %s", self, self.node.listen_url)
        self.node.spawn(self.node.heartbeat(), name="heartbeat")
        if self.config.join:
            await self._join()
            # One RTT sample per link first, so the first records already carry latencies.
            await asyncio.gather(*(self.node.ping(lk) for lk in self.node.peers.all()),
                                 return_exceptions=True)
        await self.publish()
        self.node.spawn(self._upkeep(), name="upkeep")
        self._set_state(HiveNode.State.RUNNING)

    def _set_state(self, state: HiveNode.State) -> None:
        if state is self.state or self.state is HiveNode.State.CLOSED:
            return
        logger.info("%s: %s -> %s", self, self.state.value, state.value)
        self.state = state

    async def _join(self) -> None:
        self.entry = await join_mesh(self)

    async def close(self) -> None:
        """Leave: stop listening, say bye on every link, stop background work."""
        self._set_state(HiveNode.State.CLOSED)
        await self.dht.stop()
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        await self.node.close()

    # -- links and the DHT ---------------------------------------------------------------

    def _contact(self, link: Link) -> Contact:
        return Contact(link.node_id, link.public_key, link.listen or "mesh")

    def is_known(self, node_id: bytes) -> bool:
        """Whether `node_id` had a data channel with this node (the listener's reserved lane)."""
        return node_id in self._known or self.node.peers.rtc(node_id) is not None

    def _link_up(self, link: Link) -> None:
        if link.kind == "rtc":
            self._known.pop(link.node_id, None)
            self._known[link.node_id] = None
            while len(self._known) > MAX_KNOWN:
                del self._known[next(iter(self._known))]
            self.unreachable.linked(link.node_id)
            self.lan.consider(link)
        if link.listen:
            self._entries.pop(link.listen, None)
            self._entries[link.listen] = None
            while len(self._entries) > 64:
                del self._entries[next(iter(self._entries))]
        if link.kind == "rtc" or link.listen:
            self.dht.add_contact(self._contact(link))

    def _link_lost(self, link: Link) -> None:
        if self.node.peers.best(link.node_id) is None:
            self.dht.remove_contact(link.node_id)

    async def _dht_rpc(self, contact: Contact, request: Any) -> Any:
        """The DHT's transport: the existing link, else a data channel signaled via the mesh
        (waited for `join_peer_s` at most; a peer that failed to link lately is skipped)."""
        peer = contact.node_id
        if self.node.peers.best(peer) is None:
            if self.unreachable.blocked(peer):
                raise RpcError(f"{peer.hex()[:12]} did not link lately; skipped")
            if len(self.node.peers) >= 2 * self.config.max_peers:
                raise RpcError(f"no link to {peer.hex()[:12]} and no room for one")
            attempt = self.node.spawn(self.signaler.connect(peer), name="dht link",
                                      expected=(ConnectionError, HandshakeError))
            try:
                await asyncio.wait_for(asyncio.shield(attempt), self.config.join_peer_s)
            except TimeoutError:
                self.unreachable.failed(peer)
                raise RpcError(f"no link to {peer.hex()[:12]} within "
                               f"{self.config.join_peer_s:g} s") from None
            except (ConnectFailed, PeerUnavailable, HandshakeError) as exc:
                self.unreachable.failed(peer)
                raise RpcError(str(exc)) from exc
        try:
            return await self.node.request(contact.node_id, request)
        except PeerUnavailable as exc:
            raise RpcError(str(exc)) from exc

    async def _serve(self, link: Link, msg: Any) -> Any:
        if isinstance(msg, (FindNode, FindValue, Store, Ping)):
            return await self.dht.handle(self._contact(link), msg)
        if isinstance(msg, IceQuery) and self.ice_offer is not None:
            return self.ice_offer.answer(link.node_id, msg)
        if isinstance(msg, StatusRequest):
            return StatusReply(msg.rpc_id, tuple(await self.status_records()))
        return None

    async def relays_for(self, target: bytes, ask: int = 8) -> list[bytes]:
        """Relays named in `target`'s signed reach record, from our store or our linked
        peers XOR-closest to its key (no new links: signaling itself calls this)."""
        key = node_key(target, RecordKind.REACH)
        records = list(self.dht.store.get(key, self.dht.clock()))
        peers = self.node.peers.closest(key, ask, {self.node_id, target})

        async def one(link: Link) -> list[SignedRecord]:
            reply = await self.node.request(link.node_id, FindValue(self.node.next_rpc_id(), key))
            return list(reply.records) if isinstance(reply, Value) else []

        found = await asyncio.gather(*(one(lk) for lk in peers), return_exceptions=True)
        for got in found:
            if not isinstance(got, BaseException):
                records += [r for r in got if self.dht.accept_found(r)]
        relays: list[bytes] = []
        for record in records:
            try:
                value = decode_value(record)
            except RecordError:
                continue
            if record.key == key and owner_of(record) == target and isinstance(value, ReachRecord):
                relays += value.relays
        return list(dict.fromkeys(relays))

    # -- records -------------------------------------------------------------------------

    def reach(self) -> ReachRecord:
        addresses = (self.listen_url,) if self.listen_url else ()
        relays = tuple(link.node_id for link in self.node.peers.rtc_links())[:16]
        return ReachRecord(addresses, relays)

    def links(self) -> LinksRecord:
        rtts = [LinkRtt(lk.node_id, lk.rtt_ms) for lk in self.node.peers.all()
                if lk.rtt_ms is not None and (lk.kind == "rtc" or lk.listen)]
        best: dict[bytes, LinkRtt] = {}
        for r in sorted(rtts, key=lambda r: r.rtt_ms):
            best.setdefault(r.node_id, r)
        return LinksRecord(tuple(best.values())[:64])

    async def publish(self) -> int:
        """Measure and sign this node's records and store them in the DHT."""
        uptime = time.monotonic() - self.node.started_at
        self.health = await local_health(self.node.peers_info(), uptime_s=uptime,
                                         tflops=self.config.tflops,
                                         max_memory_mb=self.config.max_memory_mb)
        values: list[Any] = [self.health, RolesRecord(self.roles), self.reach(), self.links(),
                             *self.config.spans]
        if self.config.spans:  # what `hive status` shows of this node's layers
            values.append(ServingRecord(tuple(self.config.spans)[:8]))
        published = await asyncio.gather(*(self.dht.publish(v) for v in values))
        stored = sum(len(p) for p in published)
        self.node.emit(RecordsPublished(
            tuple(sorted({type(v).__name__.removesuffix("Record").upper() for v in values})),
            stored))
        return stored

    async def _upkeep(self) -> None:
        """Every republish period start a round; a round slowed by dead peers (each costs a
        request timeout) must not delay the next, or our records would expire meanwhile."""
        rounds: set[asyncio.Task[None]] = set()
        while True:
            await asyncio.sleep(self.config.republish_s)
            rounds = {r for r in rounds if not r.done()}
            if len(rounds) >= MAX_UPKEEP_ROUNDS:
                logger.warning("%s: %d upkeep rounds still running; skipping one", self,
                               len(rounds))
                continue
            rounds.add(self.node.spawn(self._upkeep_round(), name="upkeep round"))

    async def _upkeep_round(self) -> None:
        """Feed link RTTs to the DHT, expire records, republish ours, refresh buckets."""
        for link in self.node.peers.all():
            if link.rtt_ms is not None and link.node_id in self.dht.routing:
                self.dht.observe_rtt(link.node_id, link.rtt_ms / 1000)
        self.lan.consider_all()
        try:
            self.dht.store.expire(self.dht.clock())
            await asyncio.gather(self.publish(), self.heal())
            await self.dht.refresh()
        except Exception:  # upkeep must survive a bad round; the next one retries
            logger.exception("%s: upkeep round failed", self)

    async def heal(self, per_round: int = 2) -> int:
        """While below max_peers, look ourselves up and open data channels to the nearest
        nodes we lack one to: a join-time attempt may have failed, a peer may have restarted.
        Returns how many links it opened."""
        room = self.config.max_peers - len(self.node.peers)
        if room <= 0 or not self.node.peers.all():
            return 0
        before = {lk.node_id for lk in self.node.peers.rtc_links()}
        lookup = await self.dht.find_node(self.node_id)  # asks peers; may connect on demand
        linked = {lk.node_id for lk in self.node.peers.rtc_links()}
        missing = [c.node_id for c in lookup.contacts
                   if c.node_id not in linked and c.node_id != self.node_id][: min(room, per_round)]
        results = await asyncio.gather(*(self.signaler.connect(n) for n in missing),
                                       return_exceptions=True)
        for node_id, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                logger.info("%s: healing the link to %s failed: %s", self, node_id.hex()[:12],
                            result)
        return len({lk.node_id for lk in self.node.peers.rtc_links()} - before)

    def entry_urls(self) -> list[str]:
        """Where peers seen by this node accept joiners, newest first (to rejoin later)."""
        return [u for u in reversed(self._entries) if u != self.listen_url]

    def known_nodes(self) -> list[bytes]:
        """This node, its peers and its routing contacts (at most MAX_STATUS_NODES)."""
        ids = [self.node_id]
        ids += [lk.node_id for lk in self.node.peers.all() if lk.kind == "rtc" or lk.listen]
        ids += [c.node_id for c in self.dht.routing.contacts()]
        return list(dict.fromkeys(ids))[:MAX_STATUS_NODES]

    async def status_records(self) -> list[SignedRecord]:
        """Health, roles and links records of every known node, as their owners signed them."""
        keys = [node_key(n, kind) for n in self.known_nodes() for kind in STATUS_KINDS]

        async def fetch(key: bytes) -> list[SignedRecord]:
            try:
                return (await self.dht.find_value(key)).records
            except RpcError:
                return []

        found = await asyncio.gather(*(fetch(k) for k in keys))
        records = [r for rs in found for r in rs][:MAX_STATUS_RECORDS]
        budget, kept = 240_000, []
        for r in records:  # stay below the frame limit: records are at most ~8 KiB each
            budget -= 160 + len(r.value)
            if budget < 0:
                break
            kept.append(r)
        return kept
