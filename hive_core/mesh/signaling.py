"""WebRTC signaling over the mesh: offers and answers relayed by sentinels or by any mesh peer.

A node that wants a data channel to node X sends a signed OFFER Signal to the peer it
reaches (the sentinel over WebSocket, or any mesh neighbour); each relay forwards it to X
over a direct link if it has one, else to its link XOR-closest to X, spending one ttl.
X answers the same way. Relays verify every Signal, so a forged one dies at the first hop.
Greedy routing dead-ends where the XOR-closest neighbour has no onward link, so before an
offer the node asks its own peers for X's signed reach record and, where it is linked to one
of the relays named there (nodes with a data channel to X), hands the offer to that relay.

Glare (both ends offer at once) is broken by id: the lower id's offer wins; the higher
side drops its own attempt and answers. A replayed offer (same sender and session) is
refused and logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.mesh.peers import Link
from hive_core.mesh.rtc import BadDescription, ConnectFailed, RTCPeer
from hive_core.protocol import (
    HandshakeError,
    Signal,
    SignalKind,
    make_signal,
    relayed,
    verify_signal,
)

logger = logging.getLogger(__name__)

SIGNAL_TTL = 8  # relays a Signal may take; a mesh of thousands needs about log2(N)/2
MAX_SEEN_SESSIONS = 10_000  # remembered (sender, session) pairs for replay refusal
MAX_ANSWERING = 32  # offers being answered at once; more are refused (each costs a connection)
RELAY_LOOKUP_S = 2.0  # longest wait for a target's reach record before routing greedily

RelayFinder = Callable[[bytes], Awaitable[list[bytes]]]


class Superseded(ConnectionError):
    """Our offer lost a glare race; the peer's offer builds the link instead."""


@dataclass
class _Outgoing:
    """One offer of ours waiting for its answer."""

    peer_id: bytes
    rtc: RTCPeer
    answer: asyncio.Future[str]


