"""Asking through a relay (`--relay`): a throwaway identity whose only links are tunnels.

`RelayedNode` is the `Node` a `HiveClient` sends through: its key is generated for this
client and never published, and each of its links is a tunnel through one relay peer
(`hive_core.exec.relay`). Shard servers see stage requests, sealed payloads and receipts
from that key over the relay's link; the relay sees the asker and sealed bytes. Receipts are
signed by the throwaway key, so they are paid from its own start (the asking credit every
identity has, `hive_core.economy.ledger`), never from the asker's balance: funding it from
the asker would write the link between the two keys into the public ledger.

A relay that stops forwarding leaves every tunnel silent: the throwaway node's heartbeat
closes them after `dead_after_s`, requests in flight fail at once, and `explain` turns the
session's failure into one that names the relay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from hive_core.base.identity import Identity
from hive_core.base.ids import ID_BYTES
from hive_core.events import Consumer
from hive_core.exec.board import VerdictBoard
from hive_core.exec.client import ClientConfig, HiveClient
from hive_core.exec.errors import ExecError
from hive_core.exec.join import (
    PING_TIMEOUT_S,
    AskerPart,
    Say,
    model_name,
    planner_mode,
    published_health,
    published_roles,
)
from hive_core.exec.relay import RelayError, relaying
from hive_core.exec.remote import discover, find_span_owners, link_nodes, route, weights_of
from hive_core.exec.replay import shared_replayer
from hive_core.exec.tunnel import TUNNEL_KIND
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import Node, NodeConfig
from hive_core.mesh.peers import Link
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.protocol.handshake import HandshakeError
from hive_core.trust import ReputationBook, VerdictStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunnelConfig:
    """How the throwaway node watches its tunnels."""

    ping_interval_s: float = 1.0  # a probe through each tunnel this often
    dead_after_s: float = 6.0  # a tunnel silent this long is closed (the relay dropped it)
    open_timeout_s: float = 10.0  # opening one tunnel (the relay asks the target)

    def __post_init__(self) -> None:
        if not 0 < self.ping_interval_s < self.dead_after_s or self.open_timeout_s <= 0:
            raise ValueError("tunnel timings need 0 < ping interval < dead-after, and a "
                             "positive open timeout")


def parse_relay(text: str) -> bytes | None:
    """`--relay`'s value: a node id in hex, or "auto" (None: choose one)."""
    if text == "auto":
        return None
    try:
        node_id = bytes.fromhex(text)
    except ValueError:
        node_id = b""
    if len(node_id) != ID_BYTES:
        raise RelayError(f"--relay takes a node id ({2 * ID_BYTES} hex digits) or 'auto', "
                         f"got {text[:48]!r}")
    return node_id


def relay_candidates(node: Node, avoid: Collection[bytes], rng: random.Random) -> list[bytes]:
    """Linked peers that are not in `avoid` (the model's servers), in a random order: the
    relay must not be a node that sees this asker's content."""
    peers = sorted({link.node_id for link in node.peers.all()} - set(avoid) - {node.node_id})
    rng.shuffle(peers)
    return peers


class RelayedNode:
    """A throwaway identity linked to targets only through `relay` (reached by `via`)."""

    def __init__(self, via: Node, relay: bytes, config: TunnelConfig | None = None) -> None:
        self.via = via
        self.relay = relay
        self.config = config or TunnelConfig()
        self.node = Node(Identity.generate(), NodeConfig(
            ping_interval_s=self.config.ping_interval_s, dead_after_s=self.config.dead_after_s))
        self.failure: str | None = None  # why the relay is judged gone (every tunnel died)
        self._closing = False
        self._heartbeat: asyncio.Task[None] | None = None
        self.node.on_link_lost.append(self._lost)

    @property
    def relay_hex(self) -> str:
        return self.relay.hex()[:12]

    async def open(self, targets: Sequence[bytes]) -> list[bytes]:
        """Tunnels to `targets` (at once); the ones that opened. RelayError if none did."""
        results = await asyncio.gather(*(self._open_one(t) for t in targets),
                                       return_exceptions=True)
        opened = [t for t, r in zip(targets, results, strict=True) if r is None]
        errors = [r for r in results if isinstance(r, BaseException)]
        for err in errors:
            if not isinstance(err, (RelayError, HandshakeError, TimeoutError, ConnectionError)):
                raise err
        if targets and not opened:
            first = errors[0] if errors else None
            raise RelayError(f"no tunnel through relay {self.relay_hex} opened: {first}")
        if self._heartbeat is None:
            self._heartbeat = self.node.spawn(self.node.heartbeat(), name="tunnel heartbeat")
        return opened

    async def _open_one(self, target: bytes) -> None:
        cfg = self.config
        channel = await relaying(self.via).open_tunnel(self.relay, target, self.node.identity,
                                                       cfg.open_timeout_s)
        try:
            await asyncio.wait_for(self.node.attach(channel, kind=TUNNEL_KIND, expect=target,
                                                    mode="both"), cfg.open_timeout_s)
        except BaseException:
            await channel.close("handshake failed")
            raise

    async def rtts(self, targets: Sequence[bytes], timeout_s: float) -> dict[bytes, float]:
        """Round trips to `targets` through the relay (what each hop costs): the tunnel's ping
        average, else one ping now; unanswered: left out."""
        async def one(target: bytes) -> None:
            link = self.node.peers.best(target)
            if link is not None and link.rtt_ms is None:
                try:
                    await asyncio.wait_for(self.node.ping(link), timeout_s)
                except (TimeoutError, ConnectionError):
                    pass

        await asyncio.gather(*(one(t) for t in targets))
        return {t: lk.rtt_ms for t in targets
                if (lk := self.node.peers.best(t)) is not None and lk.rtt_ms is not None}

    def _lost(self, link: Link) -> None:
        if not self._closing and not self.node.peers.all() and self.failure is None:
            self.failure = (f"relay {self.relay_hex} stopped forwarding: every tunnel through "
                            f"it went silent or closed (last: {link.node_id.hex()[:12]})")
            logger.warning("%s", self.failure)

    def explain(self, exc: BaseException) -> BaseException:
        """`exc`, or a RelayError naming the relay when the relay is what failed."""
        if self.failure is not None:
            return RelayError(f"{self.failure}; the ask failed: {exc}")
        return exc

    async def close(self) -> None:
        self._closing = True
        await self.node.close()


