"""UDP datagrams delayed and dropped per destination address, for a process of an emulated WAN.

The kernel here has no netem, so the WAN bench gives each hive process a host of its own
(`hive_core.sim.netns`: one address each on a shared bridge) and starts it with
`install_from_env()` called first (`LAUNCHER` is the ``python -c`` program that does so and
then runs the `cadencia` command line), with ``CADENCIA_SHAPING`` holding a JSON object ``{"links": {"10.77.0.3": {"delay_ms": 146.4, "jitter_ms": 2.0, "loss":
0.01}}, "seed": 7}``. Every UDP datagram this process sends to a listed address leaves
after that one-way delay (plus uniform jitter, which may reorder them), or is dropped with
that probability. ICE, DTLS and SCTP (every data channel) run over UDP, so both ends
shaping their own sends gives each link its round trip. WebSockets (TCP: joining,
signaling) are not shaped. Emulation only: nothing else imports this module.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from dataclasses import dataclass
from typing import Any

from hive_core.sim.errors import SimError

ENV = "CADENCIA_SHAPING"


@dataclass(frozen=True)
class LinkShape:
    """What happens to a datagram sent to one address."""

    delay_s: float  # one-way delay
    jitter_s: float = 0.0  # extra delay, uniform in [0, jitter_s]
    loss: float = 0.0  # drop probability


def parse_spec(text: str) -> tuple[dict[str, LinkShape], int]:
    """(address -> shape, seed) from the JSON spec; SimError on anything malformed."""
    try:
        doc = json.loads(text)
        links = {
            str(addr): LinkShape(float(v.get("delay_ms", 0.0)) / 1000.0,
                                 float(v.get("jitter_ms", 0.0)) / 1000.0, float(v.get("loss", 0.0)))
            for addr, v in dict(doc.get("links", {})).items()
        }
        seed = int(doc.get("seed", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SimError(f"bad {ENV}: {exc}") from exc
    for addr, shape in links.items():
        if not (0 <= shape.delay_s <= 10 and 0 <= shape.jitter_s <= 10 and 0 <= shape.loss < 1):
            raise SimError(f"bad {ENV} shape for {addr}: {shape}")
    return links, seed


def install(links: dict[str, LinkShape], seed: int) -> None:
    """Shape every UDP datagram sent from this process from now on."""
    from asyncio import selector_events

    # asyncio's UDP transport: emulation patches the one class every datagram leaves through.
    transport_cls: Any = vars(selector_events)["_SelectorDatagramTransport"]
    real_sendto = transport_cls.sendto
    rng = random.Random(seed)

    def sendto(self: Any, data: bytes, addr: Any = None) -> None:
        shape = links.get(addr[0]) if addr is not None else None
        if shape is None:
            real_sendto(self, data, addr)
            return
        if shape.loss and rng.random() < shape.loss:
            return
        delay = shape.delay_s + (rng.uniform(0.0, shape.jitter_s) if shape.jitter_s else 0.0)

        def later() -> None:
            if not self.is_closing():
                real_sendto(self, data, addr)

        asyncio.get_running_loop().call_later(delay, later)

    transport_cls.sendto = sendto


def install_from_env() -> bool:
    """Shape this process by `CADENCIA_SHAPING` if it is set; whether it was."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    install(*parse_spec(spec))
    return True


# `python -c LAUNCHER <cadencia arguments>`: a cadencia command shaped by CADENCIA_SHAPING.
LAUNCHER = ("import sys; from hive_core.sim.shaped import install_from_env; install_from_env(); "
            "from cadencia.cli import main; sys.exit(main(sys.argv[1:]))")


# -- a WAN of hosts placed in countries --------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """One process of an emulated WAN: the address it sends from and the country it sits in."""

    address: str  # its own host address (a loopback alias, or a namespace's address)
    country: str  # ISO code in the RIPE Atlas matrix


def pair_rtt_ms(data: Any, a: str, b: str) -> float:
    """Measured RTT between two countries (`CountryRtt`); within one country, its access RTT.

    SimError when the pair (or the country's own RTT) was not measured: the bench must not
    invent latencies."""
    index = {c: i for i, c in enumerate(data.countries)}
    if a not in index or b not in index:
        raise SimError(f"no RTT data for country {a if a not in index else b!r}")
    i, j = index[a], index[b]
    ms = float(data.intra[i]) if i == j else float(data.rtt[i, j])
    if math.isnan(ms):  # never measured
        raise SimError(f"the RTT between {a} and {b} was not measured")
    return ms


def wan_specs(hosts: list[Placed], data: Any, *, loss: float = 0.0, jitter: float = 0.05,
              seed: int = 0) -> list[str]:
    """One `CADENCIA_SHAPING` JSON per host: each send to another host leaves after half
    their pair's RTT (plus up to `jitter` of it, uniform) or is dropped with `loss`; both ends
    shape their own sends, so each link's round trip is the measured RTT (plus jitter)."""
    if not 0.0 <= loss < 1.0 or not 0.0 <= jitter <= 1.0:
        raise SimError(f"loss must be in [0, 1) and jitter in [0, 1], got {loss} and {jitter}")
    if len({h.address for h in hosts}) != len(hosts):
        raise SimError("two hosts share an address")
    specs = []
    for k, me in enumerate(hosts):
        links = {}
        for other in hosts:
            if other.address == me.address:
                continue
            one_way = pair_rtt_ms(data, me.country, other.country) / 2
            links[other.address] = {"delay_ms": round(one_way, 3),
                                    "jitter_ms": round(one_way * jitter, 3), "loss": loss}
        specs.append(json.dumps({"links": links, "seed": seed * 1000 + k}))
    return specs
