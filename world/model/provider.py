"""Sync provider: keeps a City in step with one peer over one `Channel` ("crdt" label).

Local edits are pushed as they happen (never remote ones: no echo storms); each side
sends sync step 1 (its state vector) at start and every `interval_s`, answered with the
signed edits the asker lacks. That periodic round heals lost, duplicated and reordered
deliveries. Raw Yjs step 2 / update messages are refused here: on the mesh every change
must come as an edit signed by its author.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from dataclasses import dataclass
from typing import Any, Self

from hive_core.mesh.channel import Channel, ChannelClosed

from .city import City, Outcome
from .errors import ProtocolError
from .lib0 import decode_state_vector, encode_state_vector
from .yproto import (
    CHUNK_BYTES,
    Awareness,
    AwarenessEntry,
    Chunk,
    Edits,
    Reassembler,
    SyncStep1,
    decode,
    encode,
    split,
)

log = logging.getLogger(__name__)
AWARENESS_EVERY = 10  # periodic rounds between presence refreshes
IN_FLIGHT_ROUNDS = 3  # an answered edit is not sent again to the same peer for this long


@dataclass
class ProviderStats:
    """Counters of one provider, for tests, benches and `cadencia world status`."""

    sent_messages: int = 0
    sent_bytes: int = 0
    received_messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    early: int = 0
    rejected: int = 0
    protocol_errors: int = 0


class SyncProvider:
    """Syncs `city` with the peer at the other end of `channel` until stopped."""

    def __init__(self, city: City, channel: Channel, *, interval_s: float = 1.0) -> None:
        self.city = city
        self.channel = channel
        self.interval_s = interval_s
        self.stats = ProviderStats()
        self.presence: dict[int, dict[str, Any]] = {}  # peer client id -> presence state
        self._presence_clock = 0
        self._my_presence: dict[str, Any] | None = None
        self._outq: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None
        self._chunks = Reassembler()
        self._ids = itertools.count(1)
        self._resync = asyncio.Event()
        self._rng = random.Random()
        self._in_flight: dict[int, tuple[int, float]] = {}  # client -> (end sent, when)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def start(self) -> None:
        self._unsubscribe = self.city.on_local_edit(
            lambda edit: self._outq.put_nowait(encode(Edits((bytes(edit),)))))
        self._queue(SyncStep1(encode_state_vector(self.city.state_vector())))
        for coro in (self._send_loop(), self._recv_loop(), self._round_loop()):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, ChannelClosed):
                pass
            except Exception:  # a loop that died must not make stopping fail too
                log.exception("sync loop with %s had failed", self.peer)
        self._tasks = []

    @property
    def peer(self) -> str:
        """Who is at the other end, for logs (the channel's peer, else its label)."""
        return str(getattr(self.channel, "peer", "") or self.channel.label)

    def set_presence(self, state: dict[str, Any] | None) -> None:
        """Publish this player's presence (cursor, selection...); None announces leaving."""
        self._my_presence = state
        self._presence_clock += 1
        self._queue(self._awareness())

    def _awareness(self) -> Awareness:
        return Awareness((AwarenessEntry(self.city.client_id, self._presence_clock,
                                         self._my_presence),))

    def _queue(self, msg: SyncStep1 | Edits | Awareness) -> None:
        for part in split(encode(msg), next(self._ids)):
            self._outq.put_nowait(part)

    @property
    def closed(self) -> bool:
        """True once the channel closed: the provider then does nothing more."""
        return self.channel.closed

    async def _send_loop(self) -> None:
        while True:
            data = await self._outq.get()
            try:
                await self.channel.send(data)
            except ChannelClosed:
                return
            self.stats.sent_messages += 1
            self.stats.sent_bytes += len(data)

    async def _round_loop(self) -> None:
        rounds = 0
        while not self.channel.closed:
            # Jitter: neighbours that ask at different moments get each missing edit from
            # whichever answers first, instead of from all of them at once.
            wait = self.interval_s * self._rng.uniform(0.5, 1.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync.wait(), wait)
                await asyncio.sleep(self.interval_s / 10)  # let a burst of early edits land
            self._resync.clear()
            self._queue(SyncStep1(encode_state_vector(self.city.state_vector())))
            rounds += 1
            if self._my_presence is not None and rounds % AWARENESS_EVERY == 0:
                self._queue(self._awareness())

    async def _recv_loop(self) -> None:
        """Apply what the peer sends; whatever one message does, the next is read."""
        async for data in self.channel:
            self.stats.received_messages += 1
            try:
                self._handle(decode(data))
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                log.warning("bad sync message from %s: %s", self.peer, exc)
            except Exception:  # a bug or a library error on hostile input: drop it
                self.stats.protocol_errors += 1
                log.exception("sync message from %s dropped", self.peer)

    def _handle(self, msg: object) -> None:
        if isinstance(msg, Chunk):
            whole = self._chunks.add(msg)
            if whole is not None:
                self._handle(decode(whole))
        elif isinstance(msg, SyncStep1):
            self._answer(decode_state_vector(msg.state_vector))
        elif isinstance(msg, Edits):
            for raw in msg.edits:  # one bad edit must not cost the others of its batch
                try:
                    outcome = self.city.receive(raw)
                except Exception:  # refused like any invalid edit, the link serves on
                    log.exception("edit from %s refused", self.peer)
                    outcome = Outcome.REJECTED
                self._count(outcome)
        elif isinstance(msg, Awareness):
            for entry in msg.entries:
                if entry.state is None:
                    self.presence.pop(entry.client_id, None)
                else:
                    self.presence[entry.client_id] = entry.state
        else:
            raise ProtocolError(f"unsigned {type(msg).__name__} refused on the mesh")

    def _count(self, outcome: Outcome) -> None:
        if outcome is Outcome.ACCEPTED:
            self.stats.accepted += 1
        elif outcome is Outcome.DUPLICATE:
            self.stats.duplicates += 1
        elif outcome is Outcome.EARLY:
            self.stats.early += 1
            self._resync.set()
        else:
            self.stats.rejected += 1

    def _answer(self, state_vector: dict[int, int]) -> None:
        """Send the edits the peer lacks, batched below the channel's message limit.

        Edits sent in the last few rounds are assumed in flight and not sent again; if
        they were lost, a later round (after IN_FLIGHT_ROUNDS) sends them.
        """
        now = asyncio.get_running_loop().time()
        horizon = now - IN_FLIGHT_ROUNDS * self.interval_s
        batch: list[bytes] = []
        size = 0
        for edit in self.city.edits_since(state_vector):
            sent_end, sent_at = self._in_flight.get(edit.client_id, (0, 0.0))
            if edit.end <= sent_end and sent_at > horizon:
                continue
            self._in_flight[edit.client_id] = (max(edit.end, sent_end), now)
            raw = bytes(edit)
            if batch and size + len(raw) > CHUNK_BYTES - 1024:
                self._queue(Edits(tuple(batch)))
                batch, size = [], 0
            batch.append(raw)
            size += len(raw) + 4
        if batch:
            self._queue(Edits(tuple(batch)))