class Signaler:
    """Opens WebRTC links for `node`, and relays other nodes' signaling."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._outgoing: dict[int, _Outgoing] = {}
        self._connecting: dict[bytes, asyncio.Future[Link]] = {}
        self._seen: OrderedDict[tuple[bytes, int, int], None] = OrderedDict()
        self.relayed = 0
        self._answering = 0
        # Set by HiveNode: ids that relay signaling to a node (from its signed reach record),
        # looked up over existing links only.
        self.find_relays: RelayFinder | None = None
        node.signal_handler = self.handle

    # -- opening a link ----------------------------------------------------------------

    async def connect(self, peer_id: bytes, via: Link | None = None) -> Link:
        """A WebRTC link to `peer_id`, signaled through `via` (default: the best route)."""
        existing = self.node.peers.rtc(peer_id)
        if existing is not None:
            return existing
        if peer_id == self.node.node_id:
            raise ConnectFailed("cannot connect to itself")
        running = self._connecting.get(peer_id)
        if running is not None:
            try:
                return await asyncio.shield(running)
            except ConnectionError as exc:
                # That attempt may have begun long before us (a join's, left to run in the
                # background) and its time is up; ours gets a fresh one, once.
                logger.debug("%s: a running attempt to %s failed (%s); trying again", self.node,
                             peer_id.hex()[:12], exc)
            existing = self.node.peers.rtc(peer_id)
            if existing is not None:
                return existing
            running = self._connecting.get(peer_id)
            if running is not None:
                return await asyncio.shield(running)
        fut: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        self._connecting[peer_id] = fut
        try:
            link = await self._connect(peer_id, via)
        except BaseException as exc:
            fut.set_exception(exc if isinstance(exc, Exception) else ConnectFailed("cancelled"))
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        else:
            fut.set_result(link)
            return link
        finally:
            self._connecting.pop(peer_id, None)

    async def _connect(self, peer_id: bytes, via: Link | None) -> Link:
        options = self.node.config.rtc
        rtc = RTCPeer(options, name=f"{self.node.node_id_hex[:6]}->{peer_id.hex()[:6]}")
        session = secrets.randbits(64)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._outgoing[session] = _Outgoing(peer_id, rtc, answer)
        try:
            if via is None and self.node.peers.best(peer_id) is None:
                via = await self._relay_link(peer_id)
            offer = await rtc.create_offer()
            sig = make_signal(self.node.identity, to_id=peer_id, kind=SignalKind.OFFER,
                              sdp=offer, session=session, ttl=SIGNAL_TTL)
            await self._route(sig, via)
            try:
                sdp = await asyncio.wait_for(answer, options.connect_timeout_s)
            except TimeoutError:
                raise ConnectFailed(f"no answer from {peer_id.hex()[:12]} in time") from None
            await rtc.accept_answer(sdp)
            channel = await rtc.wait_connected()
            return await self.node.attach(channel, kind="rtc", expect=peer_id, rtc=rtc)
        except Superseded:
            await rtc.close()
            return await self._wait_link(peer_id, options.connect_timeout_s)
        except (BadDescription, HandshakeError, PeerUnavailable) as exc:
            await rtc.close()
            raise ConnectFailed(f"connecting to {peer_id.hex()[:12]}: {exc}") from exc
        except BaseException:
            await rtc.close()
            raise
        finally:
            self._outgoing.pop(session, None)

    async def _wait_link(self, peer_id: bytes, timeout: float) -> Link:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            link = self.node.peers.rtc(peer_id)
            if link is not None:
                return link
            await asyncio.sleep(0.05)
        raise ConnectFailed(f"the link {peer_id.hex()[:12]} offered did not come up")

    # -- routing -----------------------------------------------------------------------

    async def _relay_link(self, peer_id: bytes) -> Link | None:
        """Our link to a relay the target's reach record names, if we have one."""
        if self.find_relays is None:
            return None
        try:
            relays = await asyncio.wait_for(self.find_relays(peer_id), RELAY_LOOKUP_S)
        except (TimeoutError, ConnectionError, ValueError) as exc:
            logger.info("%s: no reach record for %s: %s", self.node, peer_id.hex()[:12], exc)
            return None
        for relay in relays:
            link = self.node.peers.best(relay)
            if link is not None and relay not in (self.node.node_id, peer_id):
                return link
        return None

    def next_hop(self, to_id: bytes, *, exclude: set[bytes]) -> Link | None:
        """A direct link to `to_id`, else the link XOR-closest to it (greedy routing)."""
        direct = self.node.peers.best(to_id)
        if direct is not None:
            return direct
        closest = self.node.peers.closest(to_id, 1, exclude)
        return closest[0] if closest else None

    async def _route(self, sig: Signal, via: Link | None) -> None:
        hop = via if via is not None and self.node.peers.best(sig.to_id) is None else None
        hop = hop or self.next_hop(sig.to_id, exclude={self.node.node_id})
        if hop is None:
            raise PeerUnavailable(f"no route to {sig.to_id.hex()[:12]}")
        await self.node.send_on(hop, sig)

    # -- incoming ----------------------------------------------------------------------

    async def handle(self, link: Link, sig: Signal) -> None:
        """A Signal arrived on `link`: verify it, then relay it or act on it."""
        try:
            verify_signal(sig)
        except HandshakeError as exc:
            self.node.reject(link, f"signal: {exc}")
            return
        if sig.to_id != self.node.node_id:
            await self._relay(link, sig)
            return
        if sig.kind == SignalKind.OFFER:
            key = (sig.from_id, sig.session, int(sig.kind))
            if key in self._seen:
                self.node.reject(link, "signal: replayed offer (session already seen)")
                return
            self._seen[key] = None
            while len(self._seen) > MAX_SEEN_SESSIONS:
                self._seen.popitem(last=False)
            if self._answering >= MAX_ANSWERING:
                self.node.reject(link, f"signal: {MAX_ANSWERING} offers already being answered")
                return
            self._answering += 1
            try:
                await self._answer(link, sig)
            finally:
                self._answering -= 1
        elif sig.kind == SignalKind.ANSWER:
            pending = self._outgoing.get(sig.session)
            if pending is None or pending.peer_id != sig.from_id:
                logger.info("%s: answer for an unknown session from %s", self.node,
                            sig.from_id.hex()[:12])
            elif not pending.answer.done():
                pending.answer.set_result(sig.sdp)
        elif sig.kind == SignalKind.BYE:
            pending = self._outgoing.get(sig.session)
            if pending is not None and pending.peer_id == sig.from_id and not pending.answer.done():
                pending.answer.set_exception(ConnectFailed(f"refused: {sig.sdp[:200]}"))
        # CANDIDATE: descriptions carry every candidate (no trickle); nothing to do.

    async def _relay(self, link: Link, sig: Signal) -> None:
        try:
            onward = relayed(sig)
        except HandshakeError as exc:
            self.node.reject(link, f"signal: {exc}")
            return
        hop = self.next_hop(sig.to_id, exclude={self.node.node_id, link.node_id, sig.from_id})
        if hop is None:
            logger.info("%s: no route for a signal to %s", self.node, sig.to_id.hex()[:12])
            return
        self.relayed += 1
        try:
            await self.node.send_on(hop, onward)
        except PeerUnavailable as exc:
            logger.info("%s: relaying a signal failed: %s", self.node, exc)

    async def _answer(self, link: Link, offer: Signal) -> None:
        peer_id = offer.from_id
        mine = next((s for s, o in self._outgoing.items() if o.peer_id == peer_id), None)
        if mine is not None:
            if self.node.node_id < peer_id:
                logger.debug("%s: glare with %s, keeping our offer", self.node, peer_id.hex()[:8])
                return
            pending = self._outgoing[mine]
            if not pending.answer.done():
                pending.answer.set_exception(Superseded("the peer's offer wins"))
        rtc = RTCPeer(self.node.config.rtc,
                      name=f"{self.node.node_id_hex[:6]}<-{peer_id.hex()[:6]}")
        try:
            sdp = await rtc.accept_offer(offer.sdp)
            reply = make_signal(self.node.identity, to_id=peer_id, kind=SignalKind.ANSWER,
                                sdp=sdp, session=offer.session, ttl=SIGNAL_TTL)
            await self._route(reply, link)
            channel = await rtc.wait_connected()
            await self.node.attach(channel, kind="rtc", expect=peer_id, rtc=rtc)
        except BadDescription as exc:
            await rtc.close()
            self.node.reject(link, f"signal: {exc}")
        except (ConnectFailed, HandshakeError, PeerUnavailable, ChannelClosed) as exc:
            await rtc.close()
            logger.info("%s: answering %s failed: %s", self.node, peer_id.hex()[:12], exc)
        except BaseException:  # cancelled (the node is stopping) or a bug: free the sockets
            await rtc.close()
            raise
