"""Authenticated links to peers and what the node measures about each: RTT, liveness, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hive_core.mesh.channel import Channel

RTT_ALPHA = 0.25  # EWMA weight of a new RTT sample: reacts within a few pings, smooths jitter


@dataclass(frozen=True)
class PeerInfo:
    """A snapshot of one link, for callers outside the node (planner, UI, status)."""

    node_id: bytes  # the peer's proven id (hash of its public key)
    public_key: bytes  # its Ed25519 key
    kind: str  # "rtc" (WebRTC data channel) or "ws" (WebSocket to or from a listening node)
    listen: str  # how others may reach it ("ws://..." or "")
    rtt_ms: float | None  # EWMA of ping round trips; None before the first pong
    connected_s: float  # seconds since the link opened
    idle_s: float  # seconds since anything was heard from it
    frames_in: int  # frames received and decoded
    frames_rejected: int  # frames refused (malformed, oversized, forged)
    pings: int  # pings sent
    pongs: int  # pongs received: pongs / pings is the link's success rate


class Link:
    """One authenticated channel to one peer, plus the RTC connection under it if any."""

    def __init__(
        self,
        node_id: bytes,
        public_key: bytes,
        channel: Channel,
        *,
        kind: str,
        listen: str = "",
        rtc: Any = None,
    ) -> None:
        self.node_id = node_id
        self.public_key = public_key
        self.channel = channel
        self.kind = kind
        self.listen = listen
        self.rtc = rtc  # hive_core.mesh.rtc.RTCPeer for kind "rtc"
        self.rtt_ms: float | None = None
        self.connected_at = time.monotonic()
        self.last_heard = self.connected_at  # any frame, pongs included (liveness)
        self.last_active: float | None = None  # any frame but pings and pongs; None: none yet
        self.refusal = ""  # why the peer said it ends this link, if it did
        self.frames_in = 0
        self.frames_rejected = 0
        self.pings = 0
        self.pongs = 0
        self.pinging = False  # a heartbeat probe is in flight
        # Called on the first frame but pings and pongs, to admit the link (a listener's
        # budget); False refuses it and that frame is dropped.
        self.on_first_active: Callable[[], bool] | None = None
        self.refused_here = False  # this node refused the link: its frames are dropped
        self.reader: asyncio.Task[None] | None = None
        # A direct WebSocket to a peer on this machine or LAN (`hive_core.mesh.lan`): preferred
        # over the data channel while it is open.
        self.lan = False

    def __repr__(self) -> str:
        return f"Link({self.node_id.hex()[:8]}, {self.kind})"

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def active(self) -> bool:
        """Note a frame other than a ping or pong; False when it must be dropped (the link was
        refused on its first request)."""
        if self.last_active is None and self.on_first_active is not None:
            admit, self.on_first_active = self.on_first_active, None
            self.refused_here = not admit()
        self.last_active = self.last_heard
        return not self.refused_here

    def observe_rtt(self, rtt_ms: float) -> None:
        if rtt_ms < 0:
            return
        self.rtt_ms = rtt_ms if self.rtt_ms is None else (
            (1 - RTT_ALPHA) * self.rtt_ms + RTT_ALPHA * rtt_ms
        )

    def info(self) -> PeerInfo:
        now = time.monotonic()
        return PeerInfo(
            node_id=self.node_id, public_key=self.public_key, kind=self.kind, listen=self.listen,
            rtt_ms=self.rtt_ms, connected_s=now - self.connected_at, idle_s=now - self.last_heard,
            frames_in=self.frames_in, frames_rejected=self.frames_rejected,
            pings=self.pings, pongs=self.pongs,
        )

    async def close(self) -> None:
        await self.channel.close()
        if self.rtc is not None:
            await self.rtc.close()


class PeerTable:
    """The node's links, at most one RTC and one WebSocket link per peer."""

    def __init__(self) -> None:
        self._rtc: dict[bytes, Link] = {}
        self._ws: dict[bytes, Link] = {}

    def _table(self, kind: str) -> dict[bytes, Link]:
        return self._rtc if kind == "rtc" else self._ws

    def add(self, link: Link) -> Link | None:
        """Insert ``link``; returns the link it replaces (to be closed by the caller)."""
        table = self._table(link.kind)
        old = table.get(link.node_id)
        table[link.node_id] = link
        return old if old is not link else None

    def remove(self, link: Link) -> bool:
        """Remove ``link`` if it is still the current one for its peer."""
        table = self._table(link.kind)
        if table.get(link.node_id) is link:
            del table[link.node_id]
            return True
        return False

    def best(self, node_id: bytes) -> Link | None:
        """The link to use for ``node_id``: a direct LAN link, else its data channel, else its
        WebSocket."""
        ws = self._ws.get(node_id)
        if ws is not None and ws.lan and not ws.channel.closed:
            return ws
        return self._rtc.get(node_id) or ws

    def ws(self, node_id: bytes) -> Link | None:
        return self._ws.get(node_id)

    def rtc(self, node_id: bytes) -> Link | None:
        return self._rtc.get(node_id)

    def all(self) -> list[Link]:
        return [*self._rtc.values(), *self._ws.values()]

    def rtc_links(self) -> list[Link]:
        return list(self._rtc.values())

    def closest(self, target: bytes, n: int, exclude: set[bytes]) -> list[Link]:
        """Up to ``n`` links (one per peer) whose ids are XOR-closest to ``target``."""
        seen: dict[bytes, Link] = {}
        for link in self.all():
            if link.node_id not in exclude and link.node_id not in seen:
                seen[link.node_id] = self.best(link.node_id) or link
        t = int.from_bytes(target, "big")
        ranked = sorted(seen.values(), key=lambda lk: int.from_bytes(lk.node_id, "big") ^ t)
        return ranked[:n]

    def __len__(self) -> int:
        return len(self._rtc)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._rtc


class Unreachable:
    """Peers that failed to link recently, skipped until their backoff ends.

    The backoff starts at `first_s` and doubles with each failure up to `max_s` (Petals bans
    a failed peer the same way); a peer that links is forgotten. Bounded: the oldest entries
    go first beyond `max_peers`.
    """

    def __init__(self, first_s: float = 1.0, max_s: float = 60.0, max_peers: int = 4096) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.max_peers = max_peers
        self._until: dict[bytes, tuple[float, float]] = {}  # id -> (blocked until, last backoff)

    def failed(self, node_id: bytes, now: float | None = None) -> float:
        """Note a failed attempt; returns the seconds `node_id` is now skipped for."""
        now = time.monotonic() if now is None else now
        _, last = self._until.pop(node_id, (0.0, 0.0))
        backoff = min(self.max_s, last * 2 if last else self.first_s)
        self._until[node_id] = (now + backoff, backoff)
        while len(self._until) > self.max_peers:
            del self._until[next(iter(self._until))]
        return backoff

    def blocked(self, node_id: bytes, now: float | None = None) -> bool:
        entry = self._until.get(node_id)
        return entry is not None and entry[0] > (time.monotonic() if now is None else now)

    def linked(self, node_id: bytes) -> None:
        self._until.pop(node_id, None)

    def __len__(self) -> int:
        return len(self._until)
