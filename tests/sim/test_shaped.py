"""The WAN bench's shaping: UDP sends from a shaped process are delayed and dropped per address."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hive_core.sim.errors import SimError
from hive_core.sim.shaped import ENV, parse_spec

PROBE = r"""
import asyncio, json, time
from hive_core.sim.shaped import install_from_env
assert install_from_env()

class Sink(asyncio.DatagramProtocol):
    def __init__(self): self.got = []
    def datagram_received(self, data, addr): self.got.append((time.monotonic(), data))

async def main():
    loop = asyncio.get_running_loop()
    out = {}
    for host in ("127.0.0.2", "127.0.0.3"):
        sink_t, sink = await loop.create_datagram_endpoint(Sink, local_addr=(host, 0))
        port = sink_t.get_extra_info("sockname")[1]
        send_t, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        t0 = time.monotonic()
        for i in range(200):
            send_t.sendto(str(i).encode(), (host, port))
        await asyncio.sleep(0.5)
        out[host] = {"n": len(sink.got), "first_ms": (sink.got[0][0] - t0) * 1000 if sink.got else None}
        sink_t.close(); send_t.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_sends_to_a_shaped_address_are_delayed_and_thinned_others_are_not() -> None:
    spec = {"links": {"127.0.0.2": {"delay_ms": 150, "loss": 0.5}}, "seed": 3}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False,
                          env={**os.environ, ENV: json.dumps(spec)}, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    shaped, plain = out["127.0.0.2"], out["127.0.0.3"]
    assert 150 <= shaped["first_ms"] < 400 and 60 <= shaped["n"] <= 140
    assert plain["first_ms"] < 50 and plain["n"] == 200


@pytest.mark.parametrize("text", ["not json", '{"links": {"a": {"delay_ms": -1}}}',
                                  '{"links": {"a": {"loss": 1.0}}}', '{"links": [1]}'])
def test_bad_specs_are_refused(text: str) -> None:
    with pytest.raises(SimError, match=ENV):
        parse_spec(text)
