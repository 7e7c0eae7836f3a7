"""The cascade on the real SmolLM2 over real aiortc data channels on loopback: the same tokens
as the star and as the local run, on each wire dtype's terms (a 16-bit wire is measured, not
promised equal: `bench.bench_wire`)."""

from __future__ import annotations

import argparse
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


async def test_ask_cascade_on_a_live_hive(smollm, tmp_path) -> None:
    """A sentinel and two serving nodes joined over WebSocket and aiortc, `ask --cascade` in
    its own process: the nodes' links to each other carry the hidden states."""
    import os
    import subprocess
    import sys
    from dataclasses import replace

    from hive_core.base.identity import Identity
    from hive_core.exec.serve import attach_shard_server
    from hive_core.mesh.hivenode import HiveNode
    from hive_core.mesh.node import NodeConfig
    from hive_core.mesh.rtc import RTCOptions
    from hive_core.mesh.runner import parse_span

    fast = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), ping_interval_s=0.5,
                      dead_after_s=4.0)
    sentinel = HiveNode(Identity.generate(), replace(fast, listen="127.0.0.1:0"))
    await sentinel.start()
    nodes = []
    try:
        for span in ("0-15", "15-30"):
            serve = [f"{smollm.path.name}:{span}/30"]
            args = argparse.Namespace(model=str(smollm.path), fault=None, serve=serve,
                                      tflops=None, weights="fp32")
            hn = HiveNode(Identity.generate(), replace(
                fast, join=(sentinel.listen_url,), listen="127.0.0.1:0",
                spans=tuple(parse_span(s) for s in serve)))
            attach_shard_server(hn.node, args)
            await hn.start()
            nodes.append(hn)
        env = {**os.environ, "CADENCIA_MODEL": str(smollm.path),
               "CADENCIA_DATA_DIR": str(tmp_path / "asker"), "CADENCIA_PLANNER": "spans"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadencia", "ask", "Name a primary color.", "--hive",
            sentinel.listen_url, "--replicas", "1", "--max-new-tokens", "8", "--json",
            "--timeout", "5", "--weights", "fp32", "--cascade", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-2000:]
        doc = json.loads(out)
        ids = encode_chat(smollm.file, smollm.tokenizer,
                          [{"role": "user", "content": "Name a primary color."}])
        local = generate(smollm.pipeline.new_session(kv_factory("fp32")).forward, ids,
                         max_new_tokens=8, context_length=smollm.file.config.context_length,
                         stop_ids=smollm.tokenizer.stop_ids).new_ids
        assert doc["new_ids"] == local
        assert [r["layers"] for r in doc["route"]] == [[1, 15], [15, 29]]
        assert doc["cascaded"] == len(local) and doc["star_fallbacks"] == 0, err.decode()[-2000:]
        assert doc["verified"]
    finally:
        for hn in nodes:
            await hn.close()
        await sentinel.close()
