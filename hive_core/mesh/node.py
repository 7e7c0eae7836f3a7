"""The node runtime: authenticated links, message dispatch, pings, tensors, named channels, events."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.admission import AdmissionConfig
from hive_core.mesh.channel import Channel, ChannelClosed
from hive_core.mesh.dht.records import LayerSpanRecord
from hive_core.mesh.events import FrameRejected, NodeEvent, PeerConnected, PeerLost
from hive_core.mesh.peers import Link, PeerInfo, PeerTable
from hive_core.mesh.rtc import ConnectFailed, RTCChannel, RTCOptions, RTCPeer
from hive_core.protocol import (
    REQUESTS,
    Bye,
    Error,
    ErrorCode,
    HandshakeError,
    Hello,
    Nodes,
    Ping,
    Pong,
    ProtocolError,
    Reassembler,
    ReplayedHello,
    ReplayGuard,
    Signal,
    Stored,
    TensorChunk,
    Value,
    WireTensor,
    chunk_tensor,
    decode,
    encode,
    make_hello,
    verify_hello,
)
from hive_core.protocol.tensor import MAX_CHUNK_PAYLOAD

logger = logging.getLogger(__name__)
LAN_ENV = "CADENCIA_LAN_LINKS"


def lan_default() -> bool:
    """Whether nodes open direct LAN links unless told otherwise (CADENCIA_LAN_LINKS=0: no)."""
    return os.environ.get(LAN_ENV, "1") != "0"

Handler = Callable[[bytes, Any], Awaitable[None] | None]
TensorHandler = Callable[[bytes, WireTensor], Awaitable[None] | None]
ChannelHandler = Callable[[bytes, RTCChannel], Awaitable[None] | None]


class PeerUnavailable(ConnectionError):
    """No link to that node, or it closed before the request was answered."""


class LinkRefused(PeerUnavailable):
    """The peer ended the link with an Error saying why (OVERLOADED: its budget is full)."""


class Refused(HandshakeError):
    """A handshake ended by a refusal: the listener answered an Error (e.g. OVERLOADED)
    instead of its Hello, or this node refuses a peer for a reason other than its Hello."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def refusal_text(code: ErrorCode, message: str) -> str:
    """One line naming why a peer refused us (its text cut short and made printable)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in message[:200])
    return f"refused: {code.name}" + (f": {text}" if text else "")


MAX_REFUSALS = 256  # peers whose last refusal of a link is remembered, to say why
# An Error a peer sends outside any request ends the link for these reasons.
LINK_REFUSALS = (ErrorCode.OVERLOADED, ErrorCode.UNAUTHENTICATED, ErrorCode.REPLAYED)


@dataclass(frozen=True)
class NodeConfig:
    """How one node behaves on the mesh."""

    listen: str | None = None  # "HOST:PORT": accept joins over WebSocket (sentinels do); None: no
    join: tuple[str, ...] = ()  # ws:// URLs of sentinels or listening nodes, tried in order
    roles: tuple[str, ...] = ()  # "alpha", "beta", "sentinel", "verifier"
    rtc: RTCOptions = field(default_factory=RTCOptions)  # data channel options (timeouts, ICE)
    max_peers: int = 16  # data-channel links this node opens itself (it still accepts more)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)  # WebSocket budgets
    ping_interval_s: float = 2.0  # RTT probe period per link
    dead_after_s: float = 8.0  # a link silent this long is declared dead and closed
    handshake_timeout_s: float = 10.0  # waiting for the peer's Hello
    join_peer_s: float = 4.0  # a join or DHT request waits this long for a new link, no more
    request_timeout_s: float = 5.0  # waiting for a reply to a request
    record_ttl_s: float = 120.0  # lifetime of this node's DHT records
    republish_s: float = 30.0  # re-sign and re-store them this often (< record_ttl_s)
    dht_k: int = 20  # DHT bucket size and replication factor
    tflops: float | None = None  # None: measure at start (matmul benchmark); a number skips it
    spans: tuple[LayerSpanRecord, ...] = ()  # layer spans this node serves, published in the DHT
    max_memory_mb: float | None = None  # the most memory it gives (--max-memory): its free RAM
    # Direct WebSockets to near peers beside the data channels (`hive_core.mesh.lan`); on unless
    # `--no-lan-links` or CADENCIA_LAN_LINKS=0 (a bench that pushes every byte through a
    # simulated WAN on one machine sets it for all its processes).
    lan_links: bool = field(default_factory=lan_default)


class Node:
    """A peer of the hive. Public API for the layers above (shard servers, world sync, UI):

    - ``send(node_id, msg)`` / ``request(node_id, msg)`` / ``send_tensor(node_id, array, ...)``
    - ``on(MsgClass, handler)``, ``on_tensor(handler)``, ``on_channel(label, handler)``
    - ``open_channel(node_id, label)``, ``connect(node_id)``, ``peers()``, ``events()``
    """

    def __init__(self, identity: Identity, config: NodeConfig | None = None) -> None:
        self.identity = identity
        self.config = config or NodeConfig()
        self.peers = PeerTable()
        self.guard = ReplayGuard()
        self.listen_url = ""
        self.started_at = time.monotonic()
        self.rejected_frames = 0
        self._handlers: dict[type[Any], list[Handler]] = {}
        self._reply_types: set[type[Any]] = {Pong, Nodes, Value, Stored, Error}
        self._tensor_handlers: list[TensorHandler] = []
        self._channel_handlers: dict[str, ChannelHandler] = {}
        self._pending: dict[tuple[bytes, int], asyncio.Future[Any]] = {}
        self._refused_by: OrderedDict[bytes, str] = OrderedDict()  # peers that refused us, why
        self._subscribers: list[asyncio.Queue[NodeEvent]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reassembler = Reassembler()
        self._stopping = False
        self._rpc_counter = int.from_bytes(identity.node_id[:6], "big") << 16
        # Set by the mesh services when they start (signaling, DHT); see hive_core.mesh.hivenode.
        self.request_handler: Callable[[Link, Any], Awaitable[Any]] | None = None
        self.signal_handler: Callable[[Link, Signal], Awaitable[None]] | None = None
        self.on_link_up: list[Callable[[Link], None]] = []
        self.on_link_lost: list[Callable[[Link], None]] = []

    def __repr__(self) -> str:
        return f"Node({self.node_id_hex[:8]}, {len(self.peers)} peers)"

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    @property
    def node_id_hex(self) -> str:
        return self.identity.node_id_hex

    def next_rpc_id(self) -> int:
        self._rpc_counter = (self._rpc_counter + 1) & ((1 << 64) - 1)
        return self._rpc_counter

    def spawn(self, coro: Awaitable[Any], *, name: str = "",
              expected: tuple[type[BaseException], ...] = ()) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, tied to this node's lifetime; failures are logged
        (those of the `expected` types at debug level only)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()  # retrieved even while stopping: else asyncio reports it unseen
            if exc is None or self._stopping:
                return
            level = logging.DEBUG if isinstance(exc, expected) else logging.WARNING
            logger.log(level, "%s: background task %s failed: %r", self, name, exc)

        task.add_done_callback(done)
        return task

    # -- registration ------------------------------------------------------------------

    def on(self, msg_type: type[Any], handler: Handler) -> None:
        """Call ``handler(peer_id, msg)`` for each ``msg_type`` frame; keep it short or spawn."""
        self._handlers.setdefault(msg_type, []).append(handler)

    def register_reply(self, msg_type: type[Any]) -> None:
        """Frames of ``msg_type`` (with an ``rpc_id``) answer ``request()`` calls."""
        self._reply_types.add(msg_type)

    def on_tensor(self, handler: TensorHandler) -> None:
        """Call ``handler(peer_id, tensor)`` for each tensor reassembled from chunks."""
        self._tensor_handlers.append(handler)

    def on_channel(self, label: str, handler: ChannelHandler) -> None:
        """Call ``handler(peer_id, channel)`` when a peer opens a channel named ``label``."""
        self._channel_handlers[label] = handler

    def events(self) -> AsyncIterator[NodeEvent]:
        """A stream of NodeEvents from now on (subscribe before the events of interest)."""
        queue: asyncio.Queue[NodeEvent] = asyncio.Queue(maxsize=10_000)
        self._subscribers.append(queue)

        async def stream() -> AsyncIterator[NodeEvent]:
            try:
                while True:
                    yield await queue.get()
            finally:
                self._subscribers.remove(queue)

        return stream()

    def emit(self, event: NodeEvent) -> None:
        for queue in self._subscribers:
            if not queue.full():
                queue.put_nowait(event)

    # -- sending -----------------------------------------------------------------------

    def link(self, node_id: bytes) -> Link:
        link = self.peers.best(node_id)
        if link is None:
            why = self._refused_by.get(node_id)
            if why is not None:
                raise LinkRefused(f"{node_id.hex()[:12]} {why}")
            raise PeerUnavailable(f"no link to {node_id.hex()[:12]}")
        return link

    async def send(self, node_id: bytes, msg: Any) -> None:
        """Encode ``msg`` and send it to ``node_id`` over its best link."""
        await self.send_on(self.link(node_id), msg)

    async def send_on(self, link: Link, msg: Any) -> None:
        try:
            await link.channel.send(encode(msg))
        except ChannelClosed as exc:
            raise PeerUnavailable(f"link to {link.node_id.hex()[:12]} closed") from exc

    async def request(self, node_id: bytes, msg: Any, *, timeout: float | None = None) -> Any:
        """Send a request (a message with ``rpc_id``) and return the matching reply."""
        link = self.link(node_id)
        key = (node_id, msg.rpc_id)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            await self.send_on(link, msg)
            return await asyncio.wait_for(fut, timeout or self.config.request_timeout_s)
        except TimeoutError:
            raise PeerUnavailable(
                f"{type(msg).__name__} to {node_id.hex()[:12]}: no reply in time"
            ) from None
        finally:
            self._pending.pop(key, None)

    async def send_tensor(
        self, node_id: bytes, array: Any, *, stream_id: int, sequence: int = 0,
        layer: int = 0, tag: int = 0,
    ) -> None:
        """Send a numpy array as chunked TENSOR frames (each under the 256 KiB limit)."""
        link = self.link(node_id)
        for chunk in chunk_tensor(array, stream_id=stream_id, sequence=sequence, layer=layer,
                                  tag=tag, chunk_bytes=MAX_CHUNK_PAYLOAD):
            await self.send_on(link, chunk)

    async def open_channel(self, node_id: bytes, label: str) -> RTCChannel:
        """Open a named data channel (e.g. ``"crdt"``) to a peer we have a WebRTC link with."""
        link = self.peers.rtc(node_id)
        if link is None or link.rtc is None:
            raise PeerUnavailable(f"no WebRTC link to {node_id.hex()[:12]}")
        return await link.rtc.open_channel(label)

    def peers_info(self) -> list[PeerInfo]:
        """Snapshot of every link: RTT EWMA, idleness, frame counters."""
        return [link.info() for link in self.peers.all()]

    # -- links -------------------------------------------------------------------------

    async def attach(
        self, channel: Channel, *, kind: str, expect: bytes | None = None,
        rtc: RTCPeer | None = None, mode: str = "both",
    ) -> Link:
        """Authenticate a fresh channel with Hello frames and start serving it.

        ``mode``: "both" (each side sends a Hello naming the other: data channels),
        "first" (we speak first: a listening node), "second" (we answer the listener's
        Hello with one addressed to it: a joiner). HandshakeError refuses the peer; Refused
        (a HandshakeError) when the other side answered with an Error, e.g. OVERLOADED.
        """
        try:
            if mode in ("both", "first"):
                await channel.send(encode(make_hello(self.identity, audience=expect or b"",
                                                     listen=self.listen_url)))
            data = await asyncio.wait_for(channel.recv(), self.config.handshake_timeout_s)
            hello = decode(data)
            if isinstance(hello, Error):
                # Refused before any Hello (a full listener): say why, in one line.
                await channel.close()
                if rtc is not None:
                    await rtc.close()
                raise Refused(hello.code, refusal_text(hello.code, hello.message))
            if not isinstance(hello, Hello):
                raise HandshakeError(f"expected a Hello, got {type(hello).__name__}")
            if mode == "first" and hello.audience != self.node_id:
                raise HandshakeError("join hello is not addressed to this node")
            peer_id = verify_hello(hello, self.guard, me=self.node_id)
            if expect is not None and peer_id != expect:
                raise HandshakeError("peer is not the node that was signaled")
            if peer_id == self.node_id:
                raise HandshakeError("connected to itself")
            if mode == "second":
                await channel.send(encode(make_hello(self.identity, audience=peer_id,
                                                     listen=self.listen_url)))
        except Refused:  # the other side refused us (channel closed): nothing more to say
            raise
        except (ProtocolError, TimeoutError, ChannelClosed) as exc:
            reason = f"handshake: {exc or type(exc).__name__}"
            self._reject(b"", reason)
            code = ErrorCode.REPLAYED if isinstance(exc, ReplayedHello) else ErrorCode.UNAUTHENTICATED
            try:
                await channel.send(encode(Error(0, code, reason[:200])))
            except ChannelClosed:
                pass
            await channel.close()
            if rtc is not None:
                await rtc.close()
            if isinstance(exc, HandshakeError):
                raise
            raise HandshakeError(reason) from exc
        link = Link(peer_id, hello.public_key, channel, kind=kind, listen=hello.listen, rtc=rtc)
        old = self.peers.add(link)
        if old is not None:
            self.spawn(self._drop(old, "replaced by a new link"))
        if rtc is not None:
            rtc.on_channel = lambda ch: self._incoming_channel(link, ch)
            def on_state(state: RTCPeer.State) -> None:
                if not rtc.alive:
                    self.spawn(self._drop(link, f"connection {state.value}"))

            rtc.on_state = on_state
        link.reader = self.spawn(self._read(link), name=f"read {link}")
        logger.info("%s: %s link to %s up", self, kind, peer_id.hex()[:12])
        for callback in self.on_link_up:
            callback(link)
        self.emit(PeerConnected(peer_id, kind))
        return link

    def _incoming_channel(self, link: Link, channel: RTCChannel) -> None:
        handler = self._channel_handlers.get(channel.label)
        if handler is None:
            logger.info("%s: refused channel %r from %s (no handler)", self, channel.label, link)
            self.spawn(channel.close())
            return
        self._call(handler, link.node_id, channel)

    def _call(self, handler: Callable[..., Any], *args: Any) -> None:
        try:
            result = handler(*args)
        except Exception:  # one frame's handler failing must not end the link
            peer = args[0].hex()[:12] if args and isinstance(args[0], bytes) else "?"
            logger.exception("%s: handler %s failed on a frame from %s", self,
                             getattr(handler, "__qualname__", handler), peer)
            return
        if inspect.isawaitable(result):
            self.spawn(result, name=getattr(handler, "__name__", "handler"))

    def reject(self, link: Link, reason: str) -> None:
        """Count and log a refused frame from ``link``'s peer; the link keeps serving."""
        link.frames_rejected += 1
        self._reject(link.node_id, reason)

    def _reject(self, node_id: bytes, reason: str) -> None:
        self.rejected_frames += 1
        logger.warning("%s: rejected frame from %s: %s", self, node_id.hex()[:12] or "?", reason)
        self.emit(FrameRejected(node_id, reason))

    async def _read(self, link: Link) -> None:
        reason = "closed"
        try:
            while True:
                try:
                    data = await link.channel.recv()
                except ChannelClosed:
                    break
                try:
                    msg = decode(data)
                except ProtocolError as exc:
                    link.frames_rejected += 1
                    self._reject(link.node_id, str(exc))
                    await self._answer(link, Error(0, ErrorCode.MALFORMED, str(exc)[:200]))
                    continue
                except Exception as exc:  # a decoder bug: drop the frame, keep the link
                    logger.exception("%s: decoding a frame from %s failed", self, link)
                    link.frames_rejected += 1
                    self._reject(link.node_id, f"undecodable frame: {type(exc).__name__}: {exc}")
                    continue
                link.heard()
                link.frames_in += 1
                if not isinstance(msg, (Ping, Pong)) and not link.active():
                    continue  # refused on its first request: the link is being closed
                try:
                    await self._dispatch(link, msg)
                except ChannelClosed:
                    break
                except Exception as exc:  # whatever one frame does, the link serves on
                    logger.exception("%s: %s from %s failed", self, type(msg).__name__, link)
                    self.reject(link, f"{type(msg).__name__} failed: {type(exc).__name__}: {exc}")
        finally:
            await self._drop(link, reason)

    async def _answer(self, link: Link, msg: Any) -> None:
        try:
            await link.channel.send(encode(msg))
        except (ChannelClosed, ProtocolError) as exc:
            logger.debug("%s: could not answer %s: %s", self, link, exc)

    async def _dispatch(self, link: Link, msg: Any) -> None:
        rpc_id = getattr(msg, "rpc_id", None)
        if type(msg) in self._reply_types and rpc_id is not None:
            fut = self._pending.get((link.node_id, rpc_id))
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif isinstance(msg, Error) and rpc_id == 0:
                logger.info("%s: %s reports %s: %s", self, link, msg.code.name, msg.message)
                if msg.code in LINK_REFUSALS:  # the peer ends the link: tell waiting requests why
                    link.refusal = refusal_text(msg.code, msg.message)
            return
        if isinstance(msg, Ping):
            await self._answer(link, Pong(msg.rpc_id, msg.sent_at))
        elif isinstance(msg, TensorChunk):
            try:
                tensor = self._reassembler.feed(msg, source=link.node_id)
            except ProtocolError as exc:
                link.frames_rejected += 1
                self._reject(link.node_id, str(exc))
                return
            if tensor is not None:
                for th in self._tensor_handlers:
                    self._call(th, link.node_id, tensor)
        elif isinstance(msg, Bye):
            logger.info("%s: %s says bye: %s", self, link, msg.reason)
            await link.channel.close()
        elif isinstance(msg, Hello):
            self._reject(link.node_id, "unexpected Hello on an open link")
        elif type(msg) in self._handlers:
            for handler in self._handlers[type(msg)]:
                self._call(handler, link.node_id, msg)
        elif isinstance(msg, Signal) and self.signal_handler is not None:
            self.spawn(self.signal_handler(link, msg), name="signal")
        elif self.request_handler is not None and rpc_id is not None:
            self.spawn(self._serve_request(link, msg), name=type(msg).__name__)
        elif isinstance(msg, REQUESTS) and rpc_id is not None:
            # A request this node does not serve (a shard query to a sentinel): say so at once,
            # so the asker moves on instead of waiting out its timeout.
            logger.debug("%s: %s from %s is not served here", self, type(msg).__name__, link)
            await self._answer(link, Error(rpc_id, ErrorCode.UNSUPPORTED,
                                           f"{type(msg).__name__} is not served by this node"))
        else:
            logger.debug("%s: no handler for %s from %s", self, type(msg).__name__, link)

    async def _serve_request(self, link: Link, msg: Any) -> None:
        assert self.request_handler is not None
        try:
            reply = await self.request_handler(link, msg)
        except Exception as exc:  # a service bug must not kill the link; tell the peer
            logger.exception("%s: serving %s failed", self, type(msg).__name__)
            reply = Error(msg.rpc_id, ErrorCode.INTERNAL, type(exc).__name__)
        if reply is None and isinstance(msg, REQUESTS):
            # Not served here (a shard query to a sentinel): say so at once, or the asker
            # would wait out its whole timeout for an answer that never comes.
            reply = Error(getattr(msg, "rpc_id", 0), ErrorCode.UNSUPPORTED,
                          f"{type(msg).__name__} is not served by this node")
        if reply is not None:
            await self._answer(link, reply)

    async def _drop(self, link: Link, reason: str) -> None:
        if not self.peers.remove(link):
            return
        if link.refusal:
            self._refused_by[link.node_id] = link.refusal
            while len(self._refused_by) > MAX_REFUSALS:
                self._refused_by.popitem(last=False)
        for key, fut in list(self._pending.items()):
            if key[0] == link.node_id and not fut.done() and self.peers.best(link.node_id) is None:
                fut.set_exception(
                    LinkRefused(f"{link.node_id.hex()[:12]} {link.refusal}") if link.refusal
                    else PeerUnavailable(f"link to {link.node_id.hex()[:12]} closed"))
        logger.info("%s: %s link to %s down: %s", self, link.kind, link.node_id.hex()[:12], reason)
        for callback in self.on_link_lost:
            callback(link)
        self.emit(PeerLost(link.node_id, link.kind, reason))
        await link.close()

    async def refuse_link(self, link: Link, code: ErrorCode, reason: str) -> None:
        """End one link with an Error saying why (OVERLOADED: evicted to make room), then cut
        it at once where the channel can (no closing handshake to wait out)."""
        try:
            await asyncio.wait_for(link.channel.send(encode(Error(0, code, reason[:200]))), 1.0)
        except (ChannelClosed, TimeoutError):
            pass
        abort = getattr(link.channel, "abort", None)
        if abort is not None:
            abort()
        await self._drop(link, reason)

    async def close_link(self, link: Link, reason: str) -> None:
        """Say bye on one link and close it (other links to that peer stay up)."""
        try:
            await asyncio.wait_for(link.channel.send(encode(Bye(reason[:200]))), 1.0)
        except (ChannelClosed, TimeoutError):
            pass
        await self._drop(link, reason)

    async def drop(self, node_id: bytes, reason: str = "closed") -> None:
        """Close every link to ``node_id``."""
        for link in self.peers.all():
            if link.node_id == node_id:
                await self._drop(link, reason)

    # -- liveness ----------------------------------------------------------------------

    async def ping(self, link: Link) -> float:
        """One RTT sample (ms) on ``link``; also feeds the link's EWMA."""
        link.pings += 1
        t0 = time.monotonic()
        await self.request(link.node_id, Ping(self.next_rpc_id(), t0))
        rtt_ms = (time.monotonic() - t0) * 1000
        link.pongs += 1
        link.observe_rtt(rtt_ms)
        return rtt_ms

    async def heartbeat(self) -> None:
        """Ping every link each interval; close links silent for longer than dead_after_s."""
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            now = time.monotonic()
            for link in self.peers.all():
                silent = now - link.last_heard
                if silent > self.config.dead_after_s:
                    await self._drop(link, f"dead: silent for {silent:.1f} s")
                elif not link.pinging:  # one probe in flight per link: a mute peer costs one
                    self.spawn(self._quiet_ping(link))

    async def _quiet_ping(self, link: Link) -> None:
        link.pinging = True
        try:
            await self.ping(link)
        except (PeerUnavailable, ConnectFailed):
            pass
        finally:
            link.pinging = False

    async def close(self) -> None:
        """Say bye on every link, close them, stop background tasks."""
        self._stopping = True
        for link in self.peers.all():
            try:
                await asyncio.wait_for(link.channel.send(encode(Bye("shutting down"))), 1.0)
            except (ChannelClosed, TimeoutError):
                pass
        for link in self.peers.all():
            await self._drop(link, "node shutting down")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
