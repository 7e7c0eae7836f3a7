"""The asker in a live hive: find the shard servers among its links and route over them.

Servers report the weights mode they hold their matrices in and their kernel class; a route
gives each stage replicas of one grade (the mode, with torch's int4 kernel set apart: its
bfloat16 activations put it ten times farther from our float32 kernels than they are from
each other), since only replicas of one grade are compared within a tight bound.
Among servers that fit a stage equally well, the route takes them in an order drawn for the
session (a keyed hash of each id with a secret `salt`), never by id: a node id is a hash of
a key, so a liar could grind keys until it always came first. Slashed and banned nodes
(`exclude`) are left out.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import replace

from hive_core.base.health import HealthRecord
from hive_core.base.stage import Stage
from hive_core.exec.errors import ExecError
from hive_core.exec.wire import WEIGHTS_FROM_WIRE
from hive_core.mesh.dht import RecordKind, layer_key, node_key
from hive_core.mesh.dht.records import ReachRecord, decode_value, owner_of
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.mesh.wschannel import ws_connect
from hive_core.model.config import LlamaConfig
from hive_core.protocol.inference import ShardInfo, ShardQuery
from hive_core.sched.planner import CostModel, Plan, PlanError, PlannedStage, fixed_plan, plan
from hive_core.sched.routing import candidate, level_compute, order_for_cascade, prefer_planned

MAX_CLAIMED_TFLOPS = 64.0  # a server's own TFLOPS claim counts up to this (a CPU's ceiling)


async def discover(node: Node, timeout: float = 5.0) -> dict[bytes, ShardInfo]:
    """Ask every linked peer what it serves; peers that are not shard servers stay silent."""
    node.register_reply(ShardInfo)
    peers = sorted({link.node_id for link in node.peers.all()})

    async def one(peer: bytes) -> ShardInfo | None:
        try:
            reply = await node.request(peer, ShardQuery(node.next_rpc_id()), timeout=timeout)
        except (PeerUnavailable, ConnectionError):
            return None
        return reply if isinstance(reply, ShardInfo) else None

    replies = await asyncio.gather(*(one(p) for p in peers))
    return {p: r for p, r in zip(peers, replies, strict=True) if r is not None}


def grade(weights: str, kernel: str) -> str:
    """The grade replicas are grouped by: the weights mode ("packed", "fp32", "bf16"), and
    "packed-int4" for packed matrices on torch's int4 kernel."""
    return f"{weights}-int4" if kernel.split("/")[1:2] == ["int4"] else weights


def grade_of(info: ShardInfo) -> str:
    return grade(WEIGHTS_FROM_WIRE[info.weights], info.kernel)


def weights_of(infos: Mapping[bytes, ShardInfo]) -> dict[bytes, str]:
    """Each server's grade (see `grade`), for `HiveClient`."""
    return {n: grade_of(i) for n, i in infos.items()}


def draw(salt: bytes, node_id: bytes) -> bytes:
    """A node's place in this session's order: unpredictable without the secret `salt`."""
    return hashlib.blake2b(node_id, key=salt[:64], digest_size=16).digest()


def rtt_band(rtt_ms: float | None) -> int:
    """Measured RTTs within a factor of two of each other count as equally good."""
    return 99 if rtt_ms is None or rtt_ms <= 0 else max(0, int(math.log2(max(rtt_ms, 1.0))))


def span_plan(infos: Mapping[bytes, ShardInfo], n_layers: int, replicas: int,
              first_layer: int = 0, prefer: str | None = None, *, last_layer: int | None = None,
              salt: bytes = b"", rtt_ms: Mapping[bytes, float] | None = None) -> Plan | None:
    """A route over the servers' preloaded spans, if they cover layers `first_layer` ..
    `last_layer` (else None); a span that starts earlier or ends later serves just its part.
    Replicas of a stage share a span and a weights mode; between equal options, mode
    `prefer` wins; within a span, servers go by RTT band, then by the session's draw."""
    last = n_layers if last_layer is None else last_layer
    rtts = rtt_ms or {}
    by_span: dict[tuple[int, int, str], list[bytes]] = {}
    for nid, info in infos.items():
        if info.layer_end > info.layer_start:
            key = (info.layer_start, info.layer_end, grade_of(info))
            by_span.setdefault(key, []).append(nid)
    for ids in by_span.values():
        ids.sort(key=lambda n: (rtt_band(rtts.get(n)), draw(salt, n)))
    stages, nodes, at = [], [], first_layer
    while at < last:
        options = [(min(end, last), mode, ids) for (start, end, mode), ids in by_span.items()
                   if start <= at < end]
        if not options:
            return None
        end, _, ids = max(options, key=lambda o: (min(len(o[2]), replicas), o[0], o[1] == prefer))
        stages.append(Stage(at, end))
        nodes.append(ids[:replicas])
        at = end
    return fixed_plan(stages, nodes)


