"""WebSocket links behind the Channel protocol: how joiners reach a sentinel (or any listening node)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from hive_core.mesh.admission import AdmissionConfig, HandshakePool
from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.rtc import MAX_MESSAGE_BYTES, MessageTooLarge
from hive_core.protocol import Error, ErrorCode, encode

logger = logging.getLogger(__name__)

WS_LABEL = "ws"
MAX_ADDRESS_CHARS = 300  # a host name is at most 253 characters
RETRY_FIRST_S = 0.25  # first pause before asking a throttling listener again
CLOSE_TIMEOUT_S = 2.0  # a peer that does not answer our close frame is cut off after this
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")


class BadAddress(ValueError):
    """A hive URL (``ws://HOST:PORT``) or listen address (``HOST:PORT``) is malformed."""


def _shown(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, cut short (a hostile address may be megabytes long)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} chars)"


def parse_ws_url(url: str) -> tuple[str, int]:
    """``ws://HOST:PORT`` -> (host, port); BadAddress on anything else."""
    if len(url) > MAX_ADDRESS_CHARS:
        raise BadAddress(f"bad hive URL {_shown(url)}: too long")
    try:
        parts = urlsplit(url)
        port = parts.port
        url.encode("ascii")
    except ValueError as exc:
        raise BadAddress(f"bad hive URL {_shown(url)}: {str(exc)[:80]}") from None
    if parts.scheme != "ws" or not parts.hostname or port is None:
        raise BadAddress(f"bad hive URL {_shown(url)}: expected ws://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadAddress(f"bad hive URL {_shown(url)}: no path or query expected")
    return parts.hostname, port


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 = any free port) -> (host, port); BadAddress otherwise."""
    host, sep, port_text = address.rpartition(":")
    if (len(address) > MAX_ADDRESS_CHARS or not sep or not host or not port_text.isascii()
            or not port_text.isdigit() or not 0 <= int(port_text) <= 65535
            or not host.isascii()):
        raise BadAddress(f"bad listen address {_shown(address)}: expected HOST:PORT, "
                         "e.g. 127.0.0.1:7700")
    return host.strip("[]"), int(port_text)


class WsChannel:
    """One WebSocket connection; satisfies ``hive_core.mesh.channel.Channel``."""

    def __init__(self, conn: Any, *, peer: str = "", source: str = "") -> None:
        self._conn = conn
        self.peer = peer  # "HOST:PORT" of the other end, or its URL
        self.source = source  # the other end's IP address (accepted connections)
        self._closed = False

    @property
    def label(self) -> str:
        return WS_LABEL

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes"
            )
        if self._closed:
            raise ChannelClosed("websocket is closed")
        try:
            await self._conn.send(bytes(data))
        except ConnectionClosed as exc:
            self._closed = True
            raise ChannelClosed(f"websocket closed: {exc}") from None

    async def recv(self) -> bytes:
        from websockets.exceptions import ConnectionClosed

        if self._closed:
            raise ChannelClosed("websocket is closed")
        try:
            data = await self._conn.recv()
        except ConnectionClosed as exc:
            self._closed = True
            if exc.sent is not None and exc.sent.code == 1009:
                # The peer sent a frame over max_size: websockets refused it and closed.
                logger.warning("refused an oversized frame from %s (limit %d bytes); "
                               "connection closed", self.peer, MAX_MESSAGE_BYTES)
            raise ChannelClosed(f"websocket closed: {exc}") from None
        # Text frames are not part of the protocol: hand them on as bytes, the codec refuses.
        return data.encode() if isinstance(data, str) else bytes(data)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except ChannelClosed:
                return

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._conn.close()

    def abort(self) -> None:
        """Cut the connection now, without the closing handshake (a peer being evicted)."""
        self._closed = True
        self._conn.transport.abort()

    async def wait_closed(self) -> None:
        await self._conn.wait_closed()
        self._closed = True


class Busy(ConnectionError):
    """The listener answered HTTP 503 (too many connections, from this address or in all)."""


async def ws_connect(url: str, *, timeout: float = 10.0) -> WsChannel:
    """Open a WebSocket to ``ws://HOST:PORT``; ConnectionError if unreachable in time.

    A busy listener (HTTP 503) is asked again after a pause that doubles from
    RETRY_FIRST_S, as long as `timeout` allows; then Busy.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    parse_ws_url(url)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = RETRY_FIRST_S
    while True:
        left = deadline - loop.time()
        try:
            conn = await asyncio.wait_for(
                connect(url, max_size=MAX_MESSAGE_BYTES, compression=None, open_timeout=left,
                        ping_interval=None, proxy=None, close_timeout=CLOSE_TIMEOUT_S),
                left,
            )
        except TimeoutError:
            raise ConnectionError(f"{url}: no answer within {timeout:g} s") from None
        except InvalidStatus as exc:
            if exc.response.status_code != 503:
                raise ConnectionError(f"{url}: {exc}") from None
            if deadline - loop.time() < pause:
                raise Busy(f"{url}: refused: the node is busy (HTTP 503); "
                           "try again later") from None
            await asyncio.sleep(pause)
            pause *= 2
            continue
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            raise ConnectionError(f"{url}: {exc}") from None
        return WsChannel(conn, peer=url)


