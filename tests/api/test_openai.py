"""The API as OpenAI's clients use it: the official `openai` client (streaming and not) and
curl, against an in-process hive of the tiny model; greedy answers equal a local run's."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from hive_core.model.chat import encode_chat
from hive_core.model.generation import generate
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.pipeline import LocalPipeline
from hive_core.model.tokenizer import GGUFTokenizer
from tests.api.conftest import http, sse_docs

MESSAGES = [{"role": "user", "content": "the cat sat on the"}]


def local_answer(path: Path, messages: list[dict[str, str]], max_tokens: int) -> tuple[str, int]:
    """What `cadencia generate` answers greedily: (text, tokens)."""
    file = GGUFModelFile(path)
    tok = GGUFTokenizer(file)
    ids = encode_chat(file, tok, messages)
    pipe = LocalPipeline.load_single(file, weights="fp32")
    g = generate(pipe.new_session(kv_factory("fp32")).forward, ids, max_new_tokens=max_tokens,
                 context_length=file.config.context_length, stop_ids=tok.stop_ids)
    return tok.decode([t for t in g.new_ids if t not in tok.stop_ids]), len(g.new_ids)


def client(api: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)


async def test_openai_client_answers_as_a_local_greedy_run(api, tiny_gguf) -> None:
    text, tokens = local_answer(tiny_gguf, MESSAGES, 12)
    async with client(api) as c:
        models = await c.models.list()
        assert [m.id for m in models.data] == ["tiny-llama"]
        whole = await c.chat.completions.create(model="tiny-llama", messages=MESSAGES,
                                                max_tokens=12, temperature=0)
        assert whole.choices[0].message.content == text
        assert whole.choices[0].message.role == "assistant"
        assert whole.usage is not None and whole.usage.completion_tokens == tokens
        assert whole.choices[0].finish_reason in ("stop", "length")
        ext = whole.model_extra["cadencia"]
        # The asker keeps layers 0 and 3; each server audits the other's stage (a receipt each).
        assert [r["layers"] for r in ext["route"]] == [[1, 2], [2, 3]]
        assert ext["receipts"] == 4 and ext["slashed"] == []

        stream = await c.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
            stream_options={"include_usage": True})
        pieces, finish, usage = [], None, None
        async for part in stream:
            if part.choices:
                pieces.append(part.choices[0].delta.content or "")
                finish = part.choices[0].finish_reason or finish
            if part.usage is not None:
                usage = part.usage
        assert "".join(pieces) == text
        assert len([p for p in pieces if p]) >= 2  # it streamed, not one lump
        assert finish == whole.choices[0].finish_reason
        assert usage is not None and usage.completion_tokens == tokens


async def test_text_completions_and_stop_sequences(api, tiny_gguf) -> None:
    file = GGUFModelFile(tiny_gguf)
    tok = GGUFTokenizer(file)
    pipe = LocalPipeline.load_single(file, weights="fp32")
    g = generate(pipe.new_session(kv_factory("fp32")).forward, tok.encode("the cat"),
                 max_new_tokens=10, context_length=64, stop_ids=tok.stop_ids)
    local = tok.decode([t for t in g.new_ids if t not in tok.stop_ids])
    async with client(api) as c:
        done = await c.completions.create(model="tiny-llama.gguf", prompt="the cat",
                                          max_tokens=10, temperature=0)
        assert done.choices[0].text == local
        assert done.object == "text_completion"
        if len(local) > 3:  # stop at a sequence the answer holds: cut just before it
            stop = local[2:4]
            cut = await c.completions.create(model="tiny-llama", prompt="the cat",
                                             max_tokens=10, temperature=0, stop=[stop])
            assert cut.choices[0].text == local[:local.index(stop)]
            assert cut.choices[0].finish_reason == "stop"


async def test_sampling_is_seeded(api) -> None:
    async with client(api) as c:
        ask = {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 10, "temperature": 1.5,
                   "top_p": 0.9}
        a = await c.chat.completions.create(seed=7, **ask)
        b = await c.chat.completions.create(seed=7, **ask)
        assert a.choices[0].message.content == b.choices[0].message.content


async def curl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec("curl", "-sS", "-N", "-w", "\n%{http_code}", *args,
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    body, _, code = out.decode().rpartition("\n")
    return int(code), body


async def test_curl_streaming_and_not(api, tiny_gguf) -> None:
    text, _ = local_answer(tiny_gguf, MESSAGES, 8)
    body = json.dumps({"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 8,
                       "temperature": 0})
    url = f"{api.url}/v1/chat/completions"
    code, out = await curl(url, "-H", "Content-Type: application/json", "-d", body)
    assert code == 200 and json.loads(out)["choices"][0]["message"]["content"] == text
    code, out = await curl(url, "-d", body[:-1] + ', "stream": true}')
    assert code == 200
    docs = sse_docs(out.encode())
    assert docs[-1] == "[DONE]"
    assert "".join(d["choices"][0]["delta"].get("content", "") for d in docs[:-1]) == text
    assert docs[-2]["cadencia"]["receipts"] == 4  # served and audited stages
    code, out = await curl(f"{api.url}/v1/models")
    assert code == 200 and json.loads(out)["data"][0]["id"] == "tiny-llama"


async def test_concurrent_streams_never_mix_their_tokens(api, tiny_gguf) -> None:
    """Four different prompts streamed at once: each stream holds exactly its own answer."""
    prompts = ["the cat", "on the mat", "she sat", "in the sun"]
    solo = [local_answer(tiny_gguf, [{"role": "user", "content": p}], 16)[0] for p in prompts]

    async def stream(p: str) -> str:
        body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": p}],
                           "max_tokens": 16, "temperature": 0, "stream": True}).encode()
        status, _, out = await http(api, "POST", "/v1/chat/completions", body)
        assert status == 200
        docs = sse_docs(out)
        return "".join(d["choices"][0]["delta"].get("content", "") for d in docs[:-1])

    got = await asyncio.gather(*(stream(p) for p in prompts))
    assert got == solo


@pytest.mark.real_model
async def test_greedy_answer_equals_cadencia_ask(open_server, smollm_path) -> None:
    """The same prompt through `cadencia ask --hive local:2` and through the API over an
    in-process hive of 2 servers: the same tokens."""
    prompt = "Name a primary color."
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", "ask", prompt, "--hive", "local:2", "--model",
        str(smollm_path), "--max-new-tokens", "12", "--json", "--weights", "fp32",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-1000:]
    asked = json.loads(out)
    server = await open_server(smollm_path)
    try:
        async with client(server) as c:
            got = await c.chat.completions.create(
                model=server.api.model_id, messages=[{"role": "user", "content": prompt}],
                max_tokens=12, temperature=0)
    finally:
        await server.close()
    assert got.choices[0].message.content == asked["text"]
    assert got.usage is not None and got.usage.completion_tokens == len(asked["new_ids"])


async def test_local_engine_answers_on_this_device(tiny_gguf) -> None:
    """`cadencia serve --local`: the whole model here, same answer, no route."""
    from hive_core.api import LocalEngine, make_server

    file = GGUFModelFile(tiny_gguf)
    engine = await LocalEngine.load(file, weights="fp32")
    server = make_server(engine, GGUFTokenizer(file), listen="127.0.0.1:0", model=file.path.name)
    await server.start()
    try:
        async with client(server) as c:
            got = await c.chat.completions.create(model="tiny-llama", messages=MESSAGES,
                                                  max_tokens=12, temperature=0)
        assert got.choices[0].message.content == local_answer(tiny_gguf, MESSAGES, 12)[0]
        assert got.model_extra["cadencia"]["mode"] == "local"
        assert got.model_extra["cadencia"]["route"] == []
    finally:
        await server.close()
