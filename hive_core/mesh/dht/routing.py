"""The routing table: k-buckets by XOR distance, preferring live, low-RTT contacts."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from hive_core.mesh.dht.distance import ID_BITS, bucket_index, xor_distance
from hive_core.protocol import Contact

log = logging.getLogger(__name__)

RTT_EWMA_ALPHA = 0.3  # weight of the newest RTT sample


@dataclass
class Entry:
    """What the table knows of one contact."""

    contact: Contact
    last_seen: float  # monotonic time of the last successful exchange
    rtt_s: float | None = None  # EWMA of measured round trips, None until one is measured
    failures: int = 0  # consecutive failed RPCs

    def observe_rtt(self, rtt_s: float) -> None:
        self.rtt_s = rtt_s if self.rtt_s is None else (
            RTT_EWMA_ALPHA * rtt_s + (1 - RTT_EWMA_ALPHA) * self.rtt_s
        )


@dataclass
class Bucket:
    """Contacts at one distance range, least recently seen first, plus replacements."""

    entries: list[Entry] = field(default_factory=list)
    replacements: list[Entry] = field(default_factory=list)
    last_lookup: float = 0.0  # monotonic time a lookup last touched this range


class RoutingTable:
    """160 k-buckets around `self_id`.

    Kademlia keeps old contacts (long-lived nodes stay up longest) and parks newcomers
    in a replacement cache when a bucket is full. Proximity neighbour selection: a
    newcomer whose measured RTT is `pns_factor` times lower than the slowest member's
    takes that member's place, so each bucket drifts towards nearby nodes; a member
    with failed RPCs is replaced first.
    """

    def __init__(
        self, self_id: bytes, *, k: int = 20, max_failures: int = 1, pns_factor: float = 2.0
    ) -> None:
        self.self_id = self_id
        self.k = k
        self.max_failures = max_failures
        self.pns_factor = pns_factor
        self.buckets = [Bucket() for _ in range(ID_BITS)]
        self._index: dict[bytes, Entry] = {}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, node_id: bytes) -> bool:
        return node_id in self._index

    def get(self, node_id: bytes) -> Entry | None:
        return self._index.get(node_id)

    def contacts(self) -> list[Contact]:
        return [e.contact for e in self._index.values()]

    def add(self, contact: Contact, now: float, rtt_s: float | None = None) -> bool:
        """Note a live contact; returns True if it is (now) in a bucket."""
        if contact.node_id == self.self_id:
            return False
        entry = self._index.get(contact.node_id)
        bucket = self.buckets[bucket_index(self.self_id, contact.node_id)]
        if entry is not None:
            entry.contact, entry.last_seen, entry.failures = contact, now, 0
            if rtt_s is not None:
                entry.observe_rtt(rtt_s)
            bucket.entries.remove(entry)
            bucket.entries.append(entry)
            return True
        new = Entry(contact, now, rtt_s)
        if len(bucket.entries) < self.k:
            self._insert(bucket, new)
            return True
        victim = self._victim(bucket, new)
        if victim is None:
            self._park(bucket, new)
            return False
        self._remove(bucket, victim)
        if victim.failures == 0:
            self._park(bucket, victim)
        self._insert(bucket, new)
        return True

    def _victim(self, bucket: Bucket, new: Entry) -> Entry | None:
        failing = [e for e in bucket.entries if e.failures > 0]
        if failing:
            return failing[0]
        if new.rtt_s is None:
            return None
        timed = [e for e in bucket.entries if e.rtt_s is not None]
        if not timed:
            return None
        slowest = max(timed, key=lambda e: e.rtt_s or 0.0)
        if slowest.rtt_s is not None and slowest.rtt_s > self.pns_factor * new.rtt_s:
            return slowest
        return None

    def _insert(self, bucket: Bucket, entry: Entry) -> None:
        bucket.replacements = [e for e in bucket.replacements
                               if e.contact.node_id != entry.contact.node_id]
        bucket.entries.append(entry)
        self._index[entry.contact.node_id] = entry

    def _remove(self, bucket: Bucket, entry: Entry) -> None:
        bucket.entries.remove(entry)
        del self._index[entry.contact.node_id]

    def _park(self, bucket: Bucket, entry: Entry) -> None:
        bucket.replacements = [e for e in bucket.replacements
                               if e.contact.node_id != entry.contact.node_id]
        bucket.replacements.append(entry)
        del bucket.replacements[: -self.k]

    def observe_rtt(self, node_id: bytes, rtt_s: float, now: float) -> None:
        entry = self._index.get(node_id)
        if entry is not None:
            entry.observe_rtt(rtt_s)
            entry.last_seen, entry.failures = now, 0

    def record_failure(self, node_id: bytes) -> bool:
        """Count a failed RPC; evicts after `max_failures` in a row. True if evicted."""
        entry = self._index.get(node_id)
        if entry is None:
            return False
        entry.failures += 1
        if entry.failures < self.max_failures:
            return False
        bucket = self.buckets[bucket_index(self.self_id, node_id)]
        self._remove(bucket, entry)
        log.info("evicted unresponsive contact %s", node_id.hex()[:12])
        if bucket.replacements:
            # promote the fastest known replacement, else the most recently seen
            best = min(bucket.replacements,
                       key=lambda e: (e.rtt_s is None, e.rtt_s or 0.0, -e.last_seen))
            bucket.replacements.remove(best)
            self._insert(bucket, best)
        return True

    def remove(self, node_id: bytes) -> None:
        entry = self._index.get(node_id)
        if entry is not None:
            self._remove(self.buckets[bucket_index(self.self_id, node_id)], entry)

    def closest(self, target: bytes, n: int | None = None,
                exclude: bytes | None = None) -> list[Contact]:
        """The `n` (default k) known contacts nearest `target` by XOR distance."""
        t = int.from_bytes(target, "big")
        found = sorted(
            (e for e in self._index.values() if e.contact.node_id != exclude),
            key=lambda e: int.from_bytes(e.contact.node_id, "big") ^ t,
        )
        return [e.contact for e in found[: n or self.k]]

    def nearby(self, n: int) -> list[Entry]:
        """The nearby-nodes table: the `n` contacts with the lowest measured RTT."""
        timed = [e for e in self._index.values() if e.rtt_s is not None]
        return sorted(timed, key=lambda e: e.rtt_s or 0.0)[:n]

    def rtt(self, node_id: bytes) -> float | None:
        entry = self._index.get(node_id)
        return entry.rtt_s if entry else None

    def touch_bucket(self, target: bytes, now: float) -> None:
        if target != self.self_id:
            self.buckets[bucket_index(self.self_id, target)].last_lookup = now

    def stale_buckets(self, now: float, refresh_s: float) -> list[int]:
        """Indices of buckets from the nearest occupied one outward not looked up lately."""
        occupied = [i for i, b in enumerate(self.buckets) if b.entries]
        if not occupied:
            return []
        return [i for i in range(occupied[0], ID_BITS)
                if now - self.buckets[i].last_lookup >= refresh_s]

    def distance_rank(self, target: bytes) -> int:
        """How many known contacts are nearer `target` than this node is."""
        mine = xor_distance(self.self_id, target)
        return sum(1 for i in self._index if xor_distance(i, target) < mine)
