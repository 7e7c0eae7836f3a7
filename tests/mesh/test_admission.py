"""Admission budgets: the pure policy (handshake pool, lanes, backoff) and a live listener
that drops squatters, evicts mute keys and refuses with one clear, typed error."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pytest

from hive_core.base.identity import Identity, node_id_of
from hive_core.mesh.admission import (
    Admission,
    AdmissionConfig,
    AdmissionConfigError,
    HandshakePool,
    Lane,
    decide,
)
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node, NodeConfig, Refused
from hive_core.mesh.peers import Unreachable
from hive_core.mesh.status import StatusFailed, fetch_status
from hive_core.mesh.wschannel import Busy, WsChannel, ws_connect
from hive_core.protocol import (
    Error,
    ErrorCode,
    FindNode,
    Hello,
    decode,
    encode,
    make_hello,
)

from .conftest import Hive, wait_for

CFG = AdmissionConfig(max_handshakes=4, max_handshakes_per_source=3, handshake_grace_s=1.0,
                      max_links=4, reserved_links=1, brief_links=1, evict_idle_s=2.0)


# -- the handshake pool -------------------------------------------------------------------


def test_a_source_at_its_cap_loses_its_oldest_handshake_past_the_grace() -> None:
    pool = HandshakePool(CFG)
    assert [pool.add(c, "flood", now=0.0) for c in ("a", "b", "c")] == [[], [], []]
    assert pool.add("d", "flood", now=0.5) == ["d"]  # all younger than the grace: newcomer out
    assert pool.add("e", "flood", now=1.5) == ["a"]  # the oldest, past the grace
    assert pool.add("honest", "other", now=1.6) == []
    assert "honest" in pool and "a" not in pool and len(pool) == 4


def test_a_full_pool_takes_its_room_from_the_biggest_source() -> None:
    pool = HandshakePool(CFG)
    for c in ("a", "b", "c"):
        pool.add(c, "flood", now=0.0)
    pool.add("x", "other", now=0.1)
    # Full and all young: the flood's newest goes, not a newcomer from a small source.
    assert pool.add("honest", "third", now=0.2) == ["c"]
    assert pool.from_source("flood") == 2 and "honest" in pool
    # Past the grace the biggest source's oldest goes.
    assert pool.add("late", "fourth", now=5.0) == ["a"]
    # Now every source holds one, all past the grace: the newcomer's own source gives way,
    # never the slow honest client of another.
    assert pool.add("again", "flood", now=10.0) == ["b"]
    assert "honest" in pool and "again" in pool
    assert pool.remove("x") and not pool.remove("x")


def test_each_source_has_a_token_bucket() -> None:
    pool = HandshakePool(AdmissionConfig(handshake_rate=2.0, handshake_burst=3))
    assert [pool.allow("s", 0.0) for _ in range(4)] == [True, True, True, False]
    assert pool.allow("other", 0.0)
    assert pool.allow("s", 0.5) and not pool.allow("s", 0.5)  # one token back after 0.5 s
    assert pool.throttled == 2


def test_config_limits_are_checked() -> None:
    with pytest.raises(AdmissionConfigError, match="reserved_links"):
        AdmissionConfig(max_links=4, reserved_links=4)
    with pytest.raises(AdmissionConfigError, match="per_source"):
        AdmissionConfig(max_handshakes=4, max_handshakes_per_source=5)
    with pytest.raises(AdmissionConfigError, match="idle_s"):
        AdmissionConfig(idle_s=0)


# -- lanes of authenticated links ---------------------------------------------------------


@dataclass
class FakeLink:
    lane: Lane
    since: float
    last_active: float | None
    source: str = "flood"


def test_known_keys_use_the_reserved_share_and_strangers_do_not() -> None:
    general = [FakeLink(Lane.GENERAL, 0.0, 9.9) for _ in range(3)]  # all spoke just now
    assert decide(CFG, True, general, now=10.0) == Admission(Lane.KNOWN)
    # A stranger finds the general share full and nothing idle: a brief slot, then refusal.
    assert decide(CFG, False, general, now=10.0) == Admission(Lane.BRIEF)
    refusal = decide(CFG, False, [*general, FakeLink(Lane.BRIEF, 9.0, 9.5)], now=10.0)
    assert isinstance(refusal, str) and "none idle" in refusal


def test_a_full_budget_evicts_mute_links_first_then_the_idlest() -> None:
    mute_old, mute_new = FakeLink(Lane.GENERAL, 1.0, None), FakeLink(Lane.GENERAL, 2.0, None)
    talker = FakeLink(Lane.GENERAL, 0.0, 9.0)
    assert decide(CFG, False, [talker, mute_new, mute_old], now=10.0) == Admission(
        Lane.GENERAL, mute_old)
    idle = FakeLink(Lane.GENERAL, 0.0, 5.0)
    busy = [FakeLink(Lane.GENERAL, 0.0, 9.5), idle, FakeLink(Lane.KNOWN, 0.0, 9.5),
            FakeLink(Lane.GENERAL, 0.0, 9.9)]
    assert decide(CFG, False, busy, now=10.0) == Admission(Lane.GENERAL, idle)
    # A known key may take a stranger's idle link when the whole budget is full.
    assert decide(CFG, True, busy, now=10.0) == Admission(Lane.KNOWN, idle)


def test_the_source_holding_the_most_links_gives_way_first() -> None:
    """A slow honest client (its first request not read yet: mute) is not the one evicted
    while a botnet host holds more links, even idle ones that spoke once."""
    honest = FakeLink(Lane.GENERAL, 1.0, None, source="127.0.0.1")
    flood = [FakeLink(Lane.GENERAL, 0.0, 3.0, source="10.0.0.9"),
             FakeLink(Lane.GENERAL, 0.5, 9.9, source="10.0.0.9")]
    assert decide(CFG, False, [honest, *flood], now=10.0) == Admission(Lane.GENERAL, flood[0])
    flood.append(FakeLink(Lane.GENERAL, 2.0, None, source="10.0.0.9"))  # mute goes first
    assert decide(CFG, False, [honest, *flood], now=10.0) == Admission(Lane.GENERAL, flood[2])


def test_unreachable_peers_back_off_doubling_and_are_forgotten_once_linked() -> None:
    u = Unreachable(first_s=1.0, max_s=4.0)
    assert [u.failed(b"p", now=0.0), u.failed(b"p", now=0.0), u.failed(b"p", now=0.0),
            u.failed(b"p", now=0.0)] == [1.0, 2.0, 4.0, 4.0]
    assert u.blocked(b"p", now=3.9) and not u.blocked(b"p", now=4.1)
    u.linked(b"p")
    assert not u.blocked(b"p", now=0.0) and u.failed(b"p", now=0.0) == 1.0


# -- on the wire --------------------------------------------------------------------------


async def test_an_error_instead_of_a_hello_is_a_typed_one_line_refusal() -> None:
    theirs, ours = memory_pair()
    node = Node(Identity.generate(), NodeConfig(handshake_timeout_s=5))
    await theirs.send(encode(Error(0, ErrorCode.OVERLOADED, "too many joiners\nsecond line")))
    with pytest.raises(Refused) as caught:
        await node.attach(ours, kind="ws", mode="second")
    assert caught.value.code is ErrorCode.OVERLOADED
    assert str(caught.value) == "refused: OVERLOADED: too many joiners?second line"
    assert "expected a Hello" not in str(caught.value)
    await node.close()


async def hello_in(url: str, me: Identity | None = None) -> tuple[WsChannel, bytes]:
    """Upgrade and read the listener's Hello; with `me`, answer it (authenticated)."""
    channel = await ws_connect(url)
    theirs = decode(await channel.recv())
    assert isinstance(theirs, Hello)
    listener = node_id_of(theirs.public_key)
    if me is not None:
        await channel.send(encode(make_hello(me, audience=listener)))
    return channel, listener


