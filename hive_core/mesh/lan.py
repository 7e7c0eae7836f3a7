"""Direct WebSocket links to peers on this machine or this LAN: the fast lane beside the data
channel.

A WebRTC data channel runs SCTP over DTLS over UDP, all of it in Python (aiortc); a WebSocket
to the peer's listen address is the kernel's TCP, several times quicker a message between two
processes on one machine, and a token of a cascade crosses S + 1 such hops (`python -m bench
loopback` measures a hive both ways).

So once a data channel to a peer is up, a node whose peer listens at an address that is near
(loopback, private or link-local: the same machine or network) and is the address the data
channel's packets come from dials that address too. The
WebSocket is authenticated like any other (the peer proves the key the data channel already
proved, or the link is dropped) and carries the same sealed, signed frames; `PeerTable.best`
prefers it while it is open and falls back to the data channel when it closes. The dialer is
the side that does not listen, else the one with the smaller id, so one link serves each pair.
Peers far away keep the data channel alone (their listen address is public, or absent), and a
node started with ``lan_links=False`` (for example to push every byte through a simulated
WAN) neither dials nor prefers such links.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import TYPE_CHECKING

from hive_core.mesh.peers import Link
from hive_core.mesh.wschannel import parse_ws_url, ws_connect
from hive_core.protocol import FindNode, HandshakeError

if TYPE_CHECKING:
    from hive_core.mesh.hivenode import HiveNode

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 60.0  # a listen URL that could not be dialled is not tried again before this
NEAR_NAMES = frozenset({"localhost"})


def near(host: str) -> bool:
    """Whether `host` (an IP address or "localhost") is this machine or a private network."""
    if host in NEAR_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a DNS name: it may be anywhere
    return ip.is_loopback or ip.is_private or ip.is_link_local


def same_host(listen_host: str, packets_from: str | None) -> bool:
    """Whether a peer's listen host is where its data channel's packets come from (any two
    loopback addresses are this machine)."""
    if packets_from is None:
        return False
    try:
        a = ipaddress.ip_address("127.0.0.1" if listen_host in NEAR_NAMES else
                                 listen_host.strip("[]"))
        b = ipaddress.ip_address(packets_from.strip("[]"))
    except ValueError:
        return False
    return a == b or (a.is_loopback and b.is_loopback)


def near_url(url: str) -> bool:
    """Whether a ``ws://HOST:PORT`` listen URL points at a near host (False if malformed)."""
    try:
        host, _ = parse_ws_url(url)
    except ValueError:
        return False
    return near(host)


class LanLinks:
    """Dials and keeps the direct links of one `HiveNode` (see the module docstring)."""

    def __init__(self, hive: HiveNode) -> None:
        self.hive = hive
        self.dialing: set[bytes] = set()
        self._failed: dict[str, float] = {}  # listen URL -> when dialling it last failed
        self.dialled = 0  # links this node opened (tests, status)

    def should_dial(self, link: Link) -> bool:
        """Whether this node opens a direct link to the peer of data channel `link`: only to
        the address the peer's packets already come from, so a peer cannot make this node
        knock on another host of its network by naming it as its listen address."""
        node = self.hive.node
        if not self.hive.config.lan_links or link.kind != "rtc" or link.rtc is None:
            return False
        try:
            host, _ = parse_ws_url(link.listen)
        except ValueError:
            return False
        if not near(host) or not same_host(host, link.rtc.remote_host):
            return False
        if node.peers.ws(link.node_id) is not None or link.node_id in self.dialing:
            return False
        if node.listen_url and not near_url(node.listen_url):
            return False  # this node is reached from afar: its peers are not on its LAN
        if node.listen_url and link.node_id < node.node_id:
            return False  # both listen: the peer with the smaller id dials
        failed = self._failed.get(link.listen)
        return failed is None or time.monotonic() - failed > RETRY_AFTER_S

    def consider(self, link: Link) -> None:
        """Dial the peer of `link` in the background if it should have a direct link."""
        if self.should_dial(link):
            self.dialing.add(link.node_id)
            self.hive.node.spawn(self._dial(link.node_id, link.listen), name="lan link")

    def consider_all(self) -> None:
        """Dial every near peer that has no direct link (one closed while idle, say)."""
        for link in self.hive.node.peers.rtc_links():
            self.consider(link)

    async def _dial(self, node_id: bytes, url: str) -> None:
        node = self.hive.node
        try:
            channel = await ws_connect(url, timeout=self.hive.config.handshake_timeout_s)
            link = await node.attach(channel, kind="ws", mode="second")
            if link.node_id != node_id:  # another node now listens there
                await node.close_link(link, "not the peer that listens at this address")
                raise HandshakeError(f"{url} is now {link.node_id.hex()[:12]}")
            link.lan = True
            # A listener admits a link on its first request: one cheap request opens it.
            await node.request(node_id, FindNode(node.next_rpc_id(), node.node_id))
            self.dialled += 1
            logger.info("%s: direct link to %s at %s", node, node_id.hex()[:12], url)
        except (ConnectionError, HandshakeError, TimeoutError) as exc:
            self._failed[url] = time.monotonic()
            while len(self._failed) > 256:
                del self._failed[next(iter(self._failed))]
            logger.info("%s: no direct link to %s at %s: %s", node, node_id.hex()[:12], url, exc)
        finally:
            self.dialing.discard(node_id)

