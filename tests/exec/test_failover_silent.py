"""A failover that lands on a silent spare costs a grace, not the request timeout.

Adversaries: churn (the stage's only replica dies mid-answer, `--fault crash-after=N`, as a
node killed with SIGKILL does) and a silent node (`--fault silent`) first among the spares.
Found by the soak (`python -m bench soak`): an answer took 132 s, 120 of them the rebuild of
the cache on a silent spare waiting out the request timeout. Now the spare is banned as a
silent replica is and the next spare takes the stage; the tokens are those of an honest hive.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.errors import NoReplicaError
from hive_core.exec.hive import build_hive

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]


async def answer(hive: Any) -> tuple[list[int], float, Any]:
    s = hive.client.new_session()
    t0 = time.perf_counter()
    g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=16, context_length=64),
                               120)
    return g.new_ids, time.perf_counter() - t0, s


async def test_a_failover_to_a_silent_spare_gives_up_on_it_within_a_grace(
        tiny_gguf, tiny_file) -> None:
    # One stage on server 0, which dies after 4 requests; the only spare is silent.
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file,
                            faults={0: Fault.parse("crash-after=4"), 1: Fault.parse("silent")},
                            client_config=ClientConfig(request_timeout_s=60.0))
    silent = hive.servers[1].node.node_id
    try:
        t0 = time.perf_counter()
        with pytest.raises(NoReplicaError, match="no spare node"):
            await answer(hive)
        took = time.perf_counter() - t0
        assert took < 20, f"the silent spare held the failover for {took:.1f} s"
        assert hive.servers[1].stats.requests >= 1  # it took the rebuild
        assert hive.client.reputation.banned(silent)
    finally:
        await hive.close()


async def test_a_failover_past_a_silent_spare_answers_the_honest_tokens(tiny_gguf,
                                                                         tiny_file) -> None:
    honest = await build_hive(tiny_gguf, 1, model=tiny_file)
    try:
        want, _, _ = await answer(honest)
    finally:
        await honest.close()
    # Spares: a silent one and an honest one, in the session's drawn order.
    hive = await build_hive(tiny_gguf, 1, spares=2, model=tiny_file,
                            faults={0: Fault.parse("crash-after=4"), 1: Fault.parse("silent")},
                            client_config=ClientConfig(request_timeout_s=60.0))
    try:
        got, took, s = await answer(hive)
        assert got == want
        assert took < 20, f"the silent spare held the failover for {took:.1f} s"
        assert s.failovers >= 1 and s.stages[0].nodes == [hive.servers[2].node.node_id]
    finally:
        await hive.close()