async def next_error(channel: WsChannel) -> Error:
    while True:
        msg = decode(await asyncio.wait_for(channel.recv(), 10))
        if isinstance(msg, Error):
            return msg


@pytest.mark.net
@pytest.mark.timeout(60)
async def test_squatters_are_dropped_oldest_first_and_at_the_deadline(hive: Hive) -> None:
    sentinel = hive.make(seed=3000, listen="127.0.0.1:0", admission=AdmissionConfig(
        max_handshakes=4, max_handshakes_per_source=2, handshake_grace_s=0.2, handshake_s=2.0))
    await asyncio.wait_for(sentinel.start(), 20)
    first, _ = await hello_in(sentinel.listen_url)  # upgraded, never says hello
    second, _ = await hello_in(sentinel.listen_url)
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    view = await fetch_status(sentinel.listen_url, timeout_s=5)  # takes the oldest one's place
    assert [n["id"] for n in view["nodes"]] == [sentinel.node_id.hex()]
    dropped = await next_error(first)
    assert (dropped.code, dropped.message) == (ErrorCode.OVERLOADED,
                                               "dropped: too many handshakes in progress")
    expired = await next_error(second)  # two seconds after it connected
    assert expired.code is ErrorCode.OVERLOADED
    assert "no Hello and first request within 2 s" in expired.message
    assert time.monotonic() - t0 < 3.5
    assert sentinel.listener is not None and len(sentinel.listener.server.handshakes) == 0
    await first.close()
    await second.close()


