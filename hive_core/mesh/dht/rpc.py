"""The DHT's transport contract, and a request/reply multiplexer over any Channel."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hive_core.mesh.channel import Channel, ChannelClosed
from hive_core.protocol import (
    Contact,
    Error,
    ErrorCode,
    FindNode,
    FindValue,
    Nodes,
    Ping,
    Pong,
    ProtocolError,
    Store,
    Stored,
    Value,
    decode,
    encode,
)

log = logging.getLogger(__name__)

Request = Ping | FindNode | FindValue | Store
Reply = Pong | Nodes | Value | Stored | Error
REQUEST_TYPES = (Ping, FindNode, FindValue, Store)
REPLY_TYPES = (Pong, Nodes, Value, Stored, Error)


class RpcError(ConnectionError):
    """A DHT request got no usable answer: timeout, closed link, refusal or wrong reply."""


class RpcTransport(Protocol):
    """How the DHT reaches a peer: send `request`, return its reply or raise RpcError.

    Implementations: `RpcEndpoint` per channel (see `ChannelRpc`), the node runtime over
    aiortc, and the simulator's in-process network.
    """

    async def __call__(self, contact: Contact, request: Request) -> Reply: ...


Handler = Callable[[Contact, Request], Awaitable[Reply]]

_rpc_ids = itertools.count(random.SystemRandom().randrange(1 << 62))


def next_rpc_id() -> int:
    """A fresh request id (unique per process, unpredictable start)."""
    return next(_rpc_ids) & ((1 << 64) - 1)


class RpcEndpoint:
    """Requests and replies over one channel to one authenticated peer.

    Call `dispatch(frame)` with each frame the channel delivers (or run `serve()`):
    replies resolve the matching pending request, requests go to `handler` and their
    reply is sent back. Malformed frames are logged and dropped; the link keeps serving.
    """

    def __init__(self, channel: Channel, peer: Contact, handler: Handler,
                 *, timeout_s: float = 5.0) -> None:
        self.channel = channel
        self.peer = peer
        self.handler = handler
        self.timeout_s = timeout_s
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.malformed = 0

    async def request(self, request: Request) -> Reply:
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.rpc_id] = fut
        try:
            await self.channel.send(encode(request))
            reply = await asyncio.wait_for(fut, self.timeout_s)
        except (TimeoutError, ChannelClosed) as exc:
            raise RpcError(f"{type(request).__name__} to {self.peer.node_id.hex()[:12]}: "
                           f"{type(exc).__name__}") from exc
        finally:
            self._pending.pop(request.rpc_id, None)
        return reply

    def dispatch(self, frame: bytes) -> Any:
        """Handle one frame; returns a decoded message that is neither request nor reply."""
        try:
            msg = decode(frame)
        except ProtocolError as exc:
            self.malformed += 1
            log.warning("dropped malformed frame from %s: %s", self.peer.node_id.hex()[:12], exc)
            return None
        if isinstance(msg, REPLY_TYPES):
            fut = self._pending.get(msg.rpc_id)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return None
        if isinstance(msg, REQUEST_TYPES):
            task = asyncio.get_running_loop().create_task(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return None
        return msg

    async def _answer(self, request: Request) -> None:
        try:
            reply = await self.handler(self.peer, request)
        except Exception as exc:  # a handler bug must not kill the link; report it
            log.exception("handler failed on %s", type(request).__name__)
            reply = Error(request.rpc_id, ErrorCode.INTERNAL, type(exc).__name__)
        try:
            await self.channel.send(encode(reply))
        except ChannelClosed:
            pass

    async def serve(self, on_other: Callable[[Any], None] | None = None) -> None:
        """Read the channel until it closes, dispatching every frame; whatever one frame does,
        the next is read."""
        async for frame in self.channel:
            try:
                other = self.dispatch(frame)
                if other is not None and on_other is not None:
                    on_other(other)
            except Exception:  # a bug on hostile input: drop the frame, keep the link
                self.malformed += 1
                log.exception("frame from %s dropped", self.peer.node_id.hex()[:12])
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed("link closed"))


class ChannelRpc:
    """An `RpcTransport` over per-peer `RpcEndpoint`s, keyed by node id.

    With `connect`, a peer without a link is connected on first use (the runtime opens a
    data channel through signaling; tests open a memory pair); without it, such a
    request fails with RpcError.
    """

    def __init__(self, connect: Callable[[Contact], Awaitable[RpcEndpoint]] | None = None) -> None:
        self.endpoints: dict[bytes, RpcEndpoint] = {}
        self.connect = connect

    def add(self, endpoint: RpcEndpoint) -> None:
        self.endpoints[endpoint.peer.node_id] = endpoint

    def remove(self, node_id: bytes) -> None:
        self.endpoints.pop(node_id, None)

    async def __call__(self, contact: Contact, request: Request) -> Reply:
        endpoint = self.endpoints.get(contact.node_id)
        if endpoint is None or endpoint.channel.closed:
            if self.connect is None:
                raise RpcError(f"no link to {contact.node_id.hex()[:12]}")
            try:
                endpoint = await self.connect(contact)
            except (ConnectionError, TimeoutError) as exc:
                raise RpcError(f"cannot connect to {contact.node_id.hex()[:12]}: {exc}") from exc
            self.add(endpoint)
        return await endpoint.request(request)
