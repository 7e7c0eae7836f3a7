"""Asking a live hive: the one join path every client takes (`ask`, the game, the API).

`join_hive` starts a mesh node of the asker's own joined at an entry URL. `AskerPart` is what
stays on the asker's device (the embedding, the head, its first and last layers) on the
thread that computes with it. `connect` finds the servers whose signed layer-span records
serve the model, links to them, asks what each holds, leaves out the ones convicted by
evidence it recomputed (its own verdicts, kept in the data directory, and those other nodes
published) or banned, routes the model's layers over the rest in an order drawn for the
session (priced by the asker's own RTTs and the Health and roles records the servers
published: a far, draining or flaky server is left out where that is clearly faster), and
returns a `HiveClient` ready for sessions: verified by default, paying by the Health records
the servers published, publishing what it convicts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.base.stage import Stage
from hive_core.events import Consumer
from hive_core.exec.board import VerdictBoard
from hive_core.exec.client import ClientConfig, HiveClient, load_local
from hive_core.exec.errors import ExecError
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.remote import discover, find_span_owners, link_nodes, route, weights_of
from hive_core.exec.replay import shared_replayer
from hive_core.mesh.dht import RecordKind, node_key
from hive_core.mesh.dht.records import LinksRecord, RolesRecord, decode_value, owner_of
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig, PeerUnavailable
from hive_core.mesh.rtc import RTCOptions
from hive_core.mesh.runner import LOOPBACK_HOSTS
from hive_core.mesh.wschannel import parse_ws_url
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.protocol.inference import ShardInfo
from hive_core.sched.planner import Plan
from hive_core.trust import ReputationBook, VerdictStore

Say = Callable[[str], None]
T = TypeVar("T")
MAX_MODEL_NAME = 128  # bytes of a model name in layer-span records and shard info
PING_TIMEOUT_S = 2.0  # a server not answering a ping in this long is priced as unmeasured
# "spans": take the servers' preloaded spans whenever they cover the model, even where the
# planner finds a faster route (benches measuring a fixed layout); "whole": the planner never
# splits attention and MLP over two nodes (a bench's comparison); default "auto".
PLANNER_ENV = "CADENCIA_PLANNER"
PLANNER_CHOICES = ("auto", "spans", "whole")


def model_name(path: Path) -> str:
    """The name servers publish a model under: its file name, cut to what records hold."""
    return path.name[:MAX_MODEL_NAME]


async def join_hive(url: str, *, timeout_s: float, identity: Identity | None = None,
                    say: Say = lambda _m: None) -> HiveNode:
    """A mesh node of the asker's own (a throwaway key unless `identity`), joined at `url`."""
    host, _ = parse_ws_url(url)
    rtc = RTCOptions.loopback() if host in LOOPBACK_HOSTS else RTCOptions()
    hive = HiveNode(identity or Identity.generate(), NodeConfig(join=(url,), rtc=rtc))
    say(f"joining {url} ...")
    try:
        await asyncio.wait_for(hive.start(), timeout_s)
    except TimeoutError:
        await hive.close()
        raise ExecError(f"could not join {url} within {timeout_s:g} s") from None
    except BaseException:
        await hive.close()
        raise
    say(f"joined: {len(hive.node.peers)} peers linked")
    return hive


_DEFAULTS = ClientConfig()


