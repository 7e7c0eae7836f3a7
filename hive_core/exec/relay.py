"""Tunnels through one relay peer: a link between a throwaway key and a node, carried by a third.

Three roles, all served by one `Relaying` per mesh node:

- the **opener** (an asker) asks a relay for a circuit to a target, naming a throwaway public
  key, and gets a `TunnelChannel` it attaches to a `Node` of that throwaway identity;
- the **relay** pairs the opener's circuit with one of its own to the target and forwards
  `TunnelFrame`s both ways, in order, through a bounded queue per direction;
- the **target** accepts the circuit, attaches its end of the tunnel to its own `Node` as a
  link to the throwaway key, and serves it like any link (a shard server needs no change).

Every frame is sealed end to end between the throwaway key and the target's key, bound to
the tunnel's nonce, its direction and its sequence number: the relay sees sizes and timing,
never content, and a frame it changes, drops, reorders or replays fails to open, which
closes the tunnel (a dropped frame is found by the next one). The target learns the
relay's id and the throwaway key, never the opener's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hive_core.base.identity import Identity, node_id_of
from hive_core.exec.errors import ExecError
from hive_core.exec.tunnel import TUNNEL_KIND, TunnelChannel
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.mesh.peers import Link
from hive_core.protocol.handshake import HandshakeError
from hive_core.protocol.messages import Error, ErrorCode
from hive_core.protocol.tunnel import (
    CIRCUIT_BYTES,
    NONCE_BYTES,
    TunnelClose,
    TunnelFrame,
    TunnelOpen,
    TunnelOpened,
)
from hive_core.trust import SealError, box_between

logger = logging.getLogger(__name__)


class RelayError(ExecError):
    """A relay refused a tunnel, could not reach its target, or stopped forwarding."""


@dataclass(frozen=True)
class RelayConfig:
    """Limits of the relay and target roles (one node's share of the work it does for others)."""

    max_circuits: int = 1024  # circuits this node relays at once
    max_per_peer: int = 64  # circuits one opener may hold here; tunnels one relay may end here
    queue_frames: int = 64  # frames waiting per direction: a circuit whose end stalls is cut
    open_timeout_s: float = 10.0  # the target's answer to a TunnelOpen

    def __post_init__(self) -> None:
        if min(self.max_circuits, self.max_per_peer, self.queue_frames) < 1:
            raise ValueError("relay limits must be at least 1")
        if self.open_timeout_s <= 0:
            raise ValueError("the open timeout must be positive")


class _Circuit:
    """A relayed pair of circuits: (opener, its id) <-> (target, our id), one queue each way."""

    def __init__(self, owner: Relaying, opener: tuple[bytes, bytes],
                 target: tuple[bytes, bytes]) -> None:
        self.owner = owner
        self.ends = (opener, target)
        # None in a queue: its end closed the circuit once the frames before it are passed on.
        self.queues: dict[tuple[bytes, bytes], asyncio.Queue[bytes | None]] = {
            k: asyncio.Queue(maxsize=owner.config.queue_frames) for k in self.ends}
        self.reason = ""
        self.pumps = [owner.node.spawn(self._pump(src, dst), name="relay pump",
                                       expected=(PeerUnavailable,))
                      for src, dst in (self.ends, self.ends[::-1])]
        self.closed = False

    def other(self, end: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
        return self.ends[1] if end == self.ends[0] else self.ends[0]

    def push(self, src: tuple[bytes, bytes], sealed: bytes) -> None:
        try:
            self.queues[src].put_nowait(sealed)
        except asyncio.QueueFull:
            self.owner.spawn_cut(self, "a tunnel end stopped reading")

    def close_from(self, src: tuple[bytes, bytes], reason: str) -> None:
        """`src` closed the circuit: what it sent before (its last receipts) still goes on."""
        self.reason = reason
        try:
            self.queues[src].put_nowait(None)
        except asyncio.QueueFull:
            self.owner.spawn_cut(self, reason)

    async def _pump(self, src: tuple[bytes, bytes], dst: tuple[bytes, bytes]) -> None:
        queue = self.queues[src]
        while True:
            sealed = await queue.get()
            if sealed is None:
                await self.owner.cut(self, self.reason, skip=src)
                return
            try:
                await self.owner.node.send(dst[0], TunnelFrame(dst[1], sealed))
            except PeerUnavailable:
                await self.owner.cut(self, "a tunnel end is gone")
                return
            self.owner.stats["frames"] += 1
            self.owner.stats["bytes"] += len(sealed)


class Relaying:
    """The tunnel roles of one node: open tunnels (always), relay and end them (`serve`)."""

    def __init__(self, node: Node, config: RelayConfig | None = None) -> None:
        if node in _INSTALLED:  # two services would both answer every tunnel message
            raise ValueError(f"{node} already has its tunnel service (use `relaying`)")
        _INSTALLED[node] = self
        self.node = node
        self.config = config or RelayConfig()
        self.relays = False  # forwards other askers' circuits
        self.accepts = False  # ends tunnels: serves throwaway keys like linked peers
        self.link_to: Callable[[bytes], Awaitable[object]] | None = None  # link a target first
        self._routes: dict[tuple[bytes, bytes], TunnelChannel | _Circuit] = {}
        self.stats = {"circuits": 0, "frames": 0, "bytes": 0, "tunnels_ended": 0}
        node.register_reply(TunnelOpened)
        node.on(TunnelOpen, self._on_open)
        node.on(TunnelFrame, self._on_frame)
        node.on(TunnelClose, self._on_close)
        node.on_link_lost.append(self._on_link_lost)

    # -- the opener -------------------------------------------------------------------

    async def open_tunnel(self, relay: bytes, target: bytes, opener: Identity,
                          timeout_s: float) -> TunnelChannel:
        """A tunnel to `target` through `relay` for `opener` (a throwaway identity); RelayError
        if the relay refuses, cannot reach the target, or names a key that is not the target's."""
        name = relay.hex()[:12]
        circuit, nonce = os.urandom(CIRCUIT_BYTES), os.urandom(NONCE_BYTES)
        # Registered before asking: the target's first frame may come before the relay's answer.
        channel = TunnelChannel(self, relay, circuit, nonce, opener=True, box=None)
        self._routes[(relay, circuit)] = channel
        try:
            reply = await self.node.request(relay, TunnelOpen(
                self.node.next_rpc_id(), circuit, target, opener.public_key, nonce),
                timeout=timeout_s)
        except PeerUnavailable as exc:
            channel.ended("no answer")
            raise RelayError(f"relay {name}: {exc}") from None
        if isinstance(reply, Error):
            channel.ended("refused")
            raise RelayError(f"relay {name} refused: {reply.message}")
        if not isinstance(reply, TunnelOpened) or not reply.ok:
            channel.ended("refused")
            why = reply.error if isinstance(reply, TunnelOpened) else type(reply).__name__
            raise RelayError(f"relay {name} could not open a tunnel to {target.hex()[:12]}: {why}")
        if node_id_of(reply.target_key) != target:
            await channel.close("wrong target key")
            raise RelayError(f"relay {name} answered with a key that is not {target.hex()[:12]}'s")
        channel.box = box_between(opener, reply.target_key)
        return channel

    # -- handlers ---------------------------------------------------------------------

    def _on_open(self, peer: bytes, msg: TunnelOpen) -> asyncio.Future[None]:
        if msg.target == self.node.node_id:
            return asyncio.ensure_future(self._accept(peer, msg))
        return asyncio.ensure_future(self._relay(peer, msg))

    def _on_frame(self, peer: bytes, msg: TunnelFrame) -> None:
        route = self._routes.get((peer, msg.circuit))
        if isinstance(route, TunnelChannel):
            route.deliver(msg.sealed)
        elif route is not None:
            route.push((peer, msg.circuit), msg.sealed)
        else:
            logger.debug("%s: frame on an unknown circuit from %s", self.node, peer.hex()[:12])

    def _on_close(self, peer: bytes, msg: TunnelClose) -> None:
        route = self._routes.get((peer, msg.circuit))
        if isinstance(route, TunnelChannel):
            route.ended(f"closed by the far side: {msg.reason}")
        elif route is not None:
            route.close_from((peer, msg.circuit), msg.reason)

    def _on_link_lost(self, link: Link) -> None:
        if self.node.peers.best(link.node_id) is not None:
            return  # another link to that peer carries on
        for (peer, _), route in list(self._routes.items()):
            if peer != link.node_id:
                continue
            if isinstance(route, TunnelChannel):
                route.ended("the relay's link was lost")
            else:
                self.spawn_cut(route, "a tunnel end's link was lost")

    # -- the relay --------------------------------------------------------------------

    async def _relay(self, peer: bytes, msg: TunnelOpen) -> None:
        if self.relays and self.link_to is not None and self.node.peers.best(msg.target) is None:
            try:  # a target this relay has no link to yet (a live hive links on demand)
                await asyncio.wait_for(self.link_to(msg.target), self.config.open_timeout_s)
            except (TimeoutError, ConnectionError, ValueError) as exc:
                logger.info("%s: no link to %s: %s", self.node, msg.target.hex()[:12], exc)
        why = self._refusal(peer, msg)
        if why is not None:
            await self._answer(peer, TunnelOpened(msg.rpc_id, why[0], why[1], bytes(32)))
            return
        ours = os.urandom(CIRCUIT_BYTES)
        circuit = _Circuit(self, (peer, msg.circuit), (msg.target, ours))
        for end in circuit.ends:  # before asking: the target may speak first
            self._routes[end] = circuit
        try:
            reply = await self.node.request(msg.target, TunnelOpen(
                self.node.next_rpc_id(), ours, msg.target, msg.opener_key, msg.nonce),
                timeout=self.config.open_timeout_s)
        except PeerUnavailable as exc:
            reply = TunnelOpened(0, ErrorCode.NOT_FOUND, f"target: {exc}"[:200], bytes(32))
        if isinstance(reply, Error):
            reply = TunnelOpened(0, reply.code, f"target: {reply.message}"[:200], bytes(32))
        if not isinstance(reply, TunnelOpened) or not reply.ok:
            await self.cut(circuit, "the target refused", notify=False)
            err = reply if isinstance(reply, TunnelOpened) else None
            await self._answer(peer, TunnelOpened(
                msg.rpc_id, err.code if err else ErrorCode.INTERNAL,
                err.error if err else "the target answered oddly", bytes(32)))
            return
        link = self.node.peers.best(msg.target)
        if link is None:
            await self.cut(circuit, "the target's link was lost")
            await self._answer(peer, TunnelOpened(msg.rpc_id, ErrorCode.NOT_FOUND,
                                                  "the target's link was lost", bytes(32)))
            return
        self.stats["circuits"] += 1
        # The key the authenticated link proved, not what the target said.
        await self._answer(peer, TunnelOpened(msg.rpc_id, ErrorCode.OK, "", link.public_key))

    def _refusal(self, peer: bytes, msg: TunnelOpen) -> tuple[ErrorCode, str] | None:
        if not self.relays:
            return ErrorCode.UNSUPPORTED, "this node does not relay"
        if msg.target == peer:
            return ErrorCode.MALFORMED, "a tunnel to yourself"
        if self.node.peers.best(msg.target) is None:
            return ErrorCode.NOT_FOUND, f"no link to {msg.target.hex()[:12]}"
        if (peer, msg.circuit) in self._routes:
            return ErrorCode.MALFORMED, "circuit id already in use"
        circuits = {id(r) for r in self._routes.values() if isinstance(r, _Circuit)}
        if len(circuits) >= self.config.max_circuits:
            return ErrorCode.OVERLOADED, "relaying as many circuits as it may"
        if sum(1 for (p, _), r in self._routes.items()
               if p == peer and isinstance(r, _Circuit)) >= self.config.max_per_peer:
            return ErrorCode.OVERLOADED, "you hold as many circuits here as one node may"
        return None

    async def cut(self, circuit: _Circuit, reason: str, *, notify: bool = True,
                  skip: tuple[bytes, bytes] | None = None) -> None:
        """Forget a relayed circuit and tell both ends (but `skip`, which closed it)."""
        if circuit.closed:
            return
        circuit.closed = True
        for end in circuit.ends:
            if self._routes.get(end) is circuit:
                del self._routes[end]
        for pump in circuit.pumps:
            if pump is not asyncio.current_task():
                pump.cancel()
        for end in circuit.ends if notify else ():
            if end != skip:
                try:
                    await self.node.send(end[0], TunnelClose(end[1], reason[:200]))
                except PeerUnavailable:
                    pass

    def spawn_cut(self, circuit: _Circuit, reason: str) -> None:
        self.node.spawn(self.cut(circuit, reason), name="cut circuit")

    # -- the target -------------------------------------------------------------------

    async def _accept(self, peer: bytes, msg: TunnelOpen) -> None:
        try:
            opener = node_id_of(msg.opener_key)
            box = box_between(self.node.identity, msg.opener_key)
        except (SealError, ValueError) as exc:
            await self._answer(peer, TunnelOpened(msg.rpc_id, ErrorCode.MALFORMED,
                                                  f"unusable opener key: {exc}"[:200], bytes(32)))
            return
        mine = sum(1 for (p, _), r in self._routes.items()
                   if p == peer and isinstance(r, TunnelChannel))
        why = ("this node ends no tunnels" if not self.accepts
               else "a tunnel from yourself" if opener == self.node.node_id
               else "circuit id already in use" if (peer, msg.circuit) in self._routes
               else "as many tunnels through that relay as it takes" if
               mine >= self.config.max_per_peer else "")
        if why:
            code = ErrorCode.UNSUPPORTED if not self.accepts else ErrorCode.OVERLOADED
            await self._answer(peer, TunnelOpened(msg.rpc_id, code, why, bytes(32)))
            return
        channel = TunnelChannel(self, peer, msg.circuit, msg.nonce, opener=False, box=box)
        self._routes[(peer, msg.circuit)] = channel
        self.stats["tunnels_ended"] += 1
        await self._answer(peer, TunnelOpened(msg.rpc_id, ErrorCode.OK, "",
                                              self.node.identity.public_key))
        try:
            await self.node.attach(channel, kind=TUNNEL_KIND, expect=opener, mode="both")
        except HandshakeError as exc:
            logger.info("%s: tunnel via %s refused: %s", self.node, peer.hex()[:12], exc)
            await channel.close("handshake failed")

    # -- plumbing ---------------------------------------------------------------------

    async def _answer(self, peer: bytes, reply: TunnelOpened) -> None:
        try:
            await self.node.send(peer, reply)
        except PeerUnavailable as exc:
            logger.info("%s: could not answer a tunnel open: %s", self.node, exc)

    def forget(self, relay: bytes, circuit: bytes) -> None:
        route = self._routes.get((relay, circuit))
        if isinstance(route, TunnelChannel):
            del self._routes[(relay, circuit)]

    def spawn_close(self, channel: TunnelChannel, reason: str) -> None:
        self.node.spawn(channel.close(reason), name="close tunnel")

    @property
    def circuits(self) -> int:
        """Circuits this node relays now."""
        return len({id(r) for r in self._routes.values() if isinstance(r, _Circuit)})


_INSTALLED: weakref.WeakKeyDictionary[Node, Relaying] = weakref.WeakKeyDictionary()


def relaying(node: Node, config: RelayConfig | None = None) -> Relaying:
    """The node's tunnel service, installed on first use (opening tunnels only)."""
    found = _INSTALLED.get(node)
    return found if found is not None else Relaying(node, config)


def serve_relay(node: Node, config: RelayConfig | None = None, *,
                hive: object | None = None) -> Relaying:
    """Make `node` relay other askers' tunnels and end tunnels opened to it (`cadencia node`
    and `sentinel` do, so any peer can be an asker's relay and any server reached by one).
    With `hive` (the node's `HiveNode`) a target not linked yet is linked through the mesh."""
    service = relaying(node, config)
    service.relays = service.accepts = True
    if hive is not None:
        from hive_core.exec.remote import link_nodes

        async def link(target: bytes) -> None:
            await link_nodes(hive, [target], service.config.open_timeout_s)

        service.link_to = link
    return service
