"""`cadencia ask` end to end: a live hive on loopback (sentinel + serving nodes joined over
WebSocket and aiortc), the CLI in its own process, its JSON checked against a local run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from cadencia.cli import main
from hive_core.base.identity import Identity
from hive_core.exec.serve import attach_shard_server
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.mesh.rtc import RTCOptions
from hive_core.mesh.runner import parse_span
from hive_core.model.chat import encode_chat
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory

FAST = NodeConfig(rtc=RTCOptions.loopback(connect_timeout_s=8.0), ping_interval_s=0.5,
                  dead_after_s=4.0)
PROMPT = "Name a primary color."


def local_ids(smollm: Any) -> list[int]:
    """What `cadencia generate PROMPT --max-new-tokens 8` answers."""
    tok = smollm.tokenizer
    ids = encode_chat(smollm.file, tok, [{"role": "user", "content": PROMPT}])
    g = generate(smollm.pipeline.new_session(kv_factory("fp32")).forward, ids,
                 max_new_tokens=8, context_length=smollm.file.config.context_length,
                 stop_ids=tok.stop_ids)
    return g.new_ids


def serve_args(smollm: Any, span: str, fault: str | None = None) -> argparse.Namespace:
    name = smollm.path.name
    return argparse.Namespace(model=str(smollm.path), fault=fault, serve=[f"{name}:{span}/30"],
                              tflops=None, weights="fp32")


@pytest.mark.real_model
@pytest.mark.net
async def test_ask_a_live_hive(smollm, tmp_path) -> None:
    sentinel = HiveNode(Identity.generate(), replace(FAST, listen="127.0.0.1:0"))
    await sentinel.start()
    nodes = []
    try:
        for span, fault in [("0-15", None), ("15-30", None), ("15-30", "noise"), ("15-30", None)]:
            # As `cadencia node --listen 127.0.0.1:0 --serve MODEL:A-B/30` builds it.
            args = serve_args(smollm, span, fault)
            hn = HiveNode(Identity.generate(), replace(
                FAST, join=(sentinel.listen_url,), listen="127.0.0.1:0",
                spans=tuple(parse_span(s) for s in args.serve)))
            attach_shard_server(hn.node, args)
            await hn.start()
            nodes.append(hn)
        env = {**os.environ, "CADENCIA_MODEL": str(smollm.path),
               "CADENCIA_DATA_DIR": str(tmp_path / "asker")}  # its verdicts and bans
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadencia", "ask", PROMPT, "--hive", sentinel.listen_url,
            "--replicas", "3", "--max-new-tokens", "8", "--json", "--timeout", "5",
            "--weights", "fp32", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-2000:]
        doc = json.loads(out)
        assert doc["new_ids"] == local_ids(smollm)
        assert {"text", "ttft_s", "tokens_per_s", "route", "verified", "slashed"} <= set(doc)
        # Layers 0 and 29 run on the asker (--local-layers 1, --local-tail-layers 1 by default):
        # no node sees embeddings or returns what the head reads.
        assert [r["layers"] for r in doc["route"]] == [[1, 15], [15, 29]]
        assert [r["weights"] for r in doc["route"]] == ["fp32", "fp32"]
        assert doc["slashed"] == [nodes[2].node_id.hex()]
        # The first stage had a single replica: another node audited it at the end.
        assert doc["audited"][0] and doc["verified"]
    finally:
        for hn in nodes:
            await hn.close()
        await sentinel.close()


@pytest.mark.real_model
def test_ask_with_packed_weights_answers_what_generate_does_with_them(smollm, capsys) -> None:
    common = [PROMPT, "--model", str(smollm.path), "--max-new-tokens", "8", "--json",
              "--weights", "packed", "--threads", "2"]
    assert main(["generate", *common]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["ask", *common, "--hive", "local:2"]) == 0
    asked = json.loads(capsys.readouterr().out)
    assert local["weights"] == asked["weights"] == "packed"
    assert [r["weights"] for r in asked["route"]] == ["packed"]  # 2 replicas of one stage
    assert asked["verified"]
    assert asked["new_ids"] == local["new_ids"]


def test_ask_refuses_bad_flags(capsys) -> None:
    assert main(["ask", "hi", "--hive", "http://x"]) == 2
    assert "ws://" in capsys.readouterr().err
    assert main(["ask", "hi", "--hive", "local:0"]) == 2
    assert main(["ask", "hi", "--hive", "local:2", "--replicas", "0"]) == 2
    assert main(["ask", "hi", "--hive", "local:2", "--speculate", "2", "--temperature", "1"]) == 2
    assert main(["ask", " ", "--hive", "local:2"]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad_mode:
        main(["ask", "hi", "--hive", "local:2", "--weights", "int3"])
    assert bad_mode.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "--weights: invalid choice: 'int3'" in line