@dataclass
class AskerPart:
    """What stays on the asker: embedding, head, the first `local_layers` layers and the last
    `tail_layers`, loaded on (and computed by) one thread of its own, reusable across clients."""

    executor: ShardExecutor
    pool: ThreadPoolExecutor
    local_layers: int
    weights: str
    tail_layers: int = _DEFAULTS.local_tail_layers

    @classmethod
    def load(cls, file: GGUFModelFile, *, local_layers: int = _DEFAULTS.local_layers,
             weights: str, nice: int = 0, gate: FrameGate | None = None,
             tail_layers: int = _DEFAULTS.local_tail_layers,
             allow_dequant: bool = False) -> AskerPart:
        n = file.config.n_layers
        if local_layers < 0 or tail_layers < 0 or local_layers + tail_layers >= n:
            raise ExecError(f"local layers ({local_layers} first, {tail_layers} last) must "
                            f"leave some of the model's {n} layers to the hive")
        stages = [Stage(0, local_layers)] if local_layers else []
        stages += [Stage(n - tail_layers, n)] if tail_layers else []
        executor, pool = load_local(lambda: ShardExecutor.load(
            file, stages, embed=True, head=True, weights=weights, allow_dequant=allow_dequant),
            nice, gate)
        return cls(executor, pool, local_layers, weights, tail_layers)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


async def find_route(hive: HiveNode, file: GGUFModelFile, *, replicas: int, first_layer: int,
                     prefer: str | None, timeout_s: float,
                     say: Say = lambda _m: None, last_layer: int | None = None,
                     reputation: ReputationBook | None = None, topology: str = "star",
                     ) -> tuple[Plan, dict[bytes, ShardInfo]]:
    """Link to the model's servers, ask each what it holds, and route layers `first_layer` ..
    `last_layer` over them, leaving out what `reputation` excludes (after checking the
    verdicts published against them); ExecError when no server of the model answers."""
    name, cfg = model_name(file.path), file.config
    say(f"looking up the servers of {name} ...")
    owners = await find_span_owners(hive, name, cfg.n_layers)
    say(f"{len(owners)} nodes publish layers of {name}; linking to them ...")
    await link_nodes(hive, owners, timeout_s)
    infos = await discover(hive.node, timeout=timeout_s)
    say(f"{len(infos)} shard servers answered")
    rtts = await measured_rtts(hive, list(infos), min(timeout_s, PING_TIMEOUT_S))
    health, roles = await asyncio.gather(published_health(hive, list(infos)),
                                         published_roles(hive, list(infos)))
    links = await published_links(hive, list(infos)) if topology == "cascade" else None
    exclude: set[bytes] = set()
    if reputation is not None:
        exclude = await VerdictBoard(hive, reputation).review(infos)
        exclude |= {n for n in infos if reputation.excluded(n)}
        if exclude:
            say(f"leaving out {len(exclude)} slashed or banned servers")
    planner = planner_mode()
    plan = route(infos, cfg, name, replicas, rtts, first_layer=first_layer, prefer=prefer,
                 last_layer=last_layer, salt=os.urandom(32), exclude=exclude, health=health,
                 roles=roles, replan=planner != "spans", links=links, split=planner != "whole")
    if plan.left_out:
        say(f"left out (they would slow the route): "
            f"{' '.join(n.hex()[:8] for n in plan.left_out)}")
    say("route: " + ", ".join(
        f"layers {ps.stage.start}-{ps.stage.end} on {' '.join(n.hex()[:8] for n in ps.nodes)}"
        for ps in plan.stages))
    return plan, infos


def planner_mode() -> str:
    """$CADENCIA_PLANNER (see `PLANNER_ENV`); ExecError on a value it does not know."""
    mode = os.environ.get(PLANNER_ENV, "auto") or "auto"
    if mode not in PLANNER_CHOICES:
        raise ExecError(f"{PLANNER_ENV}={mode[:40]!r}: expected one of {', '.join(PLANNER_CHOICES)}")
    return mode


