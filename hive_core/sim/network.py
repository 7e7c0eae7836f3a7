"""The simulated network: real DhtNodes joined by in-memory channels shaped by a latency model.

Each node is a `DhtNode` with its own Ed25519 identity, speaking the wire codec through
`RpcEndpoint`s over `MemoryChannel` pairs. A link opens on first use (as the runtime
opens a data channel through signaling), optionally after `setup_rtts` round trips of
handshake, and its one-way delay is half the model's RTT for that pair, plus jitter and
loss. A failed node stops silently: its links stop reading, so peers see timeouts, not
a clean close (a laptop lid shut, a phone out of coverage).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.dht import ChannelRpc, DhtConfig, DhtNode, RpcEndpoint
from hive_core.mesh.memchannel import LinkProfile, MemoryChannel, memory_pair
from hive_core.protocol import Contact
from hive_core.sim.errors import SimError
from hive_core.sim.latency import LatencyModel

EPOCH_S = 1_750_000_000.0  # 2025-06-15: the simulated hive's wall clock starts here


@dataclass
class SimNode:
    """One simulated peer and the tasks and channel ends that die with it."""

    index: int  # row in the latency model
    dht: DhtNode
    mux: ChannelRpc  # its links, one RpcEndpoint per peer
    alive: bool = True
    joined: bool = False  # bootstrap finished
    channels: list[MemoryChannel] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def node_id(self) -> bytes:
        return self.dht.node_id


class SimNetwork:
    """Spawns, links and kills simulated nodes on the running (virtual-time) loop."""

    def __init__(
        self,
        latency: LatencyModel,
        config: DhtConfig,
        *,
        seed: int = 0,
        loss: float = 0.0,
        jitter: float = 0.1,
        setup_rtts: float = 0.0,
        epoch_s: float | None = None,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise SimError(f"loss must be in [0, 1), got {loss}")
        if jitter < 0 or setup_rtts < 0:
            raise SimError("jitter and setup_rtts must be >= 0")
        self.latency = latency
        self.config = config
        self.loss = loss
        self.jitter = jitter  # per-message extra delay, up to this fraction of the one-way delay
        self.setup_rtts = setup_rtts
        self.rng = random.Random(seed)
        self.seed = seed
        # wall clock (record expiry) at virtual 0: fixed, so a run depends on its seed only
        self.epoch_s = EPOCH_S if epoch_s is None else epoch_s
        self.nodes: dict[bytes, SimNode] = {}
        self.by_index: dict[int, SimNode] = {}
        self.links_opened = 0
        self.rpcs = 0

    def now(self) -> float:
        """Simulated seconds since the start."""
        return asyncio.get_running_loop().time()

    def spawn(self, index: int) -> SimNode:
        """Create node `index` (not yet joined); its identity is derived from seed and index."""
        if not 0 <= index < self.latency.size:
            raise SimError(f"node {index} is outside the latency model's {self.latency.size}")
        if index in self.by_index:
            raise SimError(f"node {index} exists already")
        seed = self.seed.to_bytes(8, "big", signed=True) + index.to_bytes(24, "big")
        ident = Identity.from_seed(seed)
        sim: SimNode
        rpc = ChannelRpc(connect=lambda contact: self._connect(sim, contact))
        dht = DhtNode(ident, f"sim:{index}", self._counting(rpc), config=self.config,
                      clock=lambda: self.epoch_s + self.now(),
                      rng=random.Random(self.rng.getrandbits(64)))
        sim = SimNode(index, dht, rpc)
        self.nodes[sim.node_id] = sim
        self.by_index[index] = sim
        return sim

    def _counting(self, rpc: ChannelRpc) -> Any:
        async def call(contact: Contact, request: Any) -> Any:
            self.rpcs += 1
            return await rpc(contact, request)

        return call

    def profile(self, i: int, j: int) -> LinkProfile:
        one_way = self.latency.one_way_s(i, j)
        return LinkProfile(latency_s=one_way, jitter_s=self.jitter * one_way, loss=self.loss)

    async def _connect(self, me: SimNode, contact: Contact) -> RpcEndpoint:
        peer = self.nodes.get(contact.node_id)
        if peer is None:
            raise ConnectionError(f"no simulated node {contact.address}")
        rtt = 2.0 * self.latency.one_way_s(me.index, peer.index)
        if not peer.alive or not me.alive:
            # a connection attempt to a silent peer fails only when the caller gives up
            await asyncio.sleep(2.0 * self.config.rpc_timeout_s)
            raise ConnectionError(f"{contact.address} does not answer")
        if self.setup_rtts:
            await asyncio.sleep(self.setup_rtts * rtt)
        existing = me.mux.endpoints.get(peer.node_id)
        if existing is not None and not existing.channel.closed:
            return existing  # the peer opened one to us meanwhile
        a, b = memory_pair(profile=self.profile(me.index, peer.index),
                           back=self.profile(peer.index, me.index),
                           seed=self.rng.getrandbits(32))
        timeout = self.config.rpc_timeout_s
        mine = RpcEndpoint(a, peer.dht.contact, me.dht.handle, timeout_s=timeout)
        theirs = RpcEndpoint(b, me.dht.contact, peer.dht.handle, timeout_s=timeout)
        peer.mux.add(theirs)
        me.channels.append(a)
        peer.channels.append(b)
        self.background(me, mine.serve())
        self.background(peer, theirs.serve())
        self.links_opened += 1
        return mine

    def background(self, node: SimNode, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as part of `node`: it is cancelled if the node fails."""
        task = asyncio.get_running_loop().create_task(coro)
        node.tasks.add(task)
        task.add_done_callback(node.tasks.discard)
        return task

    async def join(self, node: SimNode, seed: SimNode | None) -> int:
        """Bootstrap `node` through `seed` (None: it is the first node); returns its table size."""
        if seed is not None:
            await node.dht.bootstrap([seed.dht.contact])
        node.joined = True
        node.dht.start(period_s=30.0)
        return len(node.dht.routing)

    def converge(self, nodes: list[SimNode]) -> None:
        """Fill the routing tables of `nodes` as a long-settled hive would have them.

        Every node offers every other node to its own table, nearest (by RTT) first, so
        that each k-bucket holds its lowest-RTT members: what the table's proximity
        rule converges to once a node has exchanged with everyone. This replaces N
        protocol bootstraps (O(N log N) lookups of Python codec work) with O(N^2) table
        inserts; joins after this still run the real bootstrap.
        """
        for me in nodes:
            row = self.latency.rtt_ms[me.index]
            others = sorted((n for n in nodes if n is not me), key=lambda n: row[n.index])
            for other in others:
                me.dht.add_contact(other.dht.contact, rtt_s=float(row[other.index]) / 1000.0)
            me.joined = True
            me.dht.start(period_s=30.0)

    def fail(self, node: SimNode) -> None:
        """Stop `node` silently: no more reading, answering or asking."""
        node.alive = False
        for task in list(node.tasks):
            task.cancel()
        maintenance = node.dht._maintenance
        if maintenance is not None:
            maintenance.cancel()

    def live(self) -> list[SimNode]:
        """Nodes that are up and have joined."""
        return [n for n in self.by_index.values() if n.alive and n.joined]

    async def shutdown(self) -> None:
        """Stop every node and close every channel (end of a run)."""
        for node in self.by_index.values():
            self.fail(node)
            await node.dht.stop()
        for node in self.by_index.values():
            for ch in node.channels:
                await ch.close()
