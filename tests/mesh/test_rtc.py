"""aiortc data channels on loopback: connect, limits, backpressure, failures, candidates, tuning."""

from __future__ import annotations

import asyncio

import pytest

from hive_core.mesh.channel import ChannelClosed
from hive_core.mesh.rtc import (
    MAX_MESSAGE_BYTES,
    BadDescription,
    ConnectFailed,
    MessageTooLarge,
    RTCChannel,
    RTCOptions,
    RTCPeer,
    connect_pair,
)
from hive_core.mesh.sctptuning import SctpTuning, TuningError, tuning_of

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]


async def test_pair_exchanges_messages_and_is_tuned() -> None:
    a, b, ca, cb = await connect_pair()
    try:
        assert "127.0.0.1" in a._pc.localDescription.sdp
        for size in (1, 1000, MAX_MESSAGE_BYTES):
            await ca.send(bytes([size % 251]) * size)
            assert await asyncio.wait_for(cb.recv(), 5) == bytes([size % 251]) * size
        with pytest.raises(MessageTooLarge, match="chunk it first"):
            await ca.send(bytes(MAX_MESSAGE_BYTES + 1))
        assert tuning_of(a._pc.sctp) == SctpTuning()
        assert a._pc.sctp._rto <= SctpTuning().rto_initial_s
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_backpressure_bounds_the_send_queue() -> None:
    opts = RTCOptions.loopback(high_water_bytes=256 << 10, low_water_bytes=64 << 10)
    a, b, ca, cb = await connect_pair(opts, opts)
    try:
        peak = 0
        received = 0
        total = 40

        async def drain() -> None:
            nonlocal received
            while received < total:
                await cb.recv()
                received += 1

        reader = asyncio.ensure_future(drain())
        for _ in range(total):
            await ca.send(bytes(100_000))
            peak = max(peak, ca.buffered_amount)
        await asyncio.wait_for(reader, 30)
        # send() waits at the high-water mark: at most one message beyond it is queued.
        assert peak <= opts.high_water_bytes + 100_000
        assert ca.sent_messages == total and received == total
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_closing_one_end_is_seen_by_the_other() -> None:
    a, b, _, cb = await connect_pair()
    await a.close()
    with pytest.raises(ChannelClosed):
        await asyncio.wait_for(cb.recv(), 10)
    await asyncio.wait_for(b.wait_closed(), 15)
    assert not b.alive
    with pytest.raises(ChannelClosed):
        await cb.send(b"late")
    await b.close()


async def test_no_candidate_fails_within_the_connect_timeout_instead_of_hanging() -> None:
    # Like a namespace whose only interface is loopback, without the loopback option.
    none = RTCOptions(host_addresses=(), connect_timeout_s=1.0)
    with pytest.raises(ConnectFailed):  # raised by the 1 s option; wait_for only guards a hang
        await asyncio.wait_for(connect_pair(none, none), 20)


def test_loopback_candidate_option_adds_127_0_0_1() -> None:
    assert RTCOptions().addresses() is None  # aioice chooses (and skips loopback)
    assert RTCOptions.loopback().addresses() == ["127.0.0.1"]
    found = RTCOptions(loopback_candidate=True).addresses()
    assert found is not None and "127.0.0.1" in found
    assert RTCOptions(host_addresses=("10.9.9.9",), loopback_candidate=True).addresses() == [
        "10.9.9.9", "127.0.0.1"]
    with pytest.raises(TuningError):
        SctpTuning(rto_min_s=2.0, rto_initial_s=1.0)


async def test_malformed_descriptions_are_refused() -> None:
    peer = RTCPeer(RTCOptions.loopback())
    try:
        for bad in ("", "hello", "v=0\r\n" + "x" * 70_000):
            with pytest.raises(BadDescription):
                await peer.accept_offer(bad)
    finally:
        await peer.close()


async def test_a_channel_opened_before_the_other_side_has_a_handler_is_handed_over() -> None:
    """The opener learns the link is up first and may open a named channel at once (world sync
    does): the channel waits for the other side's handler instead of being lost."""
    a, b, _, _ = await connect_pair()
    try:
        opened = await a.open_channel("crdt")
        for _ in range(50):  # until b has seen the channel arrive
            if b._incoming.get("crdt") is not None:
                break
            await asyncio.sleep(0.02)
        got: list[RTCChannel] = []
        b.on_channel = got.append
        assert [ch.label for ch in got] == ["crdt"]
        await opened.send(b"edit")
        assert await asyncio.wait_for(got[0].recv(), 5) == b"edit"
        await a.open_channel("later")  # with a handler set, channels go straight to it
        for _ in range(50):
            if len(got) == 2:
                break
            await asyncio.sleep(0.02)
        assert [ch.label for ch in got] == ["crdt", "later"]
    finally:
        await asyncio.gather(a.close(), b.close())
