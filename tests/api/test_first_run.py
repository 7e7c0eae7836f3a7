"""A first run as a new user meets it: `hive up --http` on loopback, then `hive status`,
`ask` and the API. Status shows each node's layers and weights mode; `ask` says how the join
goes on stderr; the hive's own output carries no warning about the project's own messages."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from hive_core.base.identity import Identity
from hive_core.mesh.node import Node
from hive_core.mesh.wschannel import ws_connect
from hive_core.protocol import Error, ErrorCode
from hive_core.protocol.feed import FeedSubscribe
from hive_core.protocol.inference import ShardQuery

CLI = [sys.executable, "-m", "cadencia"]


async def run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*CLI, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.net
async def test_hive_up_status_ask_and_the_api(tiny_gguf: Path, tmp_path: Path) -> None:
    up = await asyncio.create_subprocess_exec(
        *CLI, "hive", "up", "--nodes", "2", "--model", str(tiny_gguf), "--weights", "fp32",
        "--http", "127.0.0.1:0", "--json", "--no-world", "--tflops", "1",
        "--data-dir", str(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert up.stdout is not None and up.stderr is not None
    try:
        summary = {}
        while "http" not in summary:
            line = await asyncio.wait_for(up.stdout.readline(), 240)
            assert line, (await up.stderr.read()).decode()[-2000:]
            summary = json.loads(line)
        url, http = summary["sentinel"], summary["http"]
        assert http.startswith("http://127.0.0.1:")

        code, out, err = await run("hive", "status", "--hive", url, "--json")
        assert code == 0, err
        served = {tuple(map(tuple, n["layers"])): n["weights"]
                  for n in json.loads(out)["nodes"] if n["layers"]}
        assert served == {((0, 2),): "fp32", ((2, 4),): "fp32"}
        code, out, _ = await run("hive", "status", "--hive", url)
        assert "layers" in out.splitlines()[1] and "0-2" in out and "fp32" in out

        # A spectator's feed subscription (0x48) and an asker's shard query (0x44) sent to the
        # sentinel, which serves neither: it says so at once, and logs nothing above debug.
        node = Node(Identity.generate())
        node.register_reply(Error)
        try:
            link = await node.attach(await ws_connect(url, timeout=10), kind="ws", mode="second")
            for ask in (FeedSubscribe(node.next_rpc_id(), True, 10.0),
                        ShardQuery(node.next_rpc_id())):
                reply = await node.request(link.node_id, ask, timeout=10)
                assert isinstance(reply, Error) and reply.code is ErrorCode.UNSUPPORTED
        finally:
            await node.close()

        code, out, err = await run("ask", "the cat", "--hive", url, "--model", str(tiny_gguf),
                                   "--weights", "fp32", "--max-new-tokens", "4")
        assert code == 0, err
        for said in ("joining ws://", "joined:", "nodes publish layers of tiny-llama.gguf",
                     "shard servers answered", "route: layers 1-2 on", "loading this device"):
            assert said in err, (said, err)

        body = json.dumps({"model": "tiny-llama", "max_tokens": 4,
                           "messages": [{"role": "user", "content": "the cat"}]})
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", f"{http}/v1/chat/completions", "-d", body,
            stdout=asyncio.subprocess.PIPE)
        answer, _ = await asyncio.wait_for(curl.communicate(), 120)
        assert json.loads(answer)["usage"]["completion_tokens"] == 4
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(up.communicate(), 60)
    log = err_bytes.decode()
    assert "hive up: all stopped" in log
    assert "unknown message type" not in log and "WARNING" not in log, log[-3000:]