async def connect(hive: HiveNode, file: GGUFModelFile, asker: AskerPart, *, replicas: int,
                  config: ClientConfig | None = None, on_event: Consumer | None = None,
                  timeout_s: float, own_part: bool = False, say: Say = lambda _m: None,
                  reputation: ReputationBook | None = None,
                  data_dir: Path | None = None) -> HiveClient:
    """A client routing `file` over the hive `hive` has joined, computing its own part on
    `asker`'s thread. With `own_part`, closing the client shuts that thread down.
    `reputation` (else one kept in `data_dir`, else in memory) holds the verdicts and bans."""
    config = config or ClientConfig()
    if (config.local_layers, config.local_tail_layers) != (asker.local_layers, asker.tail_layers):
        raise ExecError(f"the client runs {config.local_layers} first and "
                        f"{config.local_tail_layers} last layers but the asker holds "
                        f"{asker.local_layers} and {asker.tail_layers}")
    n = file.config.n_layers
    if reputation is None:
        reputation = ReputationBook(store=VerdictStore.in_dir(data_dir) if data_dir else None)
    if reputation.replayer is None:
        reputation.replayer = shared_replayer(file)
    plan, infos = await find_route(hive, file, replicas=replicas, first_layer=asker.local_layers,
                                   prefer=asker.weights, timeout_s=timeout_s, say=say,
                                   last_layer=n - asker.tail_layers, reputation=reputation,
                                   topology=config.topology)
    spares = [n for n in infos if n not in plan.nodes and not reputation.excluded(n)]
    health = await published_health(hive, list(infos))
    client = HiveClient(hive.node, asker.executor, plan, config, spares=spares,
                        on_event=on_event, weights=weights_of(infos), pool=asker.pool,
                        own_pool=own_part, reputation=reputation, health=health)
    VerdictBoard(hive, reputation).attach(client)
    return client


async def measured_rtts(hive: HiveNode, nodes: list[bytes], timeout_s: float,
                       pings: int = 3) -> dict[bytes, float]:
    """The asker's RTT to each of `nodes`, which the planner prices hops by: the least of
    `pings` pings now (a late answer is a busy server as often as a far one; the least is the
    path's own delay), else its link's ping average; never answered: left out."""
    node = hive.node
    out: dict[bytes, float] = {}

    async def one(target: bytes) -> None:
        link = node.peers.best(target)
        if link is None:
            return
        samples = []
        for _ in range(pings):
            try:
                samples.append(await asyncio.wait_for(node.ping(link), timeout_s))
            except (TimeoutError, ConnectionError, PeerUnavailable):
                break
        best = min(samples, default=link.rtt_ms)
        if best is not None:
            out[target] = best

    await asyncio.gather(*(one(n) for n in nodes))
    return out


async def _published(hive: HiveNode, nodes: list[bytes], kind: RecordKind,
                     record_type: type[T]) -> dict[bytes, T]:
    """Each node's own record of `kind` (the first one it signed), where the DHT has one."""
    found = await asyncio.gather(*(hive.dht.get(node_key(n, kind)) for n in nodes),
                                 return_exceptions=True)
    out: dict[bytes, T] = {}
    for node, records in zip(nodes, found, strict=True):
        if isinstance(records, BaseException):
            continue
        for record in records:
            value = decode_value(record)
            if owner_of(record) == node and isinstance(value, record_type):
                out[node] = value
                break
    return out


async def published_links(hive: HiveNode, nodes: list[bytes]) -> dict[tuple[bytes, bytes], float]:
    """The map between `nodes`: each one's published RTT to each other one (its links record)."""
    wanted = set(nodes)
    return {(node, p.node_id): p.rtt_ms
            for node, value in (await _published(hive, nodes, RecordKind.LINKS, LinksRecord)).items()
            for p in value.peers if p.node_id in wanted}


async def published_roles(hive: HiveNode, nodes: list[bytes]) -> dict[bytes, tuple[str, ...]]:
    """Each node's roles as it published them ("alpha", "beta", ...): who may take a split."""
    return {node: tuple(r.name.lower() for r in value.roles)
            for node, value in (await _published(hive, nodes, RecordKind.ROLES, RolesRecord)).items()}


async def published_health(hive: HiveNode, nodes: list[bytes]) -> dict[bytes, HealthRecord]:
    """Each node's Health record as it published it in the DHT (what its receipts pay by)."""
    return await _published(hive, nodes, RecordKind.HEALTH, HealthRecord)
