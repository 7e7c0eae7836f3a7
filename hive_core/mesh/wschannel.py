"""WebSocket links behind the Channel protocol: how joiners reach a sentinel (or any listening node)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.rtc import MAX_MESSAGE_BYTES, MessageTooLarge

logger = logging.getLogger(__name__)

WS_LABEL = "ws"


class BadAddress(ValueError):
    """A hive URL (``ws://HOST:PORT``) or listen address (``HOST:PORT``) is malformed."""


def parse_ws_url(url: str) -> tuple[str, int]:
    """``ws://HOST:PORT`` -> (host, port); BadAddress on anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadAddress(f"bad hive URL {url!r}: {exc}") from None
    if parts.scheme != "ws" or not parts.hostname or port is None:
        raise BadAddress(f"bad hive URL {url!r}: expected ws://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BadAddress(f"bad hive URL {url!r}: no path or query expected")
    return parts.hostname, port


def parse_listen(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (port 0 = any free port) -> (host, port); BadAddress otherwise."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise BadAddress(f"bad listen address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:7700")
    return host.strip("[]"), int(port_text)


class WsChannel:
    """One WebSocket connection; satisfies ``hive_core.mesh.channel.Channel``."""

    def __init__(self, conn: Any, *, peer: str = "") -> None:
        self._conn = conn
        self.peer = peer
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

    async def wait_closed(self) -> None:
        await self._conn.wait_closed()
        self._closed = True


async def ws_connect(url: str, *, timeout: float = 10.0) -> WsChannel:
    """Open a WebSocket to ``ws://HOST:PORT``; ConnectionError if unreachable in time."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidURI

    parse_ws_url(url)
    try:
        conn = await asyncio.wait_for(
            connect(url, max_size=MAX_MESSAGE_BYTES, compression=None, open_timeout=timeout,
                    ping_interval=None, proxy=None),
            timeout,
        )
    except TimeoutError:
        raise ConnectionError(f"{url}: no answer within {timeout:g} s") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise ConnectionError(f"{url}: {exc}") from None
    return WsChannel(conn, peer=url)


class WsServer:
    """A WebSocket listener that hands each accepted connection to ``on_channel``."""

    def __init__(self, on_channel: Callable[[WsChannel], Awaitable[None]]) -> None:
        self._on_channel = on_channel
        self._server: Any = None
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
            self._handle, host, port, max_size=MAX_MESSAGE_BYTES, compression=None,
            ping_interval=None, logger=logger,
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.host, self.port = host, int(sockname[1])
        return self.url

    async def _handle(self, conn: Any) -> None:
        remote = conn.remote_address
        channel = WsChannel(conn, peer=f"{remote[0]}:{remote[1]}" if remote else "?")
        try:
            await self._on_channel(channel)
        except ChannelClosed:
            pass

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
