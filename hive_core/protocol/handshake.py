"""Signed frames: the join handshake (Hello) with replay protection, and relayed Signals."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

from hive_core.base.codec import encode_struct
from hive_core.base.errors import ProtocolError
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify
from hive_core.protocol.messages import NONCE_BYTES, Hello, Signal, SignalKind

log = logging.getLogger(__name__)

_HELLO_DOMAIN = b"cadencia/hello/v1\x00"
_SIGNAL_DOMAIN = b"cadencia/signal/v1\x00"
AGENT = "cadencia/0.1"


class HandshakeError(ProtocolError):
    """A Hello or Signal does not verify: bad signature, wrong audience, stale or replayed."""


class ReplayedHello(HandshakeError):
    """A Hello seen before, or dated outside the replay window."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def hello_signing_bytes(msg: Hello) -> bytes:
    """What a Hello's signature covers: every field but the signature, domain-separated."""
    return _HELLO_DOMAIN + encode_struct(replace(msg, signature=bytes(64)))


def make_hello(
    identity: Identity,
    *,
    audience: bytes = b"",
    listen: str = "",
    now_ms: int | None = None,
    nonce: bytes | None = None,
) -> Hello:
    """A fresh signed Hello from `identity`, meant for node `audience` (b"" = whoever answers)."""
    unsigned = Hello(
        public_key=identity.public_key,
        timestamp_ms=_now_ms() if now_ms is None else now_ms,
        nonce=os.urandom(NONCE_BYTES) if nonce is None else nonce,
        audience=audience,
        listen=listen,
        agent=AGENT,
        signature=bytes(64),
    )
    return replace(unsigned, signature=identity.sign(hello_signing_bytes(unsigned)))


class ReplayGuard:
    """Accepts each signed Hello once: timestamp within `window_s` and nonce not yet seen.

    Nonces are remembered for twice the window (beyond that the timestamp check refuses
    the replay anyway), at most `max_nonces` of them; when full, the oldest are forgotten
    early, which only matters to an attacker replaying within the window at that rate.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        max_nonces: int = 100_000,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.max_nonces = max_nonces
        self._clock_ms = clock_ms
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def check(self, public_key: bytes, timestamp_ms: int, nonce: bytes) -> None:
        now = self._clock_ms()
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= now - 2 * self.window_ms and len(self._seen) < self.max_nonces:
                break
            del self._seen[oldest]
        if abs(now - timestamp_ms) > self.window_ms:
            raise ReplayedHello(
                f"timestamp {timestamp_ms} is outside the {self.window_ms} ms window around {now}"
            )
        tag = public_key + nonce
        if tag in self._seen:
            raise ReplayedHello("replayed hello (nonce already seen)")
        self._seen[tag] = now


def verify_hello(msg: Hello, guard: ReplayGuard, *, me: bytes | None = None) -> bytes:
    """The sender's node id if `msg` is a valid, fresh Hello for node `me`; else HandshakeError.

    Refusals are logged at WARNING so an operator sees forged or replayed joins.
    """
    try:
        if msg.audience and me is not None and msg.audience != me:
            raise HandshakeError("hello is addressed to another node")
        try:
            verify(msg.public_key, hello_signing_bytes(msg), msg.signature)
        except IdentityError as exc:
            raise HandshakeError(f"hello signature: {exc}") from exc
        guard.check(msg.public_key, msg.timestamp_ms, msg.nonce)
    except HandshakeError as exc:
        log.warning("refused hello from %s: %s", node_id_of(msg.public_key).hex()[:12], exc)
        raise
    return node_id_of(msg.public_key)


def signal_signing_bytes(msg: Signal) -> bytes:
    """What a Signal's signature covers: all but ttl, hops (changed by relays) and itself."""
    return _SIGNAL_DOMAIN + encode_struct(replace(msg, ttl=0, hops=0, signature=bytes(64)))


def make_signal(
    identity: Identity,
    *,
    to_id: bytes,
    kind: SignalKind,
    sdp: str,
    session: int,
    ttl: int = 8,
    now_ms: int | None = None,
) -> Signal:
    """A signed signaling message from `identity` to node `to_id`."""
    unsigned = Signal(
        session=session, from_id=identity.node_id, to_id=to_id, kind=kind, sdp=sdp,
        sender_key=identity.public_key, sent_at_ms=_now_ms() if now_ms is None else now_ms,
        ttl=ttl, hops=0, signature=bytes(64),
    )
    return replace(unsigned, signature=identity.sign(signal_signing_bytes(unsigned)))


def verify_signal(msg: Signal, *, max_age_s: float = 60.0, now_ms: int | None = None) -> None:
    """Raise HandshakeError unless `msg` was signed by the node it claims and is recent."""
    if node_id_of(msg.sender_key) != msg.from_id:
        raise HandshakeError("signal sender key does not match from_id")
    try:
        verify(msg.sender_key, signal_signing_bytes(msg), msg.signature)
    except IdentityError as exc:
        raise HandshakeError(f"signal signature: {exc}") from exc
    now = _now_ms() if now_ms is None else now_ms
    if abs(now - msg.sent_at_ms) > max_age_s * 1000:
        raise HandshakeError(f"signal is {abs(now - msg.sent_at_ms)} ms old")


def relayed(msg: Signal) -> Signal:
    """The copy a relay forwards: one more hop, one less ttl; HandshakeError when ttl is spent."""
    if msg.ttl == 0:
        raise HandshakeError("signal ttl exhausted")
    return replace(msg, ttl=msg.ttl - 1, hops=min(255, msg.hops + 1))


