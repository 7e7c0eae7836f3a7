"""`cadencia ask --relay auto` end to end: a live hive on loopback (sentinel + two serving
nodes, each relaying as `cadencia node` and `sentinel` do), the CLI in its own process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from hive_core.base.identity import Identity
from hive_core.exec.relay import serve_relay
from hive_core.exec.serve import attach_shard_server
from hive_core.exec.server import ShardServer
from hive_core.exec.tunnel import TUNNEL_KIND
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.runner import parse_span
from tests.exec.test_ask_cli import FAST, PROMPT, local_ids, serve_args


@pytest.mark.real_model
@pytest.mark.net
async def test_ask_through_a_relay(smollm, tmp_path) -> None:
    """The asker reaches the servers only through the sentinel (the one linked peer serving no
    layers): same answer as a local run, every hop a tunnel, receipts from a key that has
    no link of its own to any server."""
    sentinel = HiveNode(Identity.generate(), replace(FAST, listen="127.0.0.1:0"))
    serve_relay(sentinel.node, hive=sentinel)
    await sentinel.start()
    nodes: list[tuple[HiveNode, ShardServer]] = []
    try:
        for span in ("0-15", "15-30"):
            args = serve_args(smollm, span)
            hn = HiveNode(Identity.generate(), replace(
                FAST, join=(sentinel.listen_url,), listen="127.0.0.1:0",
                spans=tuple(parse_span(s) for s in args.serve)))
            server = attach_shard_server(hn.node, args)
            assert server is not None
            serve_relay(hn.node, hive=hn)
            await hn.start()
            nodes.append((hn, server))
        env = {**os.environ, "CADENCIA_MODEL": str(smollm.path),
               "CADENCIA_DATA_DIR": str(tmp_path / "asker")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadencia", "ask", PROMPT, "--hive", sentinel.listen_url,
            "--replicas", "1", "--max-new-tokens", "8", "--json", "--timeout", "8",
            "--weights", "fp32", "--relay", "auto", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 240)
        assert proc.returncode == 0, err.decode()[-2000:]
        doc = json.loads(out)
        assert doc["new_ids"] == local_ids(smollm)
        assert doc["relay"] == sentinel.node_id.hex()
        assert set(doc["paths"].values()) == {TUNNEL_KIND}
        assert doc["verified"]
        for _ in range(100):  # receipts travel through the relay after the answer
            if all(server.receipts for _, server in nodes):
                break
            await asyncio.sleep(0.05)
        for hn, server in nodes:
            payers = {r.client_id for r in server.receipts}
            assert payers
            for payer in payers:  # the throwaway key: known to the server only as a tunnel
                link = hn.node.peers.best(payer)
                assert link is None or link.kind == TUNNEL_KIND
    finally:
        for hn, _ in nodes:
            await hn.close()
        await sentinel.close()
