"""The real SmolLM2 over real aiortc data channels on loopback: a 4-node hive answers with
the local run's tokens; 3 replicas outvote a noisy node; a crashing node is replaced; and
nothing that reaches a shard server carries the prompt's text or token ids."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, Fault, SpecStats, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.model.chat import encode_chat
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory
from hive_core.protocol.inference import KvKind

pytestmark = [pytest.mark.real_model, pytest.mark.net]
QUESTION = "What is the capital of France? Answer in one short sentence."
N = 12


def prompt_ids(smollm: Any) -> list[int]:
    return encode_chat(smollm.file, smollm.tokenizer, [{"role": "user", "content": QUESTION}])


def local_ids(smollm: Any, ids: list[int], kv: str = "fp32") -> list[int]:
    g = generate(smollm.pipeline.new_session(kv_factory(kv)).forward, ids, max_new_tokens=N,
                 context_length=smollm.file.config.context_length,
                 stop_ids=smollm.tokenizer.stop_ids)
    return g.new_ids


async def run(hive: Any, smollm: Any, ids: list[int], **kw: Any) -> tuple[list[int], Any]:
    s = hive.client.new_session()
    g = await asyncio.wait_for(generate_hive(
        s, ids, max_new_tokens=N, context_length=smollm.file.config.context_length,
        stop_ids=smollm.tokenizer.stop_ids, **kw), 180)
    await s.finish()
    return g.new_ids, s


def needles(text: str, ids: list[int]) -> list[bytes]:
    """Byte patterns that would betray the prompt: its text and its ids in common encodings."""
    out = [text.encode(), text.encode("utf-16-le")]
    for dtype in ("<i8", "<i4", "<u2", ">i4"):
        out.append(np.asarray(ids, dtype=dtype).tobytes())
        out.append(np.asarray(ids[-8:], dtype=dtype).tobytes())  # a tail of the prompt too
    out += [w.encode() for w in ("capital of France", "France")]
    return out


async def test_four_node_hive_equals_local_and_keeps_the_prompt_private(smollm) -> None:
    ids = prompt_ids(smollm)
    frames: list[tuple[bytes, bytes]] = []
    hive = await build_hive(smollm.path, 4, model=smollm.file, transport="rtc",
                            tap=lambda who, data: frames.append((who, data)))
    try:
        got, s = await run(hive, smollm, ids)
        assert got == local_ids(smollm, ids)
        # The asker keeps layers 0 and 29: the hive splits the 28 between them.
        assert [len(st.stage.layers) for st in s.stages] == [7, 7, 7, 7]
        assert all(link.kind == "rtc" for link in hive.asker.peers.all())
        # Privacy: every frame any shard server received, none with the prompt in it.
        assert len(frames) >= 4 * len(got)
        assert {who for who, _ in frames} == set(hive.node_ids)
        for _, data in frames:
            for needle in needles(QUESTION, ids):
                assert needle not in data
        # And speculative decoding over the same hive gives the same tokens.
        stats = SpecStats()
        spec, _ = await run(hive, smollm, ids, speculate=4, stats=stats)
        assert spec == got and stats.passes > 0
    finally:
        await hive.close()


async def test_three_replicas_and_a_noisy_node(smollm) -> None:
    ids = prompt_ids(smollm)
    hive = await build_hive(smollm.path, 3, replicas=3, stages=[Stage(1, 29)], model=smollm.file,
                            transport="rtc", faults={1: Fault.parse("noise")})
    try:
        got, s = await run(hive, smollm, ids)
        assert got == local_ids(smollm, ids)
        assert hive.client.reputation.slashed == [hive.servers[1].node.node_id]
        assert s.verified
    finally:
        await hive.close()


async def test_crashing_node_answer_completes_unchanged(smollm) -> None:
    ids = prompt_ids(smollm)
    cfg = ClientConfig(kv=KvKind.INT4)
    hive = await build_hive(smollm.path, 2, spares=1, model=smollm.file, transport="rtc",
                            faults={1: Fault.parse("crash-after=4")}, client_config=cfg)
    try:
        got, s = await run(hive, smollm, ids)
        assert got == local_ids(smollm, ids, "int4")
        assert s.failovers == 1 and hive.servers[1].crashed
    finally:
        await hive.close()
