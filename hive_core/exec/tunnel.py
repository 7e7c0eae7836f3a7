"""One end of a tunnel through a relay (`hive_core.exec.relay`): a `Channel` whose frames are
sealed end to end for the other end and sent as `TunnelFrame`s via the relay.

Each frame is bound to the tunnel's nonce, its direction and its sequence number, so a frame
the relay changes, drops, replays or reorders fails to open (a dropped one at the next frame);
the end that finds it closes the tunnel.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from nacl.public import Box

from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.node import PeerUnavailable
from hive_core.protocol.tunnel import TunnelClose, TunnelFrame
from hive_core.trust import SealError, open_sealed, seal

if TYPE_CHECKING:
    from hive_core.exec.relay import Relaying

logger = logging.getLogger(__name__)
TUNNEL_KIND = "tunnel"  # the kind of the links tunnels carry (they sit beside WebSocket links)
_CTX = struct.Struct("<6s16s1sQ")


def frame_context(nonce: bytes, from_opener: bool, seq: int) -> bytes:
    """What one sealed tunnel frame is bound to: the tunnel, its direction, its place."""
    return _CTX.pack(b"tunnel", nonce, b"o" if from_opener else b"t", seq)


class TunnelChannel:
    """One end of a tunnel (a `Channel`): frames sealed for the other end, sent via the relay."""

    def __init__(self, owner: Relaying, relay: bytes, circuit: bytes, nonce: bytes, *,
                 opener: bool, box: Box | None) -> None:
        self._owner = owner
        self.relay = relay
        self.circuit = circuit
        self.nonce = nonce
        self.opener = opener
        self.box = box  # set by the opener once the relay names the target's key
        self.tampered = False  # a frame failed to open: changed, replayed, reordered or dropped
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._out = 0
        self._in = 0
        self._closed = False

    @property
    def label(self) -> str:
        return TUNNEL_KIND

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, data: bytes) -> None:
        if self._closed or self.box is None:
            raise ChannelClosed("tunnel closed" if self._closed else "tunnel not open yet")
        async with self._lock:  # sequence numbers in the order frames reach the relay
            sealed = seal(self.box, data, frame_context(self.nonce, self.opener, self._out))
            self._out += 1
            try:
                await self._owner.node.send(self.relay, TunnelFrame(self.circuit, sealed))
            except PeerUnavailable as exc:
                self.ended(f"relay link lost: {exc}")
                raise ChannelClosed(str(exc)) from None

    async def recv(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise ChannelClosed("tunnel closed")
        sealed = await self._inbox.get()
        if sealed is None or self.box is None:
            self._inbox.put_nowait(None)  # every later recv ends too
            raise ChannelClosed("tunnel closed")
        try:
            data = open_sealed(self.box, sealed, frame_context(self.nonce, not self.opener, self._in))
        except SealError as exc:
            self.tampered = True
            logger.warning("tunnel via %s: frame %d refused (%s): closing the tunnel",
                           self.relay.hex()[:12], self._in, exc)
            await self.close("a frame failed to authenticate")
            raise ChannelClosed("tunnel frame failed to authenticate") from None
        self._in += 1
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[bytes]:
        while True:
            try:
                yield await self.recv()
            except ChannelClosed:
                return

    def deliver(self, sealed: bytes) -> None:
        """A frame for this end arrived from the relay (opened in order by `recv`)."""
        if self._closed:
            return
        if self._inbox.qsize() >= self._owner.config.queue_frames * 4:
            self._owner.spawn_close(self, "the reader stalled")
            return
        self._inbox.put_nowait(sealed)

    def ended(self, reason: str) -> None:
        """The tunnel is gone (the other side closed it or the relay link went): no send."""
        if not self._closed:
            self._closed = True
            logger.info("tunnel via %s closed: %s", self.relay.hex()[:12], reason)
            self._owner.forget(self.relay, self.circuit)
            self._inbox.put_nowait(None)

    async def close(self, reason: str = "closed") -> None:
        if self._closed:
            return
        self.ended(reason)
        try:
            await self._owner.node.send(self.relay, TunnelClose(self.circuit, reason[:200]))
        except PeerUnavailable:
            pass