MAX_RELAY_TRIES = 4  # relays tried in turn by --relay auto before giving up


async def connect_relayed(
    hive: HiveNode, file: GGUFModelFile, asker: AskerPart, *, relay: bytes | None,
    replicas: int, config: ClientConfig | None = None, on_event: Consumer | None = None,
    timeout_s: float, own_part: bool = False, say: Say = lambda _m: None,
    reputation: ReputationBook | None = None, data_dir: Path | None = None,
    tunnels: TunnelConfig | None = None,
) -> tuple[HiveClient, RelayedNode]:
    """Like `join.connect`, but the client sends through tunnels via `relay` (None: a linked
    peer that serves none of the model's layers, drawn at random). The relay is left out of
    the route. Close the returned `RelayedNode` after the client."""
    config = config or ClientConfig()
    if (config.local_layers, config.local_tail_layers) != (asker.local_layers, asker.tail_layers):
        raise ExecError("the client's local layers differ from the asker's")
    if reputation is None:
        reputation = ReputationBook(store=VerdictStore.in_dir(data_dir) if data_dir else None)
    if reputation.replayer is None:
        reputation.replayer = shared_replayer(file)
    name, cfg = model_name(file.path), file.config
    owners = await find_span_owners(hive, name, cfg.n_layers)
    if relay is None:
        candidates = relay_candidates(hive.node, owners, random.SystemRandom())
        if not candidates:
            raise RelayError("no relay: every linked peer serves this model's layers "
                             "(name one with --relay NODE_ID)")
    else:
        await link_nodes(hive, [relay], timeout_s)
        candidates = [relay]
    last: BaseException | None = None
    for cand in candidates[:MAX_RELAY_TRIES]:
        say(f"opening tunnels to {len(owners)} servers through relay {cand.hex()[:12]} ...")
        relayed = RelayedNode(hive.node, cand, tunnels)
        try:
            await relayed.open([o for o in owners if o != cand])
            break
        except RelayError as exc:
            await relayed.close()
            say(str(exc))
            last = exc
    else:
        raise RelayError(f"no relay would carry this ask: {last}")
    try:
        client = await _route(hive, file, asker, relayed, replicas=replicas, config=config,
                              on_event=on_event, timeout_s=timeout_s, own_part=own_part, say=say,
                              reputation=reputation)
    except BaseException:
        await relayed.close()
        raise
    return client, relayed


async def _route(hive: HiveNode, file: GGUFModelFile, asker: AskerPart, relayed: RelayedNode,
                 *, replicas: int, config: ClientConfig, on_event: Consumer | None,
                 timeout_s: float, own_part: bool, say: Say,
                 reputation: ReputationBook) -> HiveClient:
    infos = await discover(relayed.node, timeout=timeout_s)
    say(f"{len(infos)} shard servers answered through the relay")
    rtts = await relayed.rtts(list(infos), min(timeout_s, PING_TIMEOUT_S))  # via the relay
    health, roles = await asyncio.gather(published_health(hive, list(infos)),
                                         published_roles(hive, list(infos)))
    exclude = {relayed.relay} | await VerdictBoard(hive, reputation).review(infos)
    exclude |= {n for n in infos if reputation.excluded(n)}
    n, planner = file.config.n_layers, planner_mode()
    plan = route(infos, file.config, model_name(file.path), replicas, rtts,
                 first_layer=asker.local_layers, prefer=asker.weights,
                 last_layer=n - asker.tail_layers, salt=os.urandom(32), exclude=exclude,
                 health=health, roles=roles, replan=planner != "spans",
                 split=planner != "whole")
    say("route: " + ", ".join(
        f"layers {ps.stage.start}-{ps.stage.end} on {' '.join(x.hex()[:8] for x in ps.nodes)}"
        for ps in plan.stages))
    spares = [s for s in infos if s not in plan.nodes and s not in exclude]
    client = HiveClient(relayed.node, asker.executor, plan, config, spares=spares,
                        on_event=on_event, weights=weights_of(infos), pool=asker.pool,
                        own_pool=own_part, reputation=reputation, health=health)
    VerdictBoard(hive, reputation).attach(client)
    return client