class WsServer:
    """A WebSocket listener that hands each accepted connection to ``on_channel``.

    Every connection is a *handshake* from TCP accept until ``on_channel`` calls
    `authenticated` (the peer proved its key): handshakes are bounded in number, per source
    address and in time by `AdmissionConfig` (see `hive_core.mesh.admission`), the oldest
    dropped first, and may send only small frames until authenticated.
    """

    def __init__(self, on_channel: Callable[[WsChannel], Awaitable[None]],
                 admission: AdmissionConfig | None = None) -> None:
        self._on_channel = on_channel
        self.admission = admission or AdmissionConfig()
        self.handshakes = HandshakePool(self.admission)
        self._server: Any = None
        self._deadlines: dict[Any, asyncio.TimerHandle] = {}
        self._refusals: set[asyncio.Task[None]] = set()
        self.host = ""
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self, listen: str) -> str:
        """Listen on ``HOST:PORT``; returns the ``ws://`` URL (with the port actually bound)."""
        from websockets.asyncio.server import serve

        host, port = parse_listen(listen)
        self._server = await serve(
            self._handle, host, port, max_size=self.admission.pre_auth_frame_bytes,
            compression=None, ping_interval=None, logger=logger, max_queue=8,
            close_timeout=CLOSE_TIMEOUT_S,
            open_timeout=self.admission.handshake_s + 1.0,  # our own deadline comes first
            create_connection=self._connection_class(),
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = host, int(sockname[1])
        return self.url

    def _connection_class(self) -> type:
        from websockets.asyncio.server import ServerConnection

        server = self

        class AdmittedConnection(ServerConnection):
            """Counted as a handshake from the moment TCP accepts it."""

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                server._opened(self, transport)

            def connection_lost(self, exc: Exception | None) -> None:
                server._forget(self)
                super().connection_lost(exc)

        return AdmittedConnection

    def _opened(self, conn: Any, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        source = str(peername[0]) if peername else "?"
        loop = asyncio.get_running_loop()
        if not self.handshakes.allow(source, loop.time()):
            # Over its source's rate: a plain HTTP refusal, before any WebSocket work.
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(BUSY)
            transport.close()
            return
        self._deadlines[conn] = loop.call_later(self.admission.handshake_s, self._expire, conn)
        for victim in self.handshakes.add(conn, source, loop.time()):
            self._drop(victim, "dropped: too many handshakes in progress")

    def _expire(self, conn: Any) -> None:
        if self.handshakes.remove(conn):
            self._drop(conn, f"no Hello and first request within {self.admission.handshake_s:g} s")

    def _forget(self, conn: Any) -> None:
        self.handshakes.remove(conn)
        timer = self._deadlines.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def _drop(self, conn: Any, reason: str) -> None:
        """End a handshake: an OVERLOADED Error first if the WebSocket is open, then abort."""
        from websockets.protocol import State

        self._forget(conn)
        logger.info("handshake from %s %s", conn.remote_address, reason)
        if conn.protocol.state is State.OPEN:
            task = asyncio.ensure_future(self._refuse(conn, reason))
            self._refusals.add(task)
            task.add_done_callback(self._refusals.discard)
        elif conn.protocol.state is State.CONNECTING and not conn.transport.is_closing():
            conn.transport.write(BUSY)  # still in its HTTP upgrade: a plain HTTP refusal
            conn.transport.close()
        else:
            conn.transport.abort()

    @staticmethod
    async def _refuse(conn: Any, reason: str) -> None:
        try:
            await asyncio.wait_for(conn.send(encode(Error(0, ErrorCode.OVERLOADED, reason))), 1.0)
        except Exception as exc:  # noqa: BLE001 - the peer is being dropped whatever went wrong
            logger.debug("refusal not sent to %s: %r", conn.remote_address, exc)
        finally:
            conn.transport.abort()

    def authenticated(self, channel: WsChannel) -> None:
        """The peer on `channel` proved its key: it leaves the handshake budget and may send
        frames up to the message limit."""
        conn = channel._conn
        self._forget(conn)
        conn.protocol.max_message_size = MAX_MESSAGE_BYTES

    async def _handle(self, conn: Any) -> None:
        if conn not in self.handshakes:
            return  # dropped while its HTTP upgrade was finishing
        remote = conn.remote_address
        channel = WsChannel(conn, peer=f"{remote[0]}:{remote[1]}" if remote else "?",
                            source=str(remote[0]) if remote else "?")
        try:
            await self._on_channel(channel)
        except ChannelClosed:
            pass

    async def stop(self) -> None:
        for timer in self._deadlines.values():
            timer.cancel()
        self._deadlines.clear()
        for task in list(self._refusals):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
