"""One DHT node: serves FIND_NODE/FIND_VALUE/STORE/PING, looks up, publishes and republishes."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.dht.config import DhtConfig
from hive_core.mesh.dht.distance import random_id_in_bucket
from hive_core.mesh.dht.lookup import LookupResult, iterative_lookup
from hive_core.mesh.dht.records import (
    RecordError,
    is_authentic,
    keys_for,
    make_record,
)
from hive_core.mesh.dht.routing import RoutingTable
from hive_core.mesh.dht.rpc import Reply, Request, RpcError, RpcTransport, next_rpc_id
from hive_core.mesh.dht.storage import RecordStore
from hive_core.protocol import (
    MAX_CONTACTS,
    MAX_RECORDS,
    Contact,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    SignedRecord,
    Store,
    Stored,
    Value,
)

log = logging.getLogger(__name__)


@dataclass
class _Published:
    """One of our own records, kept to be re-signed and stored again before it expires."""

    key: bytes
    value: Any
    seq: int
    last_put: float  # wall seconds


class DhtNode:
    """A Kademlia node speaking through `rpc`.

    `clock` is wall time in seconds (record expiry); `monotonic` times RTTs and
    maintenance. The simulator passes virtual clocks for both.
    """

    def __init__(
        self,
        identity: Identity,
        address: str,
        rpc: RpcTransport,
        *,
        config: DhtConfig | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.contact = Contact(identity.node_id, identity.public_key, address)
        self.rpc = rpc
        self.config = config or DhtConfig()
        self.clock = clock
        self.monotonic = monotonic or (lambda: asyncio.get_running_loop().time())
        self.rng = rng or random.Random()
        self.routing = RoutingTable(identity.node_id, k=self.config.k,
                                    max_failures=self.config.max_failures,
                                    pns_factor=self.config.pns_factor)
        self.store = RecordStore()
        self._published: dict[bytes, _Published] = {}
        self.forged_seen = 0
        self._maintenance: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    # -- serving ---------------------------------------------------------------

    async def handle(self, sender: Contact, request: Request) -> Reply:
        """Answer one request from `sender` (the peer the transport authenticated)."""
        self.routing.add(sender, self.monotonic())
        k = self.config.k
        if isinstance(request, Ping):
            return Pong(request.rpc_id, request.sent_at)
        if isinstance(request, FindNode):
            contacts = self.routing.closest(request.target, min(k, MAX_CONTACTS),
                                            exclude=sender.node_id)
            return Nodes(request.rpc_id, tuple(contacts))
        if isinstance(request, FindValue):
            records = self.store.get(request.key, self.clock())[:MAX_RECORDS]
            contacts = self.routing.closest(request.key, min(k, MAX_CONTACTS),
                                            exclude=sender.node_id)
            return Value(request.rpc_id, tuple(records), tuple(contacts))
        if isinstance(request, Store):
            try:
                self.store.put(request.record, self.clock())
            except RecordError as exc:
                return Stored(request.rpc_id, False, str(exc))
            return Stored(request.rpc_id, True, "")
        return Error(getattr(request, "rpc_id", 0), ErrorCode.UNSUPPORTED,
                     f"{type(request).__name__} is not a DHT request")

    # -- asking ----------------------------------------------------------------

    def expected_rtt(self, node_id: bytes) -> float:
        rtt = self.routing.rtt(node_id)
        return self.config.unknown_rtt_s if rtt is None else rtt

    async def request(self, contact: Contact, request: Request) -> Reply:
        """Send one request with a timeout; success refreshes the contact, failure counts."""
        start = self.monotonic()
        try:
            reply = await asyncio.wait_for(self.rpc(contact, request), self.config.rpc_timeout_s)
        except (RpcError, TimeoutError, ConnectionError) as exc:
            self.routing.record_failure(contact.node_id)
            raise RpcError(f"{type(request).__name__} to {contact.node_id.hex()[:12]} failed: "
                           f"{exc or type(exc).__name__}") from exc
        if getattr(reply, "rpc_id", None) != request.rpc_id:
            self.routing.record_failure(contact.node_id)
            raise RpcError(f"reply to {type(request).__name__} has the wrong rpc id")
        now = self.monotonic()
        self.routing.add(contact, now, rtt_s=now - start)
        return reply

    async def ping(self, contact: Contact) -> float:
        """Round-trip time to `contact` in seconds (raises RpcError)."""
        start = self.monotonic()
        await self.request(contact, Ping(next_rpc_id(), start))
        return self.monotonic() - start

    def accept_found(self, record: SignedRecord) -> bool:
        """Whether a record returned by a peer is authentic and live (forgeries are logged)."""
        ok = is_authentic(record, self.clock())
        if not ok:
            self.forged_seen += 1
        return ok

    async def find_node(self, target: bytes) -> LookupResult:
        return await iterative_lookup(self, target, want_value=False)

    async def find_value(self, key: bytes, *, exhaustive: bool = False) -> LookupResult:
        """Records under `key` (ours included); `exhaustive` merges all owners' records."""
        local = [r for r in self.store.get(key, self.clock()) if r.key == key]
        if local and not exhaustive:
            return LookupResult(key, [], records=local, hops=0)
        result = await iterative_lookup(self, key, want_value=True, exhaustive=exhaustive)
        if local:
            have = {(r.key, r.owner_key) for r in result.records}
            result.records.extend(r for r in local if (r.key, r.owner_key) not in have)
        return result

    async def store_at(self, record: SignedRecord, contacts: list[Contact]) -> int:
        async def one(c: Contact) -> bool:
            try:
                reply = await self.request(c, Store(next_rpc_id(), record))
            except RpcError:
                return False
            if isinstance(reply, Stored) and not reply.accepted:
                log.info("store refused by %s: %s", c.node_id.hex()[:12], reply.reason)
            return isinstance(reply, Stored) and reply.accepted

        results = await asyncio.gather(*(one(c) for c in contacts))
        return sum(results)

    async def put(self, record: SignedRecord) -> int:
        """Store `record` at the k nodes closest to its key (and here if we are among them)."""
        lookup = await self.find_node(record.key)
        targets = lookup.contacts[: self.config.k]
        stored = await self.store_at(record, targets)
        if len(targets) < self.config.k or self.routing.distance_rank(record.key) < self.config.k:
            try:
                self.store.put(record, self.clock())
                stored += 1
            except RecordError:
                pass
        return stored

    async def publish(self, value: Any) -> list[SignedRecord]:
        """Sign and store one of our typed values under every key it belongs to.

        The value is remembered and republished every `republish_s` until `unpublish`.
        """
        now = self.clock()
        records = []
        for key in keys_for(value, self.node_id):
            prev = self._published.get(key)
            seq = prev.seq + 1 if prev else int(now * 1000)
            self._published[key] = _Published(key, value, seq, now)
            records.append(make_record(self.identity, key, value, seq=seq,
                                       ttl_s=self.config.record_ttl_s, now_s=now))
        await asyncio.gather(*(self.put(r) for r in records))
        return records

    def unpublish(self, value: Any) -> None:
        """Stop republishing `value`; its records expire by themselves."""
        for key in keys_for(value, self.node_id):
            self._published.pop(key, None)

    async def get(self, key: bytes) -> list[SignedRecord]:
        """Verified live records under `key` from every owner (an exhaustive lookup)."""
        return (await self.find_value(key, exhaustive=True)).records

    def observe_rtt(self, node_id: bytes, rtt_s: float) -> None:
        """Feed an RTT measured elsewhere (transport pings) into the nearby-nodes table."""
        self.routing.observe_rtt(node_id, rtt_s, self.monotonic())

    def add_contact(self, contact: Contact, rtt_s: float | None = None) -> None:
        """Note a peer the transport connected to (it joins a bucket if there is room)."""
        self.routing.add(contact, self.monotonic(), rtt_s=rtt_s)

    def remove_contact(self, node_id: bytes) -> None:
        """Forget a peer the transport saw die."""
        self.routing.remove(node_id)

    # -- joining and upkeep ------------------------------------------------------

    async def bootstrap(self, seeds: list[Contact], *, refresh: bool = True) -> int:
        """Join through `seeds`: look ourselves up, then fill farther buckets.

        Returns the number of contacts in the routing table; raises RpcError if no seed
        answered.
        """
        answered = 0
        for seed in seeds:
            try:
                await self.ping(seed)
                answered += 1
            except RpcError as exc:
                log.info("seed %s did not answer: %s", seed.address, exc)
        if not answered:
            raise RpcError("no bootstrap contact answered")
        await self.find_node(self.node_id)
        if refresh:
            await self.refresh(force=True)
        return len(self.routing)

    async def refresh(self, *, force: bool = False) -> int:
        """Look up a random id in each idle bucket; returns how many lookups ran."""
        now = self.monotonic()
        idle = self.routing.stale_buckets(now, 0.0 if force else self.config.refresh_s)
        targets = [random_id_in_bucket(self.node_id, i, self.rng.getrandbits(160)) for i in idle]
        await asyncio.gather(*(self.find_node(t) for t in targets))
        return len(targets)

    async def maintain_once(self) -> None:
        """Expire held records, republish ours when due, refresh idle buckets."""
        now = self.clock()
        self.store.expire(now)
        due = [p for p in self._published.values() if now - p.last_put >= self.config.republish_s]
        for p in due:
            p.seq += 1
            p.last_put = now
        await asyncio.gather(*(
            self.put(make_record(self.identity, p.key, p.value, seq=p.seq,
                                 ttl_s=self.config.record_ttl_s, now_s=now))
            for p in due
        ))
        await self.refresh()

    def start(self, period_s: float = 30.0) -> None:
        """Run maintenance in the background until `stop`."""
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(
                self.run_maintenance(period_s))

    async def stop(self) -> None:
        """Stop background maintenance; the node still answers `handle` calls."""
        task, self._maintenance = self._maintenance, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_maintenance(self, period_s: float = 30.0) -> None:
        """Run `maintain_once` every `period_s` until cancelled; errors are logged."""
        while True:
            await asyncio.sleep(period_s)
            try:
                await self.maintain_once()
            except Exception:  # upkeep must survive a bad round; the next one retries
                log.exception("DHT maintenance round failed")
