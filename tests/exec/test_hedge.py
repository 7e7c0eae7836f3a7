"""Hedged requests: a node that takes work and never answers costs a hedge, not a timeout.

Adversary: a silent node (`--fault silent`) accepts every stage request and never answers,
keeping its links up. The step is sent to a spare once it is a few times late; the spare's
answer wins, the silent node is dropped, banned with exponential backoff (the ban is kept in
the data dir and published), and the next ask leaves it out.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.exec.remote import route
from hive_core.protocol.inference import ShardInfo, WeightsKind
from hive_core.trust import ReputationBook, VerdictStore

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 50  # the tiny model's context is 64


async def answer(hive: Any, n: int = N) -> tuple[list[int], float, Any]:
    s = hive.client.new_session()
    t0 = time.perf_counter()
    g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=n, context_length=64), 120)
    took = time.perf_counter() - t0
    await s.finish()
    return g.new_ids, took, s


async def test_a_silent_node_costs_a_hedge_and_is_banned(tiny_gguf, tiny_file, tmp_path) -> None:
    honest = await build_hive(tiny_gguf, 2, spares=1, model=tiny_file)
    try:
        want, base, _ = await answer(honest)
    finally:
        await honest.close()
    book = ReputationBook(store=VerdictStore.in_dir(tmp_path))
    hive = await build_hive(tiny_gguf, 2, spares=1, model=tiny_file,
                            faults={1: Fault.parse("silent")}, reputation=book)
    silent = hive.servers[1].node.node_id
    try:
        got, took, s = await answer(hive)
        assert got == want  # same tokens
        assert took - base < 2.0, f"the silent node cost {took - base:.2f} s"
        assert s.hedges >= 1 and silent not in s.stages[1].nodes
        assert book.banned(silent) and book.excluded(silent)
        assert hive.servers[1].stats.requests >= 1  # it did take the work
        assert s.verified  # the spare's answer was audited
        assert not hive.servers[1].receipts
    finally:
        await hive.close()
    # Another process reading the same data dir keeps it out of its routes.
    later = ReputationBook(store=VerdictStore.in_dir(tmp_path))
    assert later.banned(silent)
    info = ShardInfo(1, "tiny-llama.gguf", 4, 64, 0, 4, 1.0, 1e3, True, WeightsKind.FP32)
    plan = route({silent: info, b"o" * 20: info}, tiny_file.config, "tiny-llama.gguf", 1, {},
                 exclude={n for n in (silent, b"o" * 20) if later.excluded(n)})
    assert plan.nodes == [b"o" * 20]


async def test_a_silent_replica_is_outlasted_by_a_spare_and_the_step_still_verified(
        tiny_gguf, tiny_file) -> None:
    hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, model=tiny_file,
                            faults={0: Fault.parse("silent")})
    try:
        _, took, s = await answer(hive, 12)
        assert took < 10 and s.hedges >= 1 and s.verified
        assert hive.client.reputation.banned(hive.servers[0].node.node_id)
    finally:
        await hive.close()


@pytest.mark.real_model
async def test_a_silent_node_costs_under_two_seconds_on_a_64_token_answer(smollm) -> None:
    from hive_core.model.chat import prompt_ids

    ids = prompt_ids(smollm.file, smollm.tokenizer, "Tell me a story about a brave fox.")
    config = ClientConfig()

    async def run(faults: dict[int, Fault]) -> tuple[list[int], float, Any]:
        hive = await build_hive(smollm.path, 2, spares=1, model=smollm.file, faults=faults,
                                weights="packed", client_config=config)
        try:
            s = hive.client.new_session()
            t0 = time.perf_counter()
            g = await asyncio.wait_for(generate_hive(
                s, ids, max_new_tokens=64, context_length=smollm.file.config.context_length), 300)
            took = time.perf_counter() - t0
            await s.finish()
            return g.new_ids, took, s
        finally:
            await hive.close()

    want, base, _ = await run({})
    got, took, s = await run({1: Fault.parse("silent")})
    assert got == want and s.hedges >= 1
    assert took - base < 2.0, f"the silent node cost {took - base:.2f} s ({base:.2f} -> {took:.2f})"
