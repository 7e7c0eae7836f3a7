"""Bad input and overload: each refusal an OpenAI error body with its status code, and the
server keeps answering everyone else; a client that hangs up frees its sessions on the nodes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from hive_core.api import ApiConfig, HiveEngine, LiveConnector, make_server
from hive_core.base.identity import Identity
from hive_core.exec.audit import auditors_of
from hive_core.mesh.hivenode import HiveNode
from hive_core.mesh.node import NodeConfig
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tokenizer import GGUFTokenizer
from tests.api.conftest import SLOW, http, sse_docs

GOOD = {"model": "tiny-llama", "messages": [{"role": "user", "content": "the cat"}],
        "max_tokens": 4, "temperature": 0}


def body(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


async def refused(api, payload: bytes, status: int, *, path: str = "/v1/chat/completions",
                  method: str = "POST") -> dict:
    got, _, raw = await http(api, method, path, payload)
    assert got == status, raw[:300]
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


async def test_bad_input_is_refused_with_openai_errors(api) -> None:
    err = await refused(api, b'{"model": "tiny-llama", "messages": [', 400)
    assert err["type"] == "invalid_request_error" and "malformed JSON" in err["message"]
    err = await refused(api, b'\xff\xfe{"model": 1}', 400)
    assert "not UTF-8" in err["message"]
    await refused(api, b"[1, 2]", 400)
    await refused(api, b"", 400)
    await refused(api, b'{"model": "tiny-llama", "messages": [], "temperature": NaN}', 400)
    err = await refused(api, body(model="gpt-4o"), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    err = await refused(api, body(max_tokens=10_000), 400)
    assert err["code"] == "context_length_exceeded" and "64 tokens" in err["message"]
    long_prompt = [{"role": "user", "content": "the cat " * 100}]
    err = await refused(api, body(messages=long_prompt), 400)
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    err = await refused(api, b'{"model": "tiny-llama", "messages": [{"role": "user", '
                             b'"content": "\\ud800 hi"}]}', 400)
    assert "unpaired surrogate" in err["message"] and err["param"] == "messages[0].content"
    err = await refused(api, body(messages=[{"role": "user", "content": "x" * 1_000_000}]), 413)
    assert err["code"] == "request_too_large"
    for bad in ({"temperature": -1}, {"top_p": 0}, {"max_tokens": 0}, {"n": 2}, {"stream": "yes"},
                {"stop": ["a"] * 5}, {"seed": "x"}, {"tools": [{"type": "function"}]},
                {"messages": [{"role": "wizard", "content": "hi"}]}, {"messages": "hi"},
                {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}):
        err = await refused(api, body(**bad), 400)
        assert err["param"] is not None, bad
    await refused(api, b"{}", 404, path="/v2/anything")
    await refused(api, b"", 405, path="/v1/models")
    status, _, raw = await http(api, "POST", "/v1/chat/completions", body())
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] is not None


async def test_no_node_for_a_stage_is_503_and_others_keep_being_served(open_server,
                                                                         tiny_gguf) -> None:
    server = await open_server(tiny_gguf)
    try:
        status, _, _ = await http(server, "POST", "/v1/chat/completions", body())
        assert status == 200
        hive = server.api.engine.connector.hive
        for s in hive.servers:  # every node that could serve a stage is gone
            await s.node.close()
        err = await refused(server, body(), 503)
        assert err["code"] == "hive_unavailable" and "no spare node" in err["message"]
        status, _headers, raw = await http(server, "GET", "/v1/models")
        assert status == 200 and json.loads(raw)["data"]
        assert server.api.admission.active == 0
    finally:
        await server.close()


@pytest.mark.net
async def test_a_hive_without_a_server_of_the_model_is_503(tiny_gguf) -> None:
    """Joined over the network (a sentinel on loopback) to a hive that serves no layer."""
    sentinel = HiveNode(Identity.generate(), NodeConfig(listen="127.0.0.1:0"))
    await sentinel.start()
    file = GGUFModelFile(tiny_gguf)
    connector = LiveConnector(sentinel.listen_url, file, "fp32", timeout_s=3.0)
    server = make_server(HiveEngine(file, connector), GGUFTokenizer(file),
                         listen="127.0.0.1:0", model=file.path.name)
    await server.start()
    try:
        err = await refused(server, body(), 503)
        assert err["code"] == "hive_unavailable"
        assert "no shard server of tiny-llama.gguf" in err["message"]
        err = await refused(server, body(), 503)  # refused at once while it stays so
        assert err["code"] == "hive_unavailable"
        assert (await http(server, "GET", "/v1/models"))[0] == 200
    finally:
        await server.close()
        await sentinel.close()


async def test_a_full_line_is_refused_at_once_with_a_reason(open_server, tiny_gguf) -> None:
    server = await open_server(tiny_gguf, profile=SLOW,
                               config=ApiConfig(slots=1, queue=1, wait_s=60))
    try:
        t0 = time.monotonic()
        results = await asyncio.gather(*(http(server, "POST", "/v1/chat/completions",
                                              body(max_tokens=20, stream=True))
                                         for _ in range(4)))
        codes = sorted(r[0] for r in results)
        assert codes == [200, 200, 429, 429], codes
        for status, headers, raw in results:
            if status == 429:
                err = json.loads(raw)["error"]
                assert err["code"] == "queue_full" and "busy" in err["message"]
                assert headers["retry-after"] == "2"
            else:
                assert sse_docs(raw)[-1] == "[DONE]"
        assert time.monotonic() - t0 < 60
    finally:
        await server.close()


async def test_a_long_wait_for_a_slot_ends_in_503(open_server, tiny_gguf) -> None:
    server = await open_server(tiny_gguf, profile=SLOW,
                               config=ApiConfig(slots=1, queue=4, wait_s=0.3))
    try:
        first = asyncio.ensure_future(http(server, "POST", "/v1/chat/completions",
                                           body(max_tokens=20)))
        await asyncio.sleep(0.1)
        err = await refused(server, body(), 503)
        assert err["code"] == "queue_timeout"
        assert (await first)[0] == 200
    finally:
        await server.close()


async def test_a_client_that_hangs_up_frees_its_sessions_on_the_nodes(open_server,
                                                                       tiny_gguf) -> None:
    server = await open_server(tiny_gguf, profile=SLOW, config=ApiConfig(slots=1, queue=0))
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        payload = body(max_tokens=40, stream=True)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(payload)).encode()
                     + b"\r\n\r\n" + payload)
        await writer.drain()
        seen = b""
        while seen.count(b"data: ") < 3:  # a few tokens into the answer
            seen += await asyncio.wait_for(reader.read(4096), 30)
        hive = server.api.engine.connector.hive
        servers = hive.servers
        assert all(s.sessions for s in servers)  # each node holds this answer's cache
        writer.close()
        # What the client keeps open on its auditors (`hive_core.exec.audit`) is not the answer's.
        warm = auditors_of(hive.client).warm_session

        def answers(srv: Any) -> list[Any]:
            return [key for key in srv.sessions if key[1] != warm]

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (
                any(answers(s) for s in servers) or server.api.admission.active):
            await asyncio.sleep(0.05)
        assert [len(answers(s)) for s in servers] == [0, 0]
        assert server.api.admission.active == 0
        # The slot is free again: the next client is answered, not refused.
        status, _, _ = await http(server, "POST", "/v1/chat/completions", body())
        assert status == 200
    finally:
        await server.close()
