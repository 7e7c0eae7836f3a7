"""Joining the mesh through entry URLs without waiting on the dead.

The first entry (a sentinel, or any node that listens) to link and answer a FindNode for our
id wins; entries are tried ENTRY_STAGGER_S apart, so a dead first one costs no full connect
timeout. Data channels to the peers it names are opened at once, each given `join_peer_s`:
a slow one links in the background, a dead one is marked unreachable (DHT requests skip it
while it backs off), and neither holds up the join. Then the DHT is bootstrapped through the
entry, and the entry's WebSocket is closed once a data channel to it is up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from hive_core.mesh.dht import RpcError
from hive_core.mesh.ice import fetch_ice
from hive_core.mesh.node import PeerUnavailable
from hive_core.mesh.peers import Link
from hive_core.mesh.wschannel import ws_connect
from hive_core.protocol import Contact, FindNode, HandshakeError, Nodes

if TYPE_CHECKING:
    from hive_core.mesh.hivenode import HiveNode

logger = logging.getLogger(__name__)

ENTRY_STAGGER_S = 0.5  # join URLs are tried this far apart, the first to answer wins


class JoinFailed(ConnectionError):
    """No join URL answered with a valid, authenticated hive node."""


async def join_mesh(hive: HiveNode) -> Link:
    """Reach an entry, link to the peers it names, join the DHT: never waiting on a peer
    that cannot answer (each gets `join_peer_s`, then links in the background, if ever).
    Returns the link to the entry (a WebSocket, closed once a data channel replaces it)."""
    entry, contacts = await _reach_entry(
        hive, [u for u in hive.config.join if u != hive.listen_url])
    logger.info("%s joined through %s", hive, entry.listen or entry.node_id.hex()[:12])
    # Behind a home router, data channels need the entry's STUN (and TURN) servers: ask
    # before linking to anyone else (an entry that offers none answers at once).
    await fetch_ice(hive.node, entry.node_id)
    others = [c.node_id for c in contacts if c.node_id != hive.node_id]
    targets = [entry.node_id, *others][: hive.config.max_peers]
    attempts = await _link_all(hive, targets, via=entry)
    try:
        await hive.dht.bootstrap([Contact(entry.node_id, entry.public_key, entry.listen or "mesh")])
    except RpcError as exc:
        logger.warning("%s: DHT bootstrap incomplete: %s", hive, exc)
    # The data channel replaces the WebSocket: free the entry's socket once it is up.
    hive.node.spawn(_retire_entry(hive, entry, attempts[entry.node_id]), name="retire entry")
    return entry


async def _retire_entry(hive: HiveNode, entry: Link, attempt: asyncio.Task[Link]) -> None:
    await asyncio.gather(attempt, return_exceptions=True)
    if hive.node.peers.rtc(entry.node_id) is not None:
        await hive.node.close_link(entry, "joined: data channel up")


async def _reach_entry(hive: HiveNode, urls: list[str]) -> tuple[Link, list[Contact]]:
    """The first join URL that links and answers a FindNode for our id (URLs are tried
    ENTRY_STAGGER_S apart, so a dead first entry costs no full timeout)."""
    tasks: dict[asyncio.Task[tuple[Link, list[Contact]]], str] = {}
    errors: list[str] = []
    queue = list(urls)
    won: tuple[Link, list[Contact]] | None = None
    try:
        while won is None and (queue or tasks):
            if queue:
                url = queue.pop(0)
                tasks[asyncio.ensure_future(_try_entry(hive, url))] = url
            done, _ = await asyncio.wait(tasks, timeout=ENTRY_STAGGER_S if queue else None,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                url = tasks.pop(task)
                try:
                    result = task.result()
                except (ConnectionError, HandshakeError) as exc:
                    errors.append(str(exc) if url in str(exc) else f"{url}: {exc}")
                    logger.info("%s: join through %s failed: %s", hive, url, exc)
                    continue
                if won is None:
                    won = result
                else:
                    await hive.node.close_link(result[0], "joined through another entry")
    finally:
        for task in tasks:
            task.cancel()
        for late in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(late, tuple):
                await hive.node.close_link(late[0], "joined through another entry")
    if won is None:
        raise JoinFailed("could not join the hive: " + "; ".join(errors or ["no join URL"])
                         + " (is a sentinel or a node with --listen running there? "
                         "'cadencia hive up' starts a hive on this machine)")
    return won


async def _try_entry(hive: HiveNode, url: str) -> tuple[Link, list[Contact]]:
    channel = await ws_connect(url, timeout=hive.config.handshake_timeout_s)
    link = await hive.node.attach(channel, kind="ws", mode="second")
    try:
        reply = await hive.node.request(link.node_id, FindNode(hive.node.next_rpc_id(),
                                                               hive.node_id))
    except PeerUnavailable:
        await hive.node.close_link(link, "no answer to FindNode")
        raise
    return link, list(reply.contacts) if isinstance(reply, Nodes) else []


async def _link_all(hive: HiveNode, targets: list[bytes],
                    via: Link) -> dict[bytes, asyncio.Task[Link]]:
    """Open data channels to `targets` at once; wait `join_peer_s` at most. The slow ones
    go on in the background and are skipped by DHT requests until they link. Returns
    each target's attempt."""
    attempts = {hive.node.spawn(hive.signaler.connect(t, via=via), name="join link",
                                expected=(ConnectionError, HandshakeError)): t
                for t in targets}
    done, slow = await asyncio.wait(attempts, timeout=hive.config.join_peer_s)
    for task in done:
        if task.exception() is not None:
            hive.unreachable.failed(attempts[task])
            logger.info("%s: no data channel to %s: %s", hive, attempts[task].hex()[:12],
                        task.exception())
    for task in slow:
        hive.unreachable.failed(attempts[task])
        logger.info("%s: %s has not linked within %g s; going on without it", hive,
                    attempts[task].hex()[:12], hive.config.join_peer_s)
    return {target: task for task, target in attempts.items()}
