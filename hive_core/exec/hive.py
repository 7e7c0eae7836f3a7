"""A hive in one process: shard servers and an asker wired by in-memory or real aiortc
channels (tests, benchmarks, `cadencia ask --hive local:N`).

Every server loads only its own stage from the GGUF file; the asker loads the embedding, the
head and its own first and last layers (`ClientConfig`); all of them hold their matrices in
one weights mode (packed, fp32 or bf16), unless a test gives some servers another, and a test
may put servers on other kernel paths (`server_kernels`) to mix kernel classes. The links are
authenticated `Node` links like the live mesh's. The asker replays disputed steps on its own
copy of the model, and pays receipts by the Health record of this device (where the servers
run), or the ones a test gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hive_core.base.health import HealthRecord
from hive_core.base.identity import Identity
from hive_core.base.stage import Stage, even_stages
from hive_core.events import Consumer
from hive_core.exec.client import ClientConfig, HiveClient, load_local
from hive_core.exec.faults import Fault
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.remote import grade
from hive_core.exec.replay import shared_replayer
from hive_core.exec.server import ServerConfig, ShardServer
from hive_core.exec.worker_fork import ForkServer, forking
from hive_core.mesh.memchannel import LinkProfile, memory_pair
from hive_core.mesh.node import Node
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.sched.health import measure_health
from hive_core.sched.planner import Plan, fixed_plan
from hive_core.trust import ReputationBook

Tap = Callable[[bytes, bytes], None]  # (receiving node id, frame bytes)


def identity(name: str) -> Identity:
    return Identity.from_seed(hashlib.blake2b(name.encode(), digest_size=32).digest())


class TapChannel:
    """Wraps a channel end and reports every frame it receives (privacy tests)."""

    def __init__(self, inner: Any, owner: bytes, tap: Tap) -> None:
        self.inner, self.owner, self.tap = inner, owner, tap

    @property
    def label(self) -> str:
        return str(self.inner.label)

    @property
    def closed(self) -> bool:
        return bool(self.inner.closed)

    async def send(self, data: bytes) -> None:
        await self.inner.send(data)

    async def recv(self) -> bytes:
        data = await self.inner.recv()
        self.tap(self.owner, bytes(data))
        return data

    def __aiter__(self) -> Any:
        return self.inner.__aiter__()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class InProcessHive:
    """The asker's node and client, the servers, and what to close."""

    asker: Node
    client: HiveClient
    servers: list[ShardServer]
    peers: list[Any] = field(default_factory=list)  # RTCPeer objects to close

    @property
    def node_ids(self) -> list[bytes]:
        return [s.node.node_id for s in self.servers]

    async def close(self) -> None:
        self.client.close()
        for s in self.servers:
            await s.close()
            await s.node.close()
        await self.asker.close()
        for p in self.peers:
            if p.alive:  # closing an aiortc connection twice never returns
                await p.close()


async def _link(a: Node, b: Node, transport: str, tap: Tap | None, peers: list[Any],
                profile: LinkProfile | None) -> None:
    ca: Any
    cb: Any
    rtc_a: Any
    rtc_b: Any
    if transport == "rtc":
        from hive_core.mesh.rtc import connect_pair

        pa, pb, ca, cb = await connect_pair()
        peers += [pa, pb]
        rtc_a, rtc_b = pa, pb
    elif transport == "memory":
        ca, cb = memory_pair(profile=profile or LinkProfile())
        rtc_a = rtc_b = None
    else:
        raise ValueError(f"unknown transport {transport!r}: memory or rtc")
    if tap is not None:
        cb = TapChannel(cb, b.node_id, tap)
    await asyncio.gather(a.attach(ca, kind=transport, expect=b.node_id, rtc=rtc_a),
                         b.attach(cb, kind=transport, expect=a.node_id, rtc=rtc_b))