def route(infos: Mapping[bytes, ShardInfo], cfg: LlamaConfig, model_name: str, replicas: int,
          rtt_ms: Mapping[bytes, float], first_layer: int = 0, prefer: str | None = None, *,
          last_layer: int | None = None, salt: bytes = b"",
          exclude: Collection[bytes] = (), health: Mapping[bytes, HealthRecord] | None = None,
          roles: Mapping[bytes, Collection[str]] | None = None, replan: bool = True,
          links: Mapping[tuple[bytes, bytes], float] | None = None, split: bool = True) -> Plan:
    """Servers of this model (less `exclude`): their spans if they cover layers `first_layer`
    .. `last_layer` (unless, with `replan`, the planner's route is clearly faster:
    `hive_core.sched.routing`), else the planner's route over the servers of one weights mode
    (the most common; `prefer` on a tie), priced by their published `health` records and
    split by their `roles` (unless not `split`: whole layers only), its stages in the order
    that crosses the least latency between them where `links` (node pairs' RTTs, for a
    cascade) are given. Ties go by the session's draw (`salt`), never by id."""
    last = cfg.n_layers if last_layer is None else last_layer
    same = {n: i for n, i in infos.items() if n not in exclude
            and i.model == model_name and i.n_layers == cfg.n_layers and i.hidden == cfg.hidden}
    if not same:
        raise ExecError(f"no shard server of {model_name} ({cfg.n_layers} layers) among "
                        f"{len(infos)} servers found" + (f" ({len(exclude)} left out as slashed "
                                                         "or banned)" if exclude else ""))
    spans = span_plan(same, cfg.n_layers, replicas, first_layer, prefer, last_layer=last,
                      salt=salt, rtt_ms=rtt_ms)
    if spans is not None and not replan:
        return spans
    by_mode: dict[str, dict[bytes, ShardInfo]] = {}
    for n, i in same.items():
        by_mode.setdefault(grade_of(i), {})[n] = i
    same = max(by_mode.values(), key=lambda group: (
        len(group), grade_of(next(iter(group.values()))) == prefer))
    # The planner breaks ties by node id: it sees each server under its drawn label instead.
    label = {draw(salt, n)[:20]: n for n in same}
    cands = [candidate(lab, tflops=i.tflops, free_ram_mb=i.free_ram_mb or 1e5, on_ac=i.on_ac,
                       health=(health or {}).get(n), rtt_ms=rtt_ms.get(n),
                       roles=(roles or {}).get(n, ()), max_tflops=MAX_CLAIMED_TFLOPS)
             for lab, n in sorted(label.items()) for i in (same[n],)]
    cost = CostModel.for_model(cfg)
    if spans is not None:
        cands = level_compute(cands)
    try:
        p = plan(cands, last - first_layer, cost, replicas=replicas, split=split)
    except PlanError:
        if spans is not None:
            return spans
        raise
    if links is not None:  # ordered under the drawn labels too: ties never go by real ids
        lab = {n: lb for lb, n in label.items()}
        p = order_for_cascade(p, {lab[n]: r for n, r in rtt_ms.items() if n in lab},
                              {(lab[a], lab[b]): r for (a, b), r in links.items()
                               if a in lab and b in lab})
    shifted = tuple(PlannedStage(Stage(s.stage.start + first_layer, s.stage.end + first_layer,
                                       s.stage.part), tuple(label[n] for n in s.nodes), s.est_s)
                    for s in p.stages)
    planned = replace(p, stages=shifted, left_out=tuple(label.get(n, n) for n in p.left_out))
    if spans is not None and not prefer_planned(
            spans, planned, {label[c.node_id]: c for c in cands}, cost):
        return spans
    return planned


async def find_span_owners(hive: object, model: str, n_layers: int) -> list[bytes]:
    """Node ids whose signed DHT layer-span records say they serve layers of `model`."""
    dht = hive.dht  # type: ignore[attr-defined]
    found = await asyncio.gather(*(dht.get(layer_key(model, i)) for i in range(n_layers)),
                                 return_exceptions=True)
    owners: list[bytes] = []
    for records in found:
        if isinstance(records, BaseException):
            continue
        owners += [owner_of(r) for r in records]
    return list(dict.fromkeys(owners))


async def link_nodes(hive: object, targets: list[bytes], timeout: float) -> None:
    """Link to `targets` not linked yet: a data channel signaled through the mesh, else a
    WebSocket to an address from the target's signed reach record (nodes with --listen)."""
    node: Node = hive.node  # type: ignore[attr-defined]
    todo = [t for t in targets if t != node.node_id and node.peers.best(t) is None]

    async def one(target: bytes) -> None:
        try:
            await asyncio.wait_for(hive.signaler.connect(target), timeout)  # type: ignore[attr-defined]
            return
        except (ConnectionError, TimeoutError, ValueError):
            pass
        await _ws_link(hive, target, timeout)

    await asyncio.gather(*(one(t) for t in todo), return_exceptions=True)


async def _ws_link(hive: object, target: bytes, timeout: float) -> None:
    node: Node = hive.node  # type: ignore[attr-defined]
    records = await hive.dht.get(node_key(target, RecordKind.REACH))  # type: ignore[attr-defined]
    for record in records:
        value = decode_value(record)
        if owner_of(record) != target or not isinstance(value, ReachRecord):
            continue
        for url in value.addresses:
            try:
                channel = await ws_connect(url, timeout=timeout)
                await node.attach(channel, kind="ws", expect=target, mode="second")
                return
            except (ConnectionError, TimeoutError, ValueError):
                continue
