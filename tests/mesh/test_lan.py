"""Direct LAN links: near peers get a WebSocket beside the data channel, traffic prefers it,
and the data channel carries on when it closes; far or mismatched addresses are never used."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.lan import near, near_url, same_host
from hive_core.mesh.node import NodeConfig
from hive_core.protocol import FindNode

from .conftest import Hive, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("10.1.2.3", True),
    ("192.168.0.7", True), ("172.16.5.5", True), ("169.254.1.1", True), ("fd00::1", True),
    ("8.8.8.8", False), ("2001:4860::1", False), ("example.org", False), ("", False),
])
def test_near_hosts_are_this_machine_or_a_private_network(host: str, expected: bool) -> None:
    assert near(host) is expected


def test_near_url_refuses_what_is_not_a_ws_url() -> None:
    assert near_url("ws://127.0.0.1:7700")
    assert not near_url("ws://93.184.216.34:7700")
    assert not near_url("http://127.0.0.1:7700")
    assert not near_url("")


@pytest.mark.parametrize(("listen", "packets", "expected"), [
    ("127.0.0.1", "127.0.0.1", True), ("localhost", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", True), ("10.0.0.5", "10.0.0.5", True),
    ("10.0.0.5", "10.0.0.6", False), ("192.168.1.1", "203.0.113.7", False),
    ("10.0.0.5", None, False), ("example.org", "10.0.0.5", False),
])
def test_a_listen_address_counts_only_where_the_packets_come_from(
        listen: str, packets: str | None, expected: bool) -> None:
    assert same_host(listen, packets) is expected


def test_lan_links_can_be_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENCIA_LAN_LINKS", "0")
    assert NodeConfig().lan_links is False
    monkeypatch.setenv("CADENCIA_LAN_LINKS", "1")
    assert NodeConfig().lan_links is True


def direct(a: HiveNode, b: HiveNode) -> bool:
    link = a.node.peers.best(b.node_id)
    return link is not None and link.kind == "ws" and link.lan


async def test_near_peers_talk_over_a_direct_link_and_fall_back_to_the_data_channel(
        hive: Hive) -> None:
    sentinel = await hive.sentinel()
    nodes = await hive.join([sentinel.listen_url], 2)
    asker = (await hive.join([sentinel.listen_url], 1, first_seed=50, listen=False))[0]
    everyone = [sentinel, *nodes, asker]
    pairs = [(a, b) for a in everyone for b in everyone if a is not b]
    # Both ends use the one direct link of each pair (the asker, which does not listen, dials).
    await wait_for(lambda: all(direct(a, b) for a, b in pairs if b is not sentinel
                               and a is not sentinel), 30, "direct links between the nodes")
    dialled = nodes[0] if nodes[0].node_id < nodes[1].node_id else nodes[1]
    assert dialled.lan.dialled >= 1 and asker.lan.dialled >= 2
    # A request rides the direct link: the WebSocket's frame count moves, the data channel's not.
    ws = asker.node.peers.best(nodes[0].node_id)
    rtc = asker.node.peers.rtc(nodes[0].node_id)
    assert ws is not None and rtc is not None
    before_ws, before_rtc = ws.frames_in, rtc.frames_in
    await asker.node.request(nodes[0].node_id, FindNode(asker.node.next_rpc_id(), asker.node_id))
    assert ws.frames_in == before_ws + 1 and rtc.frames_in == before_rtc
    # The direct link goes: the data channel carries the next request.
    await asker.node.close_link(ws, "test: direct link closed")
    await wait_for(lambda: asker.node.peers.best(nodes[0].node_id) is rtc, 10,
                   "the data channel as the best link")
    await asker.node.request(nodes[0].node_id, FindNode(asker.node.next_rpc_id(), asker.node_id))
    assert rtc.frames_in >= before_rtc + 1
    # The next upkeep dials it again.
    asker.lan.consider_all()
    await wait_for(lambda: direct(asker, nodes[0]), 15, "the direct link dialled again")


async def test_no_direct_links_when_turned_off(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    nodes = await hive.join([sentinel.listen_url], 2, lan_links=False)
    await wait_for(lambda: all(n.node.peers.rtc(o.node_id) is not None
                               for n in nodes for o in [sentinel, *nodes] if o is not n), 30,
                   "data channels")
    await asyncio.sleep(0.5)
    assert all(lk.kind == "rtc" for n in nodes for lk in n.node.peers.all())
    assert all(n.lan.dialled == 0 for n in nodes)


async def test_a_peer_cannot_send_this_node_to_another_host(hive: Hive) -> None:
    """A data channel from 127.0.0.1 naming a private address of another host as its listen
    URL is not dialled: the direct link goes only where the peer's packets come from."""
    sentinel = await hive.sentinel()
    a, b = sorted(await hive.join([sentinel.listen_url], 2, lan_links=False),
                  key=lambda n: n.node_id)  # both listen: a, the smaller id, would dial
    await wait_for(lambda: a.node.peers.rtc(b.node_id) is not None, 30, "a data channel")
    link = a.node.peers.rtc(b.node_id)
    assert link is not None and link.rtc is not None and link.rtc.remote_host is not None
    a.config = replace(a.config, lan_links=True)
    link.listen = "ws://192.168.77.1:80"  # what a peer could claim in its Hello
    assert not a.lan.should_dial(link)
    link.listen = b.listen_url  # where it listens and its packets come from: dialled
    assert a.lan.should_dial(link)


async def test_an_address_where_another_key_listens_is_not_taken_for_the_peer(hive: Hive) -> None:
    sentinel = await hive.sentinel()
    a, b = await hive.join([sentinel.listen_url], 2, lan_links=False)
    # a is told b listens at the sentinel's address: the key that answers there is not b's.
    await a.lan._dial(b.node_id, sentinel.listen_url)
    best = a.node.peers.best(b.node_id)
    assert best is None or best.kind == "rtc"
    assert a.lan.dialled == 0
    assert sentinel.listen_url in a.lan._failed