@pytest.mark.net
@pytest.mark.timeout(60)
async def test_a_key_that_never_speaks_is_never_admitted_and_a_full_budget_refuses_clearly(
    hive: Hive,
) -> None:
    sentinel = hive.make(seed=3001, listen="127.0.0.1:0", admission=AdmissionConfig(
        max_links=1, reserved_links=0, brief_links=0, evict_idle_s=30.0, handshake_s=3.0))
    await asyncio.wait_for(sentinel.start(), 20)
    url = sentinel.listen_url
    assert sentinel.listener is not None
    mute, _ = await hello_in(url, Identity.generate())  # proves its key, then says nothing
    await asyncio.sleep(0.3)
    assert not sentinel.listener.links  # still a handshake, not an admitted link
    view = await fetch_status(url, timeout_s=5)  # takes no room from anyone
    assert view["nodes"]
    dropped = await next_error(mute)  # at the handshake deadline
    assert "no Hello and first request within 3 s" in dropped.message
    await wait_for(lambda: not sentinel.listener.links, 5, "the status client gone")
    # A key that speaks holds the only link: the next client is refused, and told why.
    talker, listener = await hello_in(url, Identity.generate())
    await talker.send(encode(FindNode(1, bytes(20))))
    await wait_for(lambda: len(sentinel.listener.links) == 1, 5, "the talker admitted")
    with pytest.raises(StatusFailed) as caught:
        await fetch_status(url, timeout_s=5)
    message = str(caught.value)
    assert "refused: OVERLOADED: 1 links open and none idle for 30 s" in message, message
    assert "expected a Hello" not in message and "\n" not in message
    assert sentinel.listener.stats.refused == 1 and listener == sentinel.node_id
    await talker.close()
    await mute.close()


@pytest.mark.net
@pytest.mark.timeout(60)
async def test_a_full_budget_evicts_the_link_idle_longest(hive: Hive) -> None:
    sentinel = hive.make(seed=3003, listen="127.0.0.1:0", admission=AdmissionConfig(
        max_links=1, reserved_links=0, brief_links=0, evict_idle_s=0.3))
    await asyncio.wait_for(sentinel.start(), 20)
    assert sentinel.listener is not None
    idle, _ = await hello_in(sentinel.listen_url, Identity.generate())
    await idle.send(encode(FindNode(1, bytes(20))))  # spoke once, then idles
    await wait_for(lambda: len(sentinel.listener.links) == 1, 5, "the first key admitted")
    await asyncio.sleep(0.5)
    assert (await fetch_status(sentinel.listen_url, timeout_s=5))["nodes"]
    evicted = await next_error(idle)
    assert (evicted.code, evicted.message) == (ErrorCode.OVERLOADED,
                                               "evicted: idle while the node is full")
    assert sentinel.listener.stats.evicted == 1
    await idle.close()


@pytest.mark.net
@pytest.mark.timeout(60)
async def test_a_throttled_address_is_told_the_node_is_busy_then_let_in(hive: Hive) -> None:
    sentinel = hive.make(seed=3002, listen="127.0.0.1:0", admission=AdmissionConfig(
        handshake_rate=2.0, handshake_burst=1))
    await asyncio.wait_for(sentinel.start(), 20)
    await fetch_status(sentinel.listen_url, timeout_s=5)  # the one token
    with pytest.raises(Busy, match=r"refused: the node is busy \(HTTP 503\)"):
        await ws_connect(sentinel.listen_url, timeout=0.2)
    # With time to wait, the client retries and gets in once a token is back.
    view = await fetch_status(sentinel.listen_url, timeout_s=5)
    assert view["nodes"]
    assert sentinel.listener is not None and sentinel.listener.server.handshakes.throttled >= 1
