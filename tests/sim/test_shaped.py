"""The WAN bench's shaping: UDP sends from a shaped process are delayed and dropped per address."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hive_core.sim import load_country_rtt
from hive_core.sim.errors import SimError
from hive_core.sim.shaped import ENV, Placed, pair_rtt_ms, parse_spec, wan_specs

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


def test_a_wan_of_countries_delays_each_link_by_half_its_measured_rtt() -> None:
    data = load_country_rtt()
    hosts = [Placed("10.0.0.1", "ES"), Placed("10.0.0.2", "DE"), Placed("10.0.0.3", "NZ"),
             Placed("10.0.0.4", "ES")]
    specs = [parse_spec(s) for s in wan_specs(hosts, data, loss=0.05, jitter=0.1, seed=2)]
    es_de, es_nz = pair_rtt_ms(data, "ES", "DE"), pair_rtt_ms(data, "ES", "NZ")
    assert 30 < es_de < 80 and 200 < es_nz < 400  # Europe vs the antipodes
    links, _ = specs[0]
    assert set(links) == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}  # never itself
    assert links["10.0.0.2"].delay_s == pytest.approx(es_de / 2000, abs=1e-5)
    assert links["10.0.0.2"].jitter_s == pytest.approx(es_de / 20000, abs=1e-5)
    assert links["10.0.0.3"].loss == 0.05
    # Symmetric: both ends shape their sends by the same pair, so a round trip is the RTT.
    assert specs[2][0]["10.0.0.1"].delay_s == links["10.0.0.3"].delay_s
    # Two hosts in one country: its own access-network RTT, not zero.
    own = pair_rtt_ms(data, "ES", "ES")
    assert own > 0 and links["10.0.0.4"].delay_s == pytest.approx(own / 2000, abs=1e-5)
    assert len({s[1] for s in specs}) == 4  # each process draws its own losses


def test_unknown_or_unmeasured_pairs_and_bad_shapes_are_refused() -> None:
    data = load_country_rtt()
    with pytest.raises(SimError, match="no RTT data for country 'XX'"):
        pair_rtt_ms(data, "ES", "XX")
    unmeasured = next((a, b) for i, a in enumerate(data.countries)
                      for j, b in enumerate(data.countries) if i != j and not data.measured[i, j])
    with pytest.raises(SimError, match="was not measured"):
        pair_rtt_ms(data, *unmeasured)
    with pytest.raises(SimError, match="loss"):
        wan_specs([Placed("a", "ES")], data, loss=1.0)
    with pytest.raises(SimError, match="share an address"):
        wan_specs([Placed("a", "ES"), Placed("a", "DE")], data)
