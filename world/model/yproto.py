"""y-protocols messages as pure functions: sync step 1/2, update, awareness, plus two
cadencia extensions (batches of signed edits; chunks of a message too big for one send).

Byte layout (lib0 var-uints), as in the y-protocols package:
  sync:       0, step (0 = step 1, 1 = step 2, 2 = update), var-bytes payload
  awareness:  1, var-bytes (count, then client id, clock, JSON state per entry)
  edits:      32, count, var-bytes signed edit per entry              (cadencia)
  chunk:      33, message id, index, count, var-bytes part            (cadencia)
Peers that only speak y-protocols ignore the extension types, as y-protocols does.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError
from .lib0 import Reader, write_var_bytes, write_var_string, write_var_uint

CHUNK_BYTES = 200 * 1024  # below aiortc's 256 KiB message limit, with room for headers
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a reassembled message may not exceed this
MAX_AWARENESS_STATE = 4096  # bytes of JSON per client state


class MessageType(enum.IntEnum):
    SYNC = 0
    AWARENESS = 1
    EDITS = 32
    CHUNK = 33


class SyncStep(enum.IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True)
class SyncStep1:
    """"Here is my state vector; send me what I lack.\""""

    state_vector: bytes


@dataclass(frozen=True)
class SyncStep2:
    """The answer to step 1: a Yjs update with everything the asker lacks."""

    update: bytes


@dataclass(frozen=True)
class SyncUpdate:
    """A Yjs update pushed as it happens."""

    update: bytes


@dataclass(frozen=True)
class AwarenessEntry:
    """One client's presence (cursor, name...); state None means the client left."""

    client_id: int
    clock: int
    state: dict[str, Any] | None


@dataclass(frozen=True)
class Awareness:
    entries: tuple[AwarenessEntry, ...]


@dataclass(frozen=True)
class Edits:
    """Signed edits (`SignedEdit` bytes), relayed verbatim from their authors."""

    edits: tuple[bytes, ...]


@dataclass(frozen=True)
class Chunk:
    """Part `index` of `count` of message `message_id`, which was too big to send whole."""

    message_id: int
    index: int
    count: int
    part: bytes


Message = SyncStep1 | SyncStep2 | SyncUpdate | Awareness | Edits | Chunk


def encode(msg: Message) -> bytes:
    """The wire bytes of one message."""
    if isinstance(msg, SyncStep1):
        return bytes([MessageType.SYNC, SyncStep.STEP1]) + write_var_bytes(msg.state_vector)
    if isinstance(msg, SyncStep2):
        return bytes([MessageType.SYNC, SyncStep.STEP2]) + write_var_bytes(msg.update)
    if isinstance(msg, SyncUpdate):
        return bytes([MessageType.SYNC, SyncStep.UPDATE]) + write_var_bytes(msg.update)
    if isinstance(msg, Awareness):
        return bytes([MessageType.AWARENESS]) + write_var_bytes(encode_awareness(msg.entries))
    if isinstance(msg, Edits):
        body = b"".join(write_var_bytes(e) for e in msg.edits)
        return bytes([MessageType.EDITS]) + write_var_uint(len(msg.edits)) + body
    if isinstance(msg, Chunk):
        return (bytes([MessageType.CHUNK]) + write_var_uint(msg.message_id)
                + write_var_uint(msg.index) + write_var_uint(msg.count)
                + write_var_bytes(msg.part))
    raise TypeError(f"not a sync message: {type(msg).__name__}")


def decode(data: bytes) -> Message:
    """Parse one message; raises ProtocolError on anything malformed or unknown."""
    r = Reader(data)
    kind = r.var_uint()
    msg: Message
    if kind == MessageType.SYNC:
        step = r.var_uint()
        payload = r.var_bytes()
        if step == SyncStep.STEP1:
            msg = SyncStep1(payload)
        elif step == SyncStep.STEP2:
            msg = SyncStep2(payload)
        elif step == SyncStep.UPDATE:
            msg = SyncUpdate(payload)
        else:
            raise ProtocolError(f"unknown sync step {step}")
    elif kind == MessageType.AWARENESS:
        msg = Awareness(decode_awareness(r.var_bytes()))
    elif kind == MessageType.EDITS:
        count = r.var_uint()
        if count > len(data):
            raise ProtocolError(f"edit count {count} exceeds the message size")
        msg = Edits(tuple(r.var_bytes() for _ in range(count)))
    elif kind == MessageType.CHUNK:
        mid, index, count = r.var_uint(), r.var_uint(), r.var_uint()
        if not 0 <= index < count or count * CHUNK_BYTES > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"bad chunk {index}/{count}")
        part = r.var_bytes()
        if len(part) > CHUNK_BYTES:
            raise ProtocolError(f"chunk part of {len(part)} bytes exceeds {CHUNK_BYTES}")
        msg = Chunk(mid, index, count, part)
    else:
        raise ProtocolError(f"unknown message type {kind}")
    r.end()
    return msg


def encode_awareness(entries: tuple[AwarenessEntry, ...]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for e in entries:
        state = "null" if e.state is None else json.dumps(e.state, separators=(",", ":"))
        parts.append(write_var_uint(e.client_id) + write_var_uint(e.clock)
                     + write_var_string(state))
    return b"".join(parts)


def decode_awareness(data: bytes) -> tuple[AwarenessEntry, ...]:
    r = Reader(data)
    count = r.var_uint()
    if count > len(data):
        raise ProtocolError("awareness entry count exceeds the message size")
    out = []
    for _ in range(count):
        client, clock, text = r.var_uint(), r.var_uint(), r.var_string()
        if len(text) > MAX_AWARENESS_STATE:
            raise ProtocolError("awareness state too large")
        try:
            state = json.loads(text)
        except ValueError:
            raise ProtocolError("awareness state is not JSON") from None
        if state is not None and not isinstance(state, dict):
            raise ProtocolError("awareness state must be a JSON object or null")
        out.append(AwarenessEntry(client, clock, state))
    r.end()
    return tuple(out)


def split(message: bytes, message_id: int, limit: int = CHUNK_BYTES) -> list[bytes]:
    """The message itself if it fits `limit`, else its encoded chunks."""
    if len(message) <= limit:
        return [message]
    if len(message) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(message)} bytes is too large to send")
    parts = [message[i:i + limit] for i in range(0, len(message), limit)]
    return [encode(Chunk(message_id, i, len(parts), p)) for i, p in enumerate(parts)]


class Reassembler:
    """Collects chunks into whole messages; bounded so a peer cannot exhaust memory."""

    def __init__(self, max_pending: int = 2) -> None:
        self._parts: dict[int, dict[int, bytes]] = {}
        self._counts: dict[int, int] = {}
        self._max_pending = max_pending

    def add(self, chunk: Chunk) -> bytes | None:
        """The whole message once its last chunk arrives, else None."""
        if chunk.message_id not in self._parts:
            if len(self._parts) >= self._max_pending:
                oldest = next(iter(self._parts))
                del self._parts[oldest], self._counts[oldest]
            self._parts[chunk.message_id] = {}
            self._counts[chunk.message_id] = chunk.count
        elif self._counts[chunk.message_id] != chunk.count:
            raise ProtocolError(f"chunk count changed for message {chunk.message_id}")
        parts = self._parts[chunk.message_id]
        parts[chunk.index] = chunk.part
        if len(parts) < chunk.count:
            return None
        del self._parts[chunk.message_id], self._counts[chunk.message_id]
        return b"".join(parts[i] for i in range(chunk.count))
