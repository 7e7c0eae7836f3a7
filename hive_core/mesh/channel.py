"""The transport contract: a message-oriented link to one peer (aiortc or in-memory)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable


class ChannelClosed(ConnectionError):
    """The channel is closed (locally, by the peer, or because the link failed)."""


@runtime_checkable
class Channel(Protocol):
    """One bidirectional message channel to one peer.

    Messages are whole ``bytes`` objects: a send on one end is a single ``recv`` on the
    other (or none, on an unreliable channel). Implementations: ``RTCChannel`` (aiortc
    data channel) and ``MemoryChannel`` (in-process, with simulated network faults).
    """

    @property
    def label(self) -> str:
        """Name of the channel (``"hive"``, ``"crdt"``...); both ends see the same label."""
        ...

    @property
    def closed(self) -> bool:
        """True once either end closed or the link failed."""
        ...

    async def send(self, data: bytes) -> None:
        """Queue one message; may wait for buffer space. Raises ChannelClosed."""
        ...

    async def recv(self) -> bytes:
        """Next message from the peer. Raises ChannelClosed when no more will come."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate messages until the channel closes."""
        ...

    async def close(self) -> None:
        """Close both directions; idempotent."""
        ...
