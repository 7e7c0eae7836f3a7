"""Asking through a relay: serving nodes never see the asker's id or key, the relay never
sees content, a relay that tampers or drops is found out, and receipts still pay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hive_core.exec import ClientConfig, ExecError, generate_hive
from hive_core.exec.client import HiveClient
from hive_core.exec.hive import TapChannel, build_hive, identity
from hive_core.exec.relay import RelayConfig, RelayError, Relaying, relaying
from hive_core.exec.relayed import RelayedNode, TunnelConfig, parse_relay
from hive_core.exec.tunnel import TunnelChannel
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node
from hive_core.model.sampling import Sampler
from hive_core.protocol import decode
from hive_core.protocol.tunnel import TunnelFrame, TunnelOpened

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 8
CFG = ClientConfig(hedge_floor_s=60.0, request_timeout_s=20.0)
FAST = TunnelConfig(ping_interval_s=0.3, dead_after_s=1.5, open_timeout_s=5.0)


class Tap(TapChannel):
    """Wraps a channel end and records every frame it receives."""

    def __init__(self, inner: Any, log: list[bytes]) -> None:
        super().__init__(inner, b"", lambda _node, data: log.append(data))


class Slow(Tap):
    """A channel end whose sends take 10 ms each (a slow link)."""

    async def send(self, data: bytes) -> None:
        await asyncio.sleep(0.01)
        await self.inner.send(data)


async def link(a: Node, b: Node, a_log: list[bytes] | None = None,
               b_log: list[bytes] | None = None) -> None:
    ca: Any
    cb: Any
    ca, cb = memory_pair()
    if a_log is not None:
        ca = Tap(ca, a_log)
    if b_log is not None:
        cb = Tap(cb, b_log)
    await asyncio.gather(a.attach(ca, kind="memory", expect=b.node_id),
                         b.attach(cb, kind="memory", expect=a.node_id))


class Setup:
    """An in-process hive whose servers also end tunnels, and a relay linked to all."""

    def __init__(self, hive: Any, relay: Node, seen: list[bytes], relay_seen: list[bytes]) -> None:
        self.hive, self.relay, self.seen, self.relay_seen = hive, relay, seen, relay_seen

    async def relayed_client(self, tunnels: TunnelConfig = FAST) -> tuple[HiveClient, RelayedNode]:
        relayed = RelayedNode(self.hive.asker, self.relay.node_id, tunnels)
        await relayed.open(self.hive.node_ids)
        base = self.hive.client
        client = HiveClient(relayed.node, base.local, base.plan, CFG, weights=base.weights,
                            health=base.health, replayer=base.reputation.replayer)
        return client, relayed

    async def close(self) -> None:
        await self.relay.close()
        await self.hive.close()


async def setup(tiny_gguf: Any, tiny_file: Any, monkeypatch: pytest.MonkeyPatch,
                relay_service: type[Relaying] = Relaying) -> Setup:
    seen: list[bytes] = []  # every frame any server receives, on any link or out of a tunnel
    opened = TunnelChannel.recv

    async def recv(self: TunnelChannel) -> bytes:
        data = await opened(self)
        if not self.opener:  # a server's end: what it reads out of the tunnel counts too
            seen.append(data)
        return data

    monkeypatch.setattr(TunnelChannel, "recv", recv)
    relay_seen: list[bytes] = []  # every frame the relay receives
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=CFG,
                            tap=lambda _node, frame: seen.append(frame))
    for server in hive.servers:
        relaying(server.node).accepts = True  # ends tunnels, relays none
    relay = Node(identity("relay"))
    service = relay_service(relay)
    service.relays = True
    await link(relay, hive.asker, a_log=relay_seen)
    for server in hive.servers:
        await link(relay, server.node, a_log=relay_seen, b_log=seen)
    return Setup(hive, relay, seen, relay_seen)


async def ask(client: HiveClient) -> tuple[list[int], Any]:
    s = client.new_session()
    g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64,
                                             sampler=Sampler(1.0, seed=3)), 60)
    await asyncio.wait_for(s.finish(), 60)
    return g.new_ids, s


async def test_serving_nodes_never_see_who_asked(tiny_gguf, tiny_file, monkeypatch) -> None:
    """Adversary: a curious serving node that records every byte it receives during a session
    and searches them for the asker's node id and public key. Through a relay it finds
    neither, while the answer is the unrelayed one and its receipts still reach it."""
    env = await setup(tiny_gguf, tiny_file, monkeypatch)
    asker = env.hive.asker.identity
    secrets = (asker.node_id, asker.public_key)
    try:
        direct_ids, direct = await ask(env.hive.client)
        # Control: asked directly, the servers do learn who asked (the receipts name the key).
        assert any(k in frame for frame in env.seen for k in secrets)
        assert any(direct.session_id in frame for frame in env.seen)

        client, relayed = await env.relayed_client()
        env.seen.clear()
        env.relay_seen.clear()
        try:
            ids, s = await ask(client)
        finally:
            client.close()
        assert ids == direct_ids
        assert s.verified
        assert env.seen, "the servers received the relayed session"
        assert not [f for f in env.seen if any(k in f for k in secrets)]
        # The relay sees who asked, but only sealed bytes: not even the session id that
        # every stage request carries in clear inside the tunnel.
        assert any(s.session_id in frame for frame in env.seen)
        assert not [f for f in env.relay_seen if s.session_id in f]
        assert {type(decode(f)).__name__ for f in env.relay_seen} <= {
            "TunnelOpened", "TunnelFrame", "TunnelClose", "Pong", "Ping"}
        # Receipts pay the servers, signed by the throwaway key the tunnels carried.
        eph = relayed.node.node_id
        for _ in range(100):  # they travel through the relay after `finish` sent them
            paid = [r for srv in env.hive.servers for r in srv.receipts if r.client_id == eph]
            if len({r.worker_id for r in paid}) == len(env.hive.servers):
                break
            await asyncio.sleep(0.05)
        assert {r.worker_id for r in paid} == set(env.hive.node_ids)
        assert all(r.session_id == s.session_id for r in paid)
        await relayed.close()
    finally:
        await env.close()


class Tampering(Relaying):
    """A relay that flips one bit of the first hidden state it forwards (an active relay)."""

    flipped = False

    def _on_frame(self, peer: bytes, msg: TunnelFrame) -> None:
        if not self.flipped and len(msg.sealed) > 1000:  # a stage request's sealed rows
            self.flipped = True
            sealed = bytearray(msg.sealed)
            sealed[len(sealed) // 2] ^= 0x01
            msg = TunnelFrame(msg.circuit, bytes(sealed))
        super()._on_frame(peer, msg)


async def test_a_relay_that_alters_a_frame_is_detected(tiny_gguf, tiny_file, monkeypatch) -> None:
    """Adversary: the relay changes a hidden state it forwards. The server refuses the frame
    and closes the tunnel; the asker fails over to another server through a fresh path, and
    the answer is still the honest one: the altered bytes were never computed on."""
    env = await setup(tiny_gguf, tiny_file, monkeypatch, Tampering)
    try:
        direct_ids, _ = await ask(env.hive.client)
        client, relayed = await env.relayed_client()
        try:
            ids, s = await ask(client)
        finally:
            client.close()
        assert ids == direct_ids
        assert s.failovers >= 1
        tampered = [ch for ch in _closed if ch.tampered]
        assert tampered, "the altered frame was refused by a tunnel end"
        assert {ch.relay for ch in tampered} == {env.relay.node_id}
        assert not any(ch.opener for ch in tampered)  # the server refused the request
        await relayed.close()
    finally:
        await env.close()


_closed: list[TunnelChannel] = []  # tunnel ends seen closing (they leave the route table)


def _channels(service: Relaying) -> list[TunnelChannel]:
    return [r for r in service._routes.values() if isinstance(r, TunnelChannel)]


@pytest.fixture(autouse=True)
def _track_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    _closed.clear()
    ended = TunnelChannel.ended

    def track(self: TunnelChannel, reason: str) -> None:
        _closed.append(self)
        ended(self, reason)

    monkeypatch.setattr(TunnelChannel, "ended", track)


class Dropping(Relaying):
    """A relay that stops forwarding anything after a while (a silent, selective relay)."""

    forward = 30

    def _on_frame(self, peer: bytes, msg: TunnelFrame) -> None:
        self.forward -= 1
        if self.forward > 0:
            super()._on_frame(peer, msg)


async def test_a_relay_that_drops_traffic_fails_the_ask_clearly_and_soon(tiny_gguf, tiny_file, monkeypatch) -> None:
    """Adversary: the relay goes silent mid-session. The tunnels' heartbeat closes them,
    requests in flight fail at once, and the error names the relay, within seconds."""
    env = await setup(tiny_gguf, tiny_file, monkeypatch, Dropping)
    try:
        client, relayed = await env.relayed_client()
        t0 = time.monotonic()
        try:
            with pytest.raises(ExecError) as caught:
                await ask(client)
        finally:
            client.close()
        took = time.monotonic() - t0
        assert took < 10 * FAST.dead_after_s
        err = relayed.explain(caught.value)
        assert isinstance(err, RelayError)
        assert f"relay {env.relay.node_id.hex()[:12]} stopped forwarding" in str(err)
        await relayed.close()
    finally:
        await env.close()


async def test_tunnels_are_refused_clearly(tiny_gguf, tiny_file, monkeypatch) -> None:
    """A node that does not relay, a target the relay cannot reach: one-line RelayErrors."""
    env = await setup(tiny_gguf, tiny_file, monkeypatch)
    try:
        opener = identity("throwaway")
        plain = env.hive.node_ids[0]  # a server: it ends tunnels but relays none
        with pytest.raises(RelayError, match="does not relay"):
            await relaying(env.hive.asker).open_tunnel(plain, env.hive.node_ids[1], opener, 5.0)
        with pytest.raises(RelayError, match="no link to"):
            await relaying(env.hive.asker).open_tunnel(env.relay.node_id, identity("x").node_id,
                                                       opener, 5.0)
        bare = Node(identity("bare"))  # no tunnel service at all: the mesh says unsupported
        await link(bare, env.hive.asker)
        with pytest.raises(RelayError, match="refused: RelayOpen|refused: TunnelOpen"):
            await relaying(env.hive.asker).open_tunnel(bare.node_id, plain, opener, 5.0)
        await bare.close()
        assert not _channels(relaying(env.hive.asker))
    finally:
        await env.close()


def test_relay_flag_values() -> None:
    assert parse_relay("auto") is None
    assert parse_relay("ab" * 20) == bytes.fromhex("ab" * 20)
    for bad in ("", "xyz", "ab" * 19, "ab" * 21):
        with pytest.raises(RelayError, match="node id"):
            parse_relay(bad)


async def test_what_is_sent_before_a_close_still_arrives() -> None:
    """The asker's last frames (its receipts) are queued at the relay when it closes the
    tunnel: the relay passes them on before it passes the close on."""
    from hive_core.protocol.inference import ReceiptMsg

    asker, relay, target = (Node(identity(n)) for n in ("a", "r", "t"))
    relaying(relay).relays = True
    relaying(target).accepts = True
    got: list[bytes] = []
    target.on(ReceiptMsg, lambda _peer, msg: got.append(msg.receipt))
    await link(asker, relay)
    ca: Any
    ca, cb = memory_pair()
    ca = Slow(ca, [])  # the relay's sends to the target wait: frames queue at the relay
    await asyncio.gather(relay.attach(ca, kind="memory", expect=target.node_id),
                         target.attach(cb, kind="memory", expect=relay.node_id))
    relayed = RelayedNode(asker, relay.node_id, FAST)
    try:
        assert await relayed.open([target.node_id]) == [target.node_id]
        for k in range(20):
            await relayed.node.send(target.node_id, ReceiptMsg(bytes([k]) * 100))
        await relayed.close()
        for _ in range(100):
            if len(got) == 20:
                break
            await asyncio.sleep(0.02)
        assert got == [bytes([k]) * 100 for k in range(20)]
        for _ in range(100):  # then the close reaches the target and the relay forgets it
            if not relaying(relay).circuits and target.peers.best(relayed.node.node_id) is None:
                break
            await asyncio.sleep(0.02)
        assert relaying(relay).circuits == 0
        assert target.peers.best(relayed.node.node_id) is None
    finally:
        for n in (asker, relay, target):
            await n.close()


class KeySwapping(Relaying):
    """A relay that answers with its own key for the target's, to read what the asker seals
    (a man in the middle)."""

    async def _answer(self, peer: bytes, reply: TunnelOpened) -> None:
        if reply.ok:
            reply = TunnelOpened(reply.rpc_id, reply.code, "", self.node.identity.public_key)
        await super()._answer(peer, reply)


async def three_nodes(relay_service: type[Relaying] = Relaying,
                      config: RelayConfig | None = None) -> tuple[Node, Node, Node]:
    asker, relay, target = (Node(identity(n)) for n in ("a", "r", "t"))
    relay_service(relay, config).relays = True
    relaying(target).accepts = True
    await link(asker, relay)
    await link(relay, target)
    return asker, relay, target


async def test_a_relay_cannot_put_its_own_key_in_the_middle() -> None:
    """Adversary: the relay names its own key as the target's. The asker checks that the key
    hashes to the target's node id and refuses the tunnel before sealing anything with it."""
    asker, relay, target = await three_nodes(KeySwapping)
    try:
        with pytest.raises(RelayError, match="not .* key|a key that is not"):
            await relaying(asker).open_tunnel(relay.node_id, target.node_id,
                                              identity("throwaway"), 5.0)
        assert not _channels(relaying(asker))
    finally:
        for n in (asker, relay, target):
            await n.close()


async def test_a_relay_bounds_the_circuits_one_asker_holds() -> None:
    asker, relay, target = await three_nodes(config=RelayConfig(max_per_peer=1))
    with pytest.raises(ValueError, match="already has its tunnel service"):
        Relaying(relay)
    try:
        opener = identity("throwaway")
        first = await relaying(asker).open_tunnel(relay.node_id, target.node_id, opener, 5.0)
        with pytest.raises(RelayError, match="as many circuits here as one node may"):
            await relaying(asker).open_tunnel(relay.node_id, target.node_id,
                                              identity("another"), 5.0)
        await first.close()
        for _ in range(100):
            if not relaying(relay).circuits:
                break
            await asyncio.sleep(0.02)
        assert relaying(relay).circuits == 0  # closed: room for the next one
        again = await relaying(asker).open_tunnel(relay.node_id, target.node_id,
                                                  identity("another"), 5.0)
        await again.close()
    finally:
        for n in (asker, relay, target):
            await n.close()
