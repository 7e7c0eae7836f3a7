"""Handing out and taking up the hive's STUN and TURN servers, so peers behind NAT link directly.

A sentinel answers STUN itself (`hive_core.mesh.stun`) and may run a TURN relay
(`hive_core.mesh.turn`); its `IceOffer` answers an `IceQuery` with the STUN URL and, with a
relay, a TURN login made for the asking node's id that expires on its own. A joining node asks
the entry it joined through (`fetch_ice`) before it links to anyone else, and takes servers
from that entry only: any other peer could otherwise steer its relayed traffic through a relay
of its choosing. Data channels made after that gather host, server-reflexive and relay
candidates.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from hive_core.mesh.rtc import IceServer
from hive_core.mesh.turn import TurnServer
from hive_core.protocol import Error
from hive_core.protocol.meshmsgs import IceQuery, IceServerEntry, IceServers

logger = logging.getLogger(__name__)
FETCH_TIMEOUT_S = 3.0  # an entry that does not answer at once offers nothing


class IceOffer:
    """The servers a sentinel offers: its STUN responder's URL and, optionally, its TURN relay."""

    def __init__(self, stun_url: str | None, turn: TurnServer | None = None) -> None:
        self.stun_url = stun_url
        self.turn = turn
        self.answered = 0

    def answer(self, node_id: bytes, query: IceQuery) -> IceServers:
        """The reply to `query` from node `node_id`."""
        entries = []
        if self.stun_url:
            entries.append(IceServerEntry(self.stun_url, "", "", 0))
        if self.turn is not None:
            cred = self.turn.credential_for(node_id.hex())
            entries.append(IceServerEntry(cred.url, cred.username, cred.password, cred.expires_at))
        self.answered += 1
        return IceServers(query.rpc_id, tuple(entries))


async def fetch_ice(node: Any, entry: bytes, *, timeout_s: float = FETCH_TIMEOUT_S) -> tuple[IceServer, ...]:
    """Ask `entry` (the node `node` joined through) for its ICE servers and use them for every
    data channel `node` makes from now on; () when it offers none or does not answer."""
    node.register_reply(IceServers)
    try:
        reply = await node.request(entry, IceQuery(node.next_rpc_id()), timeout=timeout_s)
    except ConnectionError as exc:
        logger.info("ice: %s offered no servers: %s", entry.hex()[:12], exc)
        return ()
    if isinstance(reply, Error) or not isinstance(reply, IceServers):
        return ()
    try:
        servers = tuple(IceServer(s.url, s.username, s.credential) for s in reply.servers)
    except ValueError as exc:
        logger.warning("ice: refused the servers %s offered: %s", entry.hex()[:12], exc)
        return ()
    if servers:
        node.config = replace(node.config, rtc=replace(node.config.rtc, ice_servers=servers))
        logger.info("ice: gathering through %s", ", ".join(s.url for s in servers))
    return servers