async def build_hive(
    model_path: Path | str,
    n_servers: int,
    *,
    stages: Sequence[Stage] | None = None,
    replicas: int = 1,
    spares: int = 0,
    faults: dict[int, Fault] | None = None,
    transport: str = "memory",
    client_config: ClientConfig | None = None,
    profile: LinkProfile | None = None,
    tap: Tap | None = None,
    on_event: Consumer | None = None,
    model: GGUFModelFile | None = None,
    server_identities: Mapping[int, Identity] | None = None,
    compute_nice: int = 0,
    compute_process: bool = False,
    compute_gate: FrameGate | None = None,
    weights: str = "fp32",
    server_weights: Mapping[int, str] | None = None,
    server_kernels: Mapping[int, str] | None = None,
    health: Mapping[int, HealthRecord] | None = None,
    reputation: ReputationBook | None = None,
    fork_server: ForkServer | None = None,
) -> InProcessHive:
    """`n_servers` servers; stage k runs on servers k*replicas .. k*replicas+replicas-1.

    With `stages` None the layers are split evenly into ``n_servers // replicas`` stages.
    `spares` extra servers hold nothing at first (failover, referees, spot checks).
    `compute_nice` lowers the servers' compute threads' OS priority (a game hosting them);
    `compute_process` runs each server's stage compute in a child process of its own, each
    forked from one process that imported torch and mapped the model once (`fork_server`, if
    the caller started it early; it is closed once the servers are built).
    `compute_gate` (a game's `FrameGate`) holds the servers' and the asker's compute back
    while a frame renders.
    `server_identities` gives server k a key of its own (e.g. the player's, so its receipts
    pay the player); the others get fixed test keys.
    `weights` is how the servers and the asker hold their matrices (`hive_core.model.modes`);
    `server_weights` gives server k another mode (replicas of one stage must share a mode:
    the client refuses a mix); `server_kernels` puts server k's packed matrices on another
    kernel path ("avx2", "portable", "int4": another kernel class).
    `health` gives server k's published Health record (receipts are paid by it); the others
    report this device's. `reputation`: the asker's book (e.g. one with a store).
    """
    file = model or GGUFModelFile(model_path)
    n_layers = file.config.n_layers
    if replicas < 1 or n_servers < replicas:
        raise ValueError(f"{n_servers} servers cannot hold {replicas} replicas per stage")
    config = client_config or ClientConfig()
    n_local, n_tail = config.local_layers, config.local_tail_layers
    if n_local + n_tail >= n_layers:
        raise ValueError(f"{n_local} + {n_tail} local layers leave none of {n_layers} to serve")
    if stages is None:
        stages = [Stage(s.start + n_local, s.end + n_local)
                  for s in even_stages(n_layers - n_local - n_tail, n_servers // replicas)]
    stages = list(stages)
    if len(stages) * replicas > n_servers:
        raise ValueError(f"{len(stages)} stages x {replicas} replicas need more than {n_servers} servers")
    faults = faults or {}
    modes = {k: (server_weights or {}).get(k, weights) for k in range(n_servers + spares)}
    asker = Node(identity("asker"))
    servers: list[ShardServer] = []
    groups: list[list[bytes]] = [[] for _ in stages]
    if fork_server is not None and not compute_process:
        fork_server.close()  # nothing to fork
    # Child processes are forked from one that imported torch and mapped the file once.
    with forking(str(file.path), fork_server) if compute_process else contextlib.nullcontext():
        for k in range(n_servers + spares):
            node = Node((server_identities or {}).get(k) or identity(f"server-{k}"))
            stage_index = k // replicas
            preload = (stages[stage_index],) if k < len(stages) * replicas else ()
            if preload:
                groups[stage_index].append(node.node_id)
            cfg = ServerConfig(preload=preload, fault=faults.get(k), fault_seed=k,
                               compute_nice=compute_nice, weights=modes[k],
                               compute_process=compute_process, compute_gate=compute_gate,
                               kernel_path=(server_kernels or {}).get(k, ""))
            servers.append(ShardServer(node, file, cfg))
    plan: Plan = fixed_plan(stages, groups)
    own = [Stage(0, n_local)] if n_local else []
    own += [Stage(n_layers - n_tail, n_layers)] if n_tail else []
    local, pool = load_local(lambda: ShardExecutor.load(
        file, own, embed=True, head=True, weights=weights), config.compute_nice, compute_gate)
    spare_ids = [s.node.node_id for s in servers[len(stages) * replicas:]]
    here = device_health()
    published = {s.node.node_id: (health or {}).get(k, here) for k, s in enumerate(servers)}
    client = HiveClient(asker, local, plan, config, reputation=reputation or ReputationBook(),
                        spares=spare_ids, on_event=on_event,
                        weights={s.node.node_id: grade(s.config.weights, s.kernel)
                                 for s in servers}, pool=pool,
                        health=published, replayer=shared_replayer(file))
    hive_peers: list[Any] = []
    await asyncio.gather(*(_link(asker, s.node, transport, tap, hive_peers, profile)
                           for s in servers))
    if config.topology == "cascade":  # hidden states go server to server
        await asyncio.gather(*(_link(a.node, b.node, transport, tap, hive_peers, profile)
                               for k, a in enumerate(servers) for b in servers[k + 1:]))
    if "int4" in (server_kernels or {}).values():
        for s in servers:  # an int4 load turns our kernel off process-wide while it packs
            await s.start()
    else:
        await asyncio.gather(*(s.start() for s in servers))
    return InProcessHive(asker, client, servers, hive_peers)


def device_health() -> HealthRecord:
    """This device's Health record (its real sensors; no TFLOPS benchmark): in-process
    servers run here, so this is what they would publish."""
    return measure_health((), uptime_s=0.0, tflops=0.0).to_health_record()
