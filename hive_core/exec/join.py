"""Asking a live hive: the one join path every client takes (`ask`, the game, the API).

`join_hive` starts a mesh node of the asker's own joined at an entry URL. `AskerPart` is what
stays on the asker's device (the embedding, the head and its local layers) on the thread that
computes with it. `connect` finds the servers whose signed layer-span records serve the
model, links to them, asks what each holds, routes the model's layers over them and returns
a `HiveClient` ready for sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from hive_core.base.identity import Identity
from hive_core.base.stage import Stage
from hive_core.events import Consumer
from hive_core.exec.client import ClientConfig, HiveClient, load_local
from hive_core.exec.errors import ExecError
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.remote import discover, find_span_owners, link_nodes, route, weights_of
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions
from hive_core.mesh.runner import LOOPBACK_HOSTS
from hive_core.mesh.wschannel import parse_ws_url
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.protocol.inference import ShardInfo
from hive_core.sched.planner import Plan

Say = Callable[[str], None]
MAX_MODEL_NAME = 128  # bytes of a model name in layer-span records and shard info


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


@dataclass
class AskerPart:
    """What stays on the asker: embedding, head and the first `local_layers` layers, loaded on
    (and computed by) one thread of its own, reusable across clients."""

    executor: ShardExecutor
    pool: ThreadPoolExecutor
    local_layers: int
    weights: str

    @classmethod
    def load(cls, file: GGUFModelFile, *, local_layers: int = 0, weights: str,
             nice: int = 0, gate: FrameGate | None = None) -> AskerPart:
        if not 0 <= local_layers < file.config.n_layers:
            raise ExecError(f"local layers must be in 0..{file.config.n_layers - 1}, "
                            f"got {local_layers}")
        stages = [Stage(0, local_layers)] if local_layers else []
        executor, pool = load_local(lambda: ShardExecutor.load(
            file, stages, embed=True, head=True, weights=weights), nice, gate)
        return cls(executor, pool, local_layers, weights)

    def close(self) -> None:
        self.pool.shutdown(wait=False)


async def find_route(hive: HiveNode, file: GGUFModelFile, *, replicas: int, first_layer: int,
                     prefer: str | None, timeout_s: float,
                     say: Say = lambda _m: None) -> tuple[Plan, dict[bytes, ShardInfo]]:
    """Link to the model's servers, ask each what it holds, and route the layers from
    `first_layer` over them; ExecError when no server of the model answers."""
    name, cfg = model_name(file.path), file.config
    say(f"looking up the servers of {name} ...")
    owners = await find_span_owners(hive, name, cfg.n_layers)
    say(f"{len(owners)} nodes publish layers of {name}; linking to them ...")
    await link_nodes(hive, owners, timeout_s)
    infos = await discover(hive.node, timeout=timeout_s)
    say(f"{len(infos)} shard servers answered")
    rtts = {link.node_id: link.rtt_ms for link in hive.node.peers.all() if link.rtt_ms is not None}
    plan = route(infos, cfg, name, replicas, rtts, first_layer=first_layer, prefer=prefer)
    say("route: " + ", ".join(
        f"layers {ps.stage.start}-{ps.stage.end} on {' '.join(n.hex()[:8] for n in ps.nodes)}"
        for ps in plan.stages))
    return plan, infos


async def connect(hive: HiveNode, file: GGUFModelFile, asker: AskerPart, *, replicas: int,
                  config: ClientConfig | None = None, on_event: Consumer | None = None,
                  timeout_s: float, own_part: bool = False, say: Say = lambda _m: None) -> HiveClient:
    """A client routing `file` over the hive `hive` has joined, computing its own part on
    `asker`'s thread. With `own_part`, closing the client shuts that thread down."""
    config = config or ClientConfig()
    if config.local_layers != asker.local_layers:
        raise ExecError(f"the client runs {config.local_layers} local layers but the asker "
                        f"holds {asker.local_layers}")
    plan, infos = await find_route(hive, file, replicas=replicas, first_layer=asker.local_layers,
                                   prefer=asker.weights, timeout_s=timeout_s, say=say)
    spares = [n for n in sorted(infos) if n not in plan.nodes]
    return HiveClient(hive.node, asker.executor, plan, config, spares=spares,
                      on_event=on_event, weights=weights_of(infos), pool=asker.pool,
                      own_pool=own_part)
