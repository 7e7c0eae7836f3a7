"""A STUN responder (RFC 8489 Binding only): sentinels tell peers their address as seen from outside.

A node behind a home router gathers a server-reflexive ICE candidate by asking a STUN server
what address its packets arrive from. Every sentinel answers Binding requests on a UDP port
of its own (`--stun`), so a hive needs no third-party STUN service. Messages are parsed with
aioice (aiortc's ICE library); anything that is not a well-formed Binding request is dropped
and counted, never answered, so the responder cannot be used to reflect other traffic.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from dataclasses import dataclass
from typing import Any, cast

from aioice import stun

logger = logging.getLogger(__name__)

DEFAULT_PORT = 3478  # the IANA STUN/TURN port
MAX_REQUEST_BYTES = 548  # a Binding request is tiny; bigger datagrams are not STUN for us


@dataclass
class StunStats:
    answered: int = 0
    dropped: int = 0  # malformed, not a Binding request, or oversized


class StunResponder(asyncio.DatagramProtocol):
    """Answers each Binding request with its source address (XOR-MAPPED-ADDRESS)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.stats = StunStats()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        reply = binding_response(data, (str(addr[0]), int(addr[1])))
        if reply is None or self.transport is None:
            self.stats.dropped += 1
            return
        self.transport.sendto(reply, addr)
        self.stats.answered += 1

    def error_received(self, exc: Exception) -> None:
        logger.debug("stun: %s", exc)


def binding_response(data: bytes, source: tuple[str, int]) -> bytes | None:
    """The Binding success response telling `source` its address, or None for anything else."""
    if len(data) > MAX_REQUEST_BYTES:
        return None
    try:
        msg = stun.parse_message(data)
    except (ValueError, struct.error, IndexError, KeyError, UnicodeDecodeError):
        return None
    if msg.message_method != stun.Method.BINDING or msg.message_class != stun.Class.REQUEST:
        return None
    reply = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE,
                         transaction_id=msg.transaction_id)
    reply.attributes["XOR-MAPPED-ADDRESS"] = source
    reply.add_fingerprint()
    return bytes(reply)


async def start_stun(host: str, port: int = DEFAULT_PORT) -> tuple[asyncio.DatagramTransport, StunResponder]:
    """Listen for Binding requests on UDP `host`:`port` (0: any free port)."""
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(StunResponder, local_addr=(host, port))
    logger.info("stun: answering on %s:%d", *transport.get_extra_info("sockname")[:2])
    return transport, responder
