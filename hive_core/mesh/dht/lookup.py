"""Iterative parallel lookups: ask the alpha closest unqueried contacts until none is closer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hive_core.mesh.dht.rpc import Reply, RpcError, next_rpc_id
from hive_core.protocol import Contact, FindNode, FindValue, Nodes, SignedRecord, Value

if TYPE_CHECKING:
    from hive_core.mesh.dht.node import DhtNode

log = logging.getLogger(__name__)


@dataclass
class LookupResult:
    """What a lookup found and what it cost."""

    target: bytes
    contacts: list[Contact]  # the k closest live contacts found
    records: list[SignedRecord] = field(default_factory=list)  # verified, FIND_VALUE only
    hops: int = 0  # depth of the answer: 1 = a contact from our own table answered
    queried: int = 0  # requests sent
    failed: int = 0  # requests that failed
    holders: list[Contact] = field(default_factory=list)  # contacts that returned records

    @property
    def found(self) -> bool:
        return bool(self.records)


def _authentic(node: DhtNode, record: SignedRecord) -> bool:
    """`node.accept_found`, where anything a record trips counts as forged (and is logged)."""
    try:
        return node.accept_found(record)
    except Exception:  # a record that breaks the check is dropped, the lookup goes on
        log.exception("record from %s dropped", record.owner_key.hex()[:12])
        return False


async def iterative_lookup(
    node: DhtNode, target: bytes, *, want_value: bool, exhaustive: bool = False
) -> LookupResult:
    """Kademlia lookup of `target` from `node`.

    With `want_value`, stops at the first contact returning a verified record (or, if
    `exhaustive`, merges every record found among the k closest). Forged records are
    dropped and logged and the lookup goes on.
    """
    cfg = node.config
    t = int.from_bytes(target, "big")

    def dist(c: Contact) -> int:
        return int.from_bytes(c.node_id, "big") ^ t

    known: dict[bytes, Contact] = {}
    depth: dict[bytes, int] = {}
    for c in node.routing.closest(target, cfg.k):
        known[c.node_id] = c
        depth[c.node_id] = 1
    queried: set[bytes] = set()
    failed: set[bytes] = set()
    result = LookupResult(target, [])
    records: dict[tuple[bytes, bytes], SignedRecord] = {}
    best_answer_depth = 0
    in_flight: dict[asyncio.Task[Reply], Contact] = {}
    node.routing.touch_bucket(target, node.monotonic())

    def candidates() -> list[Contact]:
        live = sorted((c for i, c in known.items() if i not in failed), key=dist)[: cfg.k]
        return [c for c in live if c.node_id not in queried]

    def pick() -> Contact | None:
        window = candidates()[: max(1, cfg.alpha - len(in_flight)) + cfg.rtt_window]
        if not window:
            return None
        return min(window, key=lambda c: (node.expected_rtt(c.node_id), dist(c)))

    try:
        while True:
            while len(in_flight) < cfg.alpha:
                picked = pick()
                if picked is None:
                    break
                queried.add(picked.node_id)
                req = FindValue(next_rpc_id(), target) if want_value else FindNode(
                    next_rpc_id(), target)
                in_flight[asyncio.ensure_future(node.request(picked, req))] = picked
            if not in_flight:
                break
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                c = in_flight.pop(task)
                result.queried += 1
                try:
                    reply = task.result()
                except RpcError:
                    failed.add(c.node_id)
                    result.failed += 1
                    continue
                except Exception:  # a transport bug: that contact failed, go on
                    log.exception("lookup request to %s failed", c.node_id.hex()[:12])
                    failed.add(c.node_id)
                    result.failed += 1
                    continue
                if not isinstance(reply, (Nodes, Value)):  # an Error, or a peer answering nonsense
                    failed.add(c.node_id)
                    result.failed += 1
                    continue
                d = depth[c.node_id]
                for nc in reply.contacts:
                    if nc.node_id != node.node_id and nc.node_id not in known:
                        known[nc.node_id] = nc
                        depth[nc.node_id] = d + 1
                if isinstance(reply, Value) and reply.records:
                    good = [r for r in reply.records if r.key == target and _authentic(node, r)]
                    if good:
                        result.holders.append(c)
                        best_answer_depth = best_answer_depth or d
                        for r in good:
                            k = (r.key, r.owner_key)
                            if k not in records or records[k].seq < r.seq:
                                records[k] = r
                        if not exhaustive:
                            break
            if records and not exhaustive:
                break
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
    closest = sorted((c for i, c in known.items() if i in queried and i not in failed),
                     key=dist)[: cfg.k]
    result.contacts = closest
    result.records = list(records.values())
    if best_answer_depth:
        result.hops = best_answer_depth
    elif closest:
        result.hops = depth[closest[0].node_id]
    return result
