"""A short version of the load bench (`bench/bench_api.py`): 16 streaming clients for a few
seconds against a server with room for fewer. Every request is answered or refused with
429/503 and a reason, none hangs, no stream holds another's tokens, and afterwards no slot
or session on the nodes is left held."""

from __future__ import annotations

import asyncio
import json
import time

from hive_core.api import ApiConfig
from hive_core.exec.audit import auditors_of
from tests.api.conftest import http, sse_docs

PROMPTS = ["the cat", "on the mat", "she sat", "in the sun"]


async def test_sixteen_clients_are_answered_or_refused_never_hung(open_server, tiny_gguf) -> None:
    server = await open_server(tiny_gguf, config=ApiConfig(slots=4, queue=6, wait_s=30))
    reference: dict[str, str] = {}
    codes: dict[int, int] = {}
    reasons: set[str] = set()
    mixed = 0
    end = time.monotonic() + 4.0

    async def client(k: int) -> None:
        nonlocal mixed
        i = k
        while time.monotonic() < end:
            prompt = PROMPTS[i % len(PROMPTS)]
            i += 1
            payload = json.dumps({"model": "tiny-llama", "max_tokens": 12, "temperature": 0,
                                  "stream": True,
                                  "messages": [{"role": "user", "content": prompt}]}).encode()
            status, _, raw = await asyncio.wait_for(
                http(server, "POST", "/v1/chat/completions", payload), 60)
            codes[status] = codes.get(status, 0) + 1
            if status == 200:
                docs = sse_docs(raw)
                assert docs[-1] == "[DONE]"
                text = "".join(d["choices"][0]["delta"].get("content", "")
                               for d in docs[:-1] if d.get("choices"))
                if reference.setdefault(prompt, text) != text:
                    mixed += 1
            else:
                assert status in (429, 503), raw[:200]
                err = json.loads(raw)["error"]
                reasons.add(err["code"])
                assert err["message"]
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(client(k) for k in range(16)))
        assert codes.get(200, 0) >= 16 and set(codes) <= {200, 429, 503}, codes
        assert codes.get(429, 0) > 0 and reasons <= {"queue_full", "queue_timeout"}
        assert mixed == 0
        a = server.api.admission
        assert (a.active, a.waiting) == (0, 0)
        hive = server.api.engine.connector.hive
        servers = hive.servers
        # What the client keeps open on its auditors (`hive_core.exec.audit`) is no answer's.
        warm = auditors_of(hive.client).warm_session
        deadline = time.monotonic() + 10
        while any(k[1] != warm for s in servers for k in s.sessions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [len([k for k in s.sessions if k[1] != warm]) for s in servers] == [0, 0]
    finally:
        await server.close()
