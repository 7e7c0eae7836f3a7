"""The lossy UDP relay: real aiortc peers connect through it and feel its delay and loss."""

from __future__ import annotations

import asyncio

import pytest

from hive_core.mesh.rtc import RTCOptions, connect_pair
from hive_core.sim.udprelay import RelayError, Shaping, UdpRelay

pytestmark = [pytest.mark.net, pytest.mark.timeout(60)]

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"
    "a=candidate:abc 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"
)


async def test_sdp_splice_points_the_peer_at_the_relay() -> None:
    relay = await UdpRelay().start()
    try:
        out = relay.rewrite_offer(OFFER)
        port = relay._for_a.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        assert f"127.0.0.1 {port} typ host" in out and " 40000 typ host" not in out
        assert relay._for_a.target == ("127.0.0.1", 40000)
        with pytest.raises(RelayError, match="no 127.0.0.1 host candidate"):
            relay.rewrite_answer(OFFER.replace("127.0.0.1 40000", "10.0.0.1 40000"))
    finally:
        relay.close()


async def test_aiortc_through_a_lossy_delaying_relay() -> None:
    relay = await UdpRelay(seed=3).start()
    opts = RTCOptions.loopback(connect_timeout_s=10.0)
    a, b, ca, cb = await connect_pair(opts, opts, rewrite_offer=relay.rewrite_offer,
                                      rewrite_answer=relay.rewrite_answer)
    try:
        assert relay.received > 0  # ICE, DTLS and SCTP all went through the relay
        relay.shaping = Shaping(delay_s=0.010, loss=0.1)
        loop = asyncio.get_running_loop()
        rtts = []
        for i in range(30):
            t0 = loop.time()
            await ca.send(i.to_bytes(2, "big"))
            got = await asyncio.wait_for(cb.recv(), 10.0)
            await cb.send(got)
            assert await asyncio.wait_for(ca.recv(), 10.0) == i.to_bytes(2, "big")
            rtts.append(loop.time() - t0)
        assert min(rtts) >= 0.020  # two 10 ms relay legs per round trip
        assert relay.dropped > 0  # loss happened, and SCTP recovered every message
    finally:
        await asyncio.gather(a.close(), b.close(), return_exceptions=True)
        relay.close()
