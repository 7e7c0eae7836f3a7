"""aiortc data channels behind the Channel protocol: one peer connection, its named channels."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.sctptuning import SctpTuning, apply_tuning

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 262_144  # aiortc's local max-message-size: larger sends raise inside SCTP
MAIN_LABEL = "hive"  # the reliable ordered channel every peer pair opens for control + tensors


class MessageTooLarge(ValueError):
    """A message exceeds the data channel's 256 KiB limit; chunk it (hive_core.protocol)."""


class ConnectFailed(ConnectionError):
    """A peer connection failed or did not open within the connect timeout."""


class BadDescription(ValueError):
    """A session description (SDP) received from the network is malformed or unusable."""


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server ICE asks for candidates: ``stun:HOST:PORT`` or ``turn:HOST:PORT``."""

    url: str
    username: str = ""  # TURN only
    credential: str = ""  # TURN only

    def __post_init__(self) -> None:
        scheme, _, rest = self.url.partition(":")
        host, _, port = rest.rpartition(":")
        if scheme not in ("stun", "turn") or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad ICE server {self.url[:100]!r}: expected stun:HOST:PORT or turn:HOST:PORT")
        if scheme == "turn" and not (self.username and self.credential):
            raise ValueError(f"TURN server {self.url} needs a username and a credential")


@dataclass(frozen=True)
class RTCOptions:
    """How peer connections are built."""

    connect_timeout_s: float = 15.0  # offer/answer done -> main channel open, else ConnectFailed
    # Addresses to gather host candidates on. None: every interface aioice finds, which
    # never includes 127.0.0.1 (so a loopback-only host gathers nothing and would hang).
    host_addresses: tuple[str, ...] | None = None
    loopback_candidate: bool = False  # also gather a 127.0.0.1 candidate (test namespaces)
    high_water_bytes: int = 1 << 20  # send() waits while more than this is queued in SCTP
    low_water_bytes: int = 256 << 10  # ...until the queue drains below this
    sctp: SctpTuning | None = field(default_factory=SctpTuning)  # None: aiortc's defaults
    # STUN (server-reflexive candidates) and TURN (relay candidates): a sentinel hands these
    # to the nodes it admits. Empty: host candidates only (a LAN or one machine).
    ice_servers: tuple[IceServer, ...] = ()
    gather_timeout_s: float = 2.0  # longest wait for a STUN or TURN server while gathering

    @classmethod
    def loopback(cls, **overrides: Any) -> RTCOptions:
        """Candidates on 127.0.0.1 only: a hive on one machine, tests, benchmarks."""
        return cls(host_addresses=("127.0.0.1",), **overrides)

    def addresses(self) -> list[str] | None:
        """Host addresses to gather on, or None to let aioice choose."""
        if self.host_addresses is None and not self.loopback_candidate:
            return None
        if self.host_addresses is None:
            from aioice.ice import get_host_addresses

            found = get_host_addresses(use_ipv4=True, use_ipv6=True)
        else:
            found = list(self.host_addresses)
        if self.loopback_candidate and "127.0.0.1" not in found:
            found.append("127.0.0.1")
        return found


class RTCChannel:
    """One aiortc data channel; satisfies ``hive_core.mesh.channel.Channel``."""

    def __init__(self, dc: Any, options: RTCOptions) -> None:
        self._dc = dc
        self._options = options
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False
        self.sent_messages = 0
        self.sent_bytes = 0
        dc.bufferedAmountLowThreshold = options.low_water_bytes
        dc.on("open", self._opened.set)
        dc.on("message", self._on_message)
        dc.on("close", self._shut)
        dc.on("bufferedamountlow", self._writable.set)
        if dc.readyState == "open":
            self._opened.set()
        elif dc.readyState == "closed":
            self._shut()

    @property
    def label(self) -> str:
        return str(self._dc.label)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_amount(self) -> int:
        """Bytes queued in SCTP and not yet acknowledged by the peer."""
        return int(self._dc.bufferedAmount)

    async def wait_open(self, timeout: float) -> None:
        """Wait until the channel is open; ConnectFailed on timeout or close."""
        opened = asyncio.ensure_future(self._opened.wait())
        try:
            await asyncio.wait_for(asyncio.shield(opened), timeout)
        except TimeoutError:
            raise ConnectFailed(f"channel {self.label!r} did not open within {timeout:g} s") from None
        finally:
            opened.cancel()
        if self._closed:
            raise ConnectFailed(f"channel {self.label!r} closed while opening")

    def _on_message(self, data: bytes | str) -> None:
        if not self._closed:
            self._inbox.put_nowait(data.encode() if isinstance(data, str) else bytes(data))

    def _shut(self) -> None:
        if not self._closed:
            self._closed = True
            self._opened.set()
            self._writable.set()
            self._inbox.put_nowait(None)

    async def send(self, data: bytes) -> None:
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds the data channel limit of "
                f"{MAX_MESSAGE_BYTES} bytes; chunk it first"
            )
        if not self._opened.is_set():
            await self.wait_open(self._options.connect_timeout_s)
        # Backpressure: SCTP queues without bound, so wait for the low-water event.
        while not self._closed and self._dc.bufferedAmount > self._options.high_water_bytes:
            self._writable.clear()
            await self._writable.wait()
        if self._closed or self._dc.readyState != "open":
            raise ChannelClosed(f"channel {self.label!r} is closed")
        self._dc.send(bytes(data))
        self.sent_messages += 1
        self.sent_bytes += len(data)

    async def recv(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise ChannelClosed(f"channel {self.label!r} is closed")
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # keep later recv() calls failing fast
            raise ChannelClosed(f"channel {self.label!r} was closed")
        return item

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except ChannelClosed:
                return

    async def close(self) -> None:
        if not self._closed:
            if self._dc.readyState not in ("closing", "closed"):
                self._dc.close()
            self._shut()


class RTCPeer:
    """One aiortc peer connection to one remote node, carrying any number of named channels.

    The offering side calls ``create_offer`` then ``accept_answer``; the answering side
    calls ``accept_offer``. Both then ``wait_connected()`` for the main ``"hive"``
    channel. ICE is not trickled: descriptions carry every candidate.
    """

    class State(enum.Enum):
        NEW = "new"
        CONNECTING = "connecting"
        CONNECTED = "connected"
        FAILED = "failed"
        CLOSED = "closed"

    def __init__(self, options: RTCOptions | None = None, *, name: str = "") -> None:
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        self.options = options or RTCOptions()
        self.name = name
        self.state = RTCPeer.State.NEW
        # Never aiortc's default (a public STUN server): only the servers the hive hands us.
        servers = [RTCIceServer(urls=s.url, username=s.username or None,
                                credential=s.credential or None) for s in self.options.ice_servers]
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._pc.on("connectionstatechange", self._on_pc_state)
        self._pc.on("datachannel", self._on_datachannel)
        self._incoming: dict[str, asyncio.Queue[RTCChannel]] = {}
        self._channels: list[RTCChannel] = []
        self._main: RTCChannel | None = None
        self._done = asyncio.Event()
        self._on_channel: Callable[[RTCChannel], None] | None = None
        self._accepting: dict[str, int] = {}  # labels an accept_channel() call waits for
        self.on_state: Callable[[RTCPeer.State], None] | None = None

    def __repr__(self) -> str:
        return f"RTCPeer({self.name or id(self):}, {self.state.value})"

    @property
    def on_channel(self) -> Callable[[RTCChannel], None] | None:
        """Called with each incoming channel that no `accept_channel` call is waiting for."""
        return self._on_channel

    @on_channel.setter
    def on_channel(self, handler: Callable[[RTCChannel], None] | None) -> None:
        self._on_channel = handler
        if handler is None:
            return
        # The peer may open a channel before this side has set its handler (it learns the
        # link is up first): hand over what arrived meanwhile instead of leaving it queued.
        for label, queue in list(self._incoming.items()):
            if label == MAIN_LABEL or self._accepting.get(label):
                continue
            while not queue.empty():
                handler(queue.get_nowait())

    # -- state -----------------------------------------------------------------------

    def _set_state(self, state: RTCPeer.State) -> None:
        if state is self.state or self.state in (RTCPeer.State.FAILED, RTCPeer.State.CLOSED):
            return
        logger.debug("%r %s -> %s", self.name, self.state.value, state.value)
        self.state = state
        if state in (RTCPeer.State.FAILED, RTCPeer.State.CLOSED):
            for ch in self._channels:
                ch._shut()
            self._done.set()
        if self.on_state is not None:
            self.on_state(state)

    def _on_pc_state(self) -> None:
        pc_state = self._pc.connectionState
        if pc_state == "connecting":
            self._set_state(RTCPeer.State.CONNECTING)
        elif pc_state == "connected":
            self._set_state(RTCPeer.State.CONNECTED)
        elif pc_state == "failed":
            logger.info("peer connection %r failed", self.name)
            self._set_state(RTCPeer.State.FAILED)
            asyncio.ensure_future(self._pc.close())
        elif pc_state == "closed":
            self._set_state(RTCPeer.State.CLOSED)

    @property
    def alive(self) -> bool:
        return self.state not in (RTCPeer.State.FAILED, RTCPeer.State.CLOSED)

    @property
    def path(self) -> str | None:
        """How the connection's packets travel, from the ICE pair in use: "direct" (host or
        server-reflexive candidates on both ends: through the NATs, hole-punched) or "relay"
        (a TURN server in between); None before ICE has chosen."""
        pair = self._pair()
        if pair is None:
            return None
        kinds = {pair.local_candidate.type, pair.remote_candidate.type}
        return "relay" if "relay" in kinds else "direct"

    @property
    def remote_host(self) -> str | None:
        """The address the peer's packets come from (the remote candidate of the ICE pair in
        use; a TURN server's for a relayed link); None before ICE has chosen."""
        pair = self._pair()
        return None if pair is None else str(pair.remote_candidate.host)

    def _pair(self) -> Any:
        sctp = self._pc.sctp
        if sctp is None:
            return None
        return sctp.transport.transport.iceGatherer._connection._nominated.get(1)

    async def wait_closed(self) -> None:
        """Return once the connection failed or was closed."""
        await self._done.wait()

    # -- offer / answer ----------------------------------------------------------------

    def _wrap(self, dc: Any) -> RTCChannel:
        ch = RTCChannel(dc, self.options)
        self._channels.append(ch)
        if not self.alive:
            ch._shut()
        return ch

    async def _prepare_transport(self) -> None:
        """Tune SCTP and gather candidates ourselves: aioice would skip loopback, and would wait
        5 s for a STUN or TURN server that does not answer."""
        sctp = self._pc.sctp
        if sctp is None:
            raise BadDescription("the description has no data channel (m=application) section")
        if self.options.sctp is not None:
            apply_tuning(sctp, self.options.sctp)
        addresses = self.options.addresses()
        if addresses is None:  # gathered here anyway, to bound the wait for STUN and TURN
            from aioice.ice import get_host_addresses

            addresses = get_host_addresses(use_ipv4=True, use_ipv6=True)
        conn = sctp.transport.transport.iceGatherer._connection
        if conn._local_candidates_start:
            return
        # aioice's gather_candidates() becomes a no-op once these flags are set.
        conn._local_candidates_start = True
        for component in sorted(conn._components):
            conn._local_candidates += await conn.get_component_candidates(
                component=component, addresses=addresses,
                timeout=max(1, round(self.options.gather_timeout_s)),
            )
        conn._local_candidates_end = True
        if not conn._local_candidates:
            logger.warning("no ICE candidate could be gathered on %s", addresses)

    async def create_offer(self) -> str:
        """Open the main channel and return the offer SDP (all candidates included)."""
        self._set_state(RTCPeer.State.CONNECTING)
        self._main = self._wrap(self._pc.createDataChannel(MAIN_LABEL, ordered=True))
        await self._prepare_transport()
        await self._pc.setLocalDescription(await self._pc.createOffer())
        return str(self._pc.localDescription.sdp)

    async def _set_remote(self, sdp: str, kind: str) -> None:
        from aiortc import RTCSessionDescription

        if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > 64_000:
            raise BadDescription(f"malformed {kind} SDP")
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
            # aiortc's SDP parser raises whatever the text trips it on.
            raise BadDescription(f"unusable {kind} SDP: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "InvalidStateError":
                raise BadDescription(f"{kind} SDP arrived in the wrong state: {exc}") from exc
            raise

    async def accept_offer(self, sdp: str) -> str:
        """Apply a remote offer and return the answer SDP."""
        self._set_state(RTCPeer.State.CONNECTING)
        await self._set_remote(sdp, "offer")
        await self._prepare_transport()
        await self._pc.setLocalDescription(await self._pc.createAnswer())
        return str(self._pc.localDescription.sdp)

    async def accept_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer; connection setup then proceeds."""
        await self._set_remote(sdp, "answer")

    async def wait_connected(self) -> RTCChannel:
        """The open main channel; ConnectFailed (and the connection closed) on timeout."""
        timeout = self.options.connect_timeout_s
        try:
            if self._main is None:
                self._main = await self.accept_channel(MAIN_LABEL, timeout=timeout)
            await self._main.wait_open(timeout)
        except ConnectFailed:
            await self.close()
            raise
        return self._main

    @property
    def main(self) -> RTCChannel | None:
        """The main ``"hive"`` channel once known."""
        return self._main

    # -- named channels ----------------------------------------------------------------

    def _on_datachannel(self, dc: Any) -> None:
        ch = self._wrap(dc)
        waiting = self._incoming.get(ch.label)
        if ch.label == MAIN_LABEL and self._main is None and waiting is None:
            self._main = ch
        elif self._accepting.get(ch.label) or self._on_channel is None:
            self._incoming.setdefault(ch.label, asyncio.Queue()).put_nowait(ch)
        else:
            self._on_channel(ch)

    async def open_channel(self, label: str, *, ordered: bool = True) -> RTCChannel:
        """Open another named channel (e.g. ``"crdt"``) on this connection and wait for it."""
        if not label or len(label) > 64 or label == MAIN_LABEL:
            raise ValueError(f"bad channel label {label!r}")
        if not self.alive:
            raise ChannelClosed(f"connection {self.name!r} is {self.state.value}")
        ch = self._wrap(self._pc.createDataChannel(label, ordered=ordered))
        await ch.wait_open(self.options.connect_timeout_s)
        return ch

    async def accept_channel(self, label: str, *, timeout: float | None = None) -> RTCChannel:
        """The next channel the peer opens with ``label``."""
        if self._main is not None and label == MAIN_LABEL:
            return self._main
        queue = self._incoming.setdefault(label, asyncio.Queue())
        getter = asyncio.ensure_future(queue.get())
        closed = asyncio.ensure_future(self._done.wait())
        self._accepting[label] = self._accepting.get(label, 0) + 1
        try:
            done, _ = await asyncio.wait(
                {getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._accepting[label] -= 1
            closed.cancel()
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if closed in done:
            raise ChannelClosed(f"connection {self.name!r} is {self.state.value}")
        raise ConnectFailed(f"no channel {label!r} opened within {timeout:g} s")

    async def close(self) -> None:
        """Close every channel and the connection; idempotent."""
        for ch in self._channels:
            ch._shut()
        await self._pc.close()
        self._set_state(RTCPeer.State.CLOSED)


async def connect_pair(
    a_options: RTCOptions | None = None,
    b_options: RTCOptions | None = None,
    *,
    rewrite_offer: Callable[[str], str] | None = None,
    rewrite_answer: Callable[[str], str] | None = None,
) -> tuple[RTCPeer, RTCPeer, RTCChannel, RTCChannel]:
    """Two connected peers in this process, signaled directly (tests, benchmarks).

    ``rewrite_offer``/``rewrite_answer`` may edit the SDP in flight, e.g. to route the
    media through a lossy UDP relay.
    """
    a = RTCPeer(a_options or RTCOptions.loopback(), name="a")
    b = RTCPeer(b_options or RTCOptions.loopback(), name="b")
    try:
        offer = await a.create_offer()
        answer = await b.accept_offer(rewrite_offer(offer) if rewrite_offer else offer)
        await a.accept_answer(rewrite_answer(answer) if rewrite_answer else answer)
        ca, cb = await asyncio.gather(a.wait_connected(), b.wait_connected())
    except BaseException:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
        raise
    return a, b, ca, cb
