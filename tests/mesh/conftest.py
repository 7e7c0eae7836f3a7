"""Helpers for mesh tests: real HiveNodes on loopback with short timers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions

# Short timers so a test sees deaths and expiries in seconds, not minutes.
FAST = NodeConfig(
    rtc=RTCOptions.loopback(connect_timeout_s=20.0),  # generous: CI machines are loaded
    roles=("alpha", "beta"),
    ping_interval_s=0.3,
    dead_after_s=3.0,
    handshake_timeout_s=5.0,
    request_timeout_s=3.0,
    record_ttl_s=6.0,
    republish_s=1.5,
    tflops=1.0,  # skip the start-up matmul benchmark: the timing is not under test here
)


@pytest.fixture(autouse=True)
def _quiet_libraries() -> None:
    for name in ("aioice", "aiortc", "websockets"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `predicate` until true; fail the test with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Hive:
    """HiveNodes started in this process, all closed at the end of the test."""

    def __init__(self) -> None:
        self.nodes: list[HiveNode] = []

    def make(self, *, seed: int, **overrides: object) -> HiveNode:
        config = replace(FAST, **overrides)  # type: ignore[arg-type]
        node = HiveNode(Identity.from_seed(seed.to_bytes(32, "big")), config)
        self.nodes.append(node)
        return node

    async def sentinel(self, seed: int = 1000) -> HiveNode:
        s = self.make(seed=seed, listen="127.0.0.1:0", roles=("sentinel", "alpha", "beta"))
        await asyncio.wait_for(s.start(), 20)
        return s

    async def join(self, urls: list[str], count: int, *, first_seed: int = 1,
                   listen: bool = True, **overrides: object) -> list[HiveNode]:
        nodes = [self.make(seed=first_seed + i, join=tuple(urls),
                           listen="127.0.0.1:0" if listen else None, **overrides)
                 for i in range(count)]
        await asyncio.wait_for(asyncio.gather(*(n.start() for n in nodes)), 60)
        return nodes

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)


@pytest.fixture
async def hive() -> AsyncIterator[Hive]:
    h = Hive()
    try:
        yield h
    finally:
        await asyncio.wait_for(h.close(), 20)
