"""A lossy, delaying UDP relay on loopback, spliced between two aiortc peers by SDP rewriting.

The kernel here has no netem, so to put real aiortc (ICE, DTLS, SCTP) through a
20 ms + 5 % loss link, each peer is told (by rewriting its counterpart's host candidate
in the SDP) that the other sits at a relay port. The relay forwards every datagram to
the real peer from the port that peer believes is the sender, after a one-way delay
with jitter, dropping each with probability `loss`. Loopback only.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass

LOOPBACK = "127.0.0.1"
_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )(\d+)( typ host.*)$",
                        re.IGNORECASE | re.MULTILINE)


class RelayError(ValueError):
    """An SDP handed to the relay has no loopback host candidate to splice."""


@dataclass
class Shaping:
    """What happens to each datagram, in each direction (mutable: switch on after connect)."""

    delay_s: float = 0.0  # one-way delay
    jitter_s: float = 0.0  # extra delay, uniform in [0, jitter_s] (may reorder)
    loss: float = 0.0  # drop probability


class _Side(asyncio.DatagramProtocol):
    """The relay port standing in for one peer: what arrives is forwarded to the other."""

    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None  # the real peer datagrams here are for
        self.out: _Side | None = None  # the side they leave from (the sender's stand-in)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != LOOPBACK or self.target is None or self.out is None:
            return
        self.relay.received += 1
        s = self.relay.shaping
        if s.loss and self.relay.rng.random() < s.loss:
            self.relay.dropped += 1
            return
        out, target = self.out, self.target
        delay = s.delay_s + (self.relay.rng.uniform(0.0, s.jitter_s) if s.jitter_s else 0.0)
        if delay <= 0:
            out.send(data, target)
        else:
            asyncio.get_running_loop().call_later(delay, out.send, data, target)

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, target)


class UdpRelay:
    """Relay ports for peers A (offerer) and B (answerer); use `rewrite_offer/answer`."""

    def __init__(self, shaping: Shaping | None = None, seed: int = 0) -> None:
        self.shaping = shaping or Shaping()
        self.rng = random.Random(seed)
        self.received = 0
        self.dropped = 0
        self._for_a = _Side(self)  # B sends here believing it is A
        self._for_b = _Side(self)  # A sends here believing it is B

    async def start(self) -> UdpRelay:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self._for_a, local_addr=(LOOPBACK, 0))
        await loop.create_datagram_endpoint(lambda: self._for_b, local_addr=(LOOPBACK, 0))
        # a datagram for A arrives at A's stand-in and leaves from B's stand-in, and back
        self._for_a.out, self._for_b.out = self._for_b, self._for_a
        return self

    def _port(self, side: _Side) -> int:
        assert side.transport is not None, "start() the relay first"
        return int(side.transport.get_extra_info("sockname")[1])

    def _splice(self, sdp: str, side: _Side) -> str:
        found = _CANDIDATE.search(sdp)
        if found is None:
            raise RelayError("SDP has no 127.0.0.1 host candidate (use RTCOptions.loopback())")
        side.target = (LOOPBACK, int(found.group(2)))
        return _CANDIDATE.sub(lambda m: f"{m.group(1)}{self._port(side)}{m.group(3)}", sdp)

    def rewrite_offer(self, sdp: str) -> str:
        """A's offer as B must see it: A's candidate replaced by A's stand-in port."""
        return self._splice(sdp, self._for_a)

    def rewrite_answer(self, sdp: str) -> str:
        """B's answer as A must see it."""
        return self._splice(sdp, self._for_b)

    def close(self) -> None:
        for side in (self._for_a, self._for_b):
            if side.transport is not None:
                side.transport.close()
