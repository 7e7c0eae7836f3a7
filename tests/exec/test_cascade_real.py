"""The cascade on the real SmolLM2 over real aiortc data channels on loopback: the same tokens
as the star and as the local run, on each wire dtype's terms (a 16-bit wire is measured, not
promised equal: `bench.bench_wire`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hive_core.exec import ClientConfig, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.model.chat import encode_chat
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory

pytestmark = [pytest.mark.real_model, pytest.mark.net]
QUESTION = "What is the capital of France? Answer in one short sentence."
N = 10


async def run(hive: Any, smollm: Any, ids: list[int]) -> tuple[list[int], Any]:
    s = hive.client.new_session()
    g = await asyncio.wait_for(generate_hive(
        s, ids, max_new_tokens=N, context_length=smollm.file.config.context_length,
        stop_ids=smollm.tokenizer.stop_ids), 180)
    await s.finish()
    return g.new_ids, s


async def test_a_four_stage_cascade_equals_the_star_and_local(smollm) -> None:
    ids = encode_chat(smollm.file, smollm.tokenizer, [{"role": "user", "content": QUESTION}])
    local = generate(smollm.pipeline.new_session(kv_factory("fp32")).forward, ids,
                     max_new_tokens=N, context_length=smollm.file.config.context_length,
                     stop_ids=smollm.tokenizer.stop_ids).new_ids
    hive = await build_hive(smollm.path, 4, model=smollm.file, transport="rtc",
                            client_config=ClientConfig(topology="cascade"))
    try:
        got, s = await run(hive, smollm, ids)
        assert got == local
        assert s.cascaded == len(got) and s.fallbacks == 0
        assert s.verified  # single replicas: audited at the end from the carriers' copies
        # The same hive by the star gives the same tokens.
        hive.client.config = ClientConfig()
        star, s2 = await run(hive, smollm, ids)
        assert star == got and s2.cascaded == 0
    finally:
        await hive.close()


async def test_a_bf16_wire_cascade_with_replicas_verifies(smollm) -> None:
    ids = encode_chat(smollm.file, smollm.tokenizer, [{"role": "user", "content": QUESTION}])
    hive = await build_hive(smollm.path, 4, replicas=2, model=smollm.file, transport="rtc",
                            client_config=ClientConfig(topology="cascade", wire="bf16"))
    try:
        got, s = await run(hive, smollm, ids)
        assert len(got) >= 1 and s.fallbacks == 0
        assert s.verified and all(st.verified_steps == st.steps for st in s.stages)
        assert not hive.client.reputation.slashed
    finally:
        await hive.close()


def test_ask_cascade_on_a_local_hive_answers_what_generate_does(smollm, capsys) -> None:
    from cadencia.cli import main

    common = ["Name a primary color.", "--model", str(smollm.path), "--max-new-tokens", "8",
              "--json"]
    assert main(["generate", *common]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["ask", *common, "--hive", "local:4", "--replicas", "1", "--cascade"]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert asked["new_ids"] == local["new_ids"]
    assert asked["topology"] == "cascade" and asked["wire"] == "fp32"
    assert asked["cascaded"] == len(asked["new_ids"]) and asked["star_fallbacks"] == 0
    assert asked["verified"]
    with pytest.raises(SystemExit):
        main(["ask", "hi", "--hive", "local:2", "--wire", "fp8"])
    assert "--wire: invalid choice: 'fp8'" in capsys.readouterr().err
