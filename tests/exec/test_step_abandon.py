"""A step the asker gives up on leaves no replica request behind.

Adversary: a silent replica (`--fault silent`) that takes the step and never answers. Found
by the soak (`python -m bench soak`): an asker whose ask was cancelled (its deadline) left the
step's request to the silent node waiting out the 120 s request timeout, and requests that
failed after their step was decided were reported as "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.hive import build_hive

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]


def replica_requests() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if not t.done()
            and getattr(t.get_coro(), "__qualname__", "").startswith("StageVerifier._ask")]


async def test_a_cancelled_ask_cancels_its_requests_to_a_silent_replica(tiny_gguf,
                                                                        tiny_file) -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    # One stage on two replicas, the second silent, no spare to hedge to: the step waits.
    hive = await build_hive(tiny_gguf, 2, replicas=2, model=tiny_file,
                            faults={1: Fault.parse("silent")},
                            client_config=ClientConfig(hedge_floor_s=30.0))
    try:
        s = hive.client.new_session()
        ask = asyncio.ensure_future(generate_hive(s, PROMPT, max_new_tokens=4, context_length=64))
        for _ in range(200):
            if hive.servers[1].stats.requests:
                break
            await asyncio.sleep(0.05)
        assert hive.servers[1].stats.requests >= 1 and replica_requests()
        ask.cancel()
        await asyncio.wait([ask])
        await asyncio.sleep(0.05)
        assert replica_requests() == []
        gc.collect()
        assert not [c for c in seen if "never retrieved" in str(c.get("message"))]
    finally:
        loop.set_exception_handler(None)
        await hive.close()
