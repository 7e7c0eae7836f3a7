"""Fixtures of the API tests: an API server on loopback answering through an in-process hive
of the tiny model (or the real one), started in the test's event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hive_core.api import ApiConfig, ApiServer, HiveEngine, InProcessConnector, make_server
from hive_core.exec.client import ClientConfig
from hive_core.mesh.memchannel import LinkProfile
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tokenizer import GGUFTokenizer

SLOW = LinkProfile(latency_s=0.02, ordered=True)  # 20 ms each way: answers take seconds


async def open_api(path: Path, *, n: int = 2, replicas: int = 1,
                   config: ApiConfig | None = None, profile: LinkProfile | None = None,
                   weights: str = "fp32", local_layers: int = 1) -> ApiServer:
    file = GGUFModelFile(path)
    options: dict[str, Any] = {"profile": profile} if profile is not None else {}
    connector = InProcessConnector(file, n, weights, replicas,
                                   ClientConfig(local_layers=local_layers), options)
    server = make_server(HiveEngine(file, connector), GGUFTokenizer(file),
                         listen="127.0.0.1:0", model=file.path.name, config=config, poll_s=0.5)
    await server.start()
    return server


@pytest.fixture
async def api(tiny_gguf: Path) -> AsyncIterator[ApiServer]:
    """An API server over 2 in-process shard servers of the tiny model."""
    server = await open_api(tiny_gguf)
    yield server
    await server.close()


@pytest.fixture
def open_server() -> Callable[..., Any]:
    """``await open_server(path, ...)``: a server of its own (closed by the test)."""
    return open_api


async def http(server: ApiServer, method: str, path: str, body: bytes | None = None,
               *, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = {"Host": f"{server.host}:{server.port}", "Connection": "close",
            "Content-Type": "application/json", **(headers or {})}
    if body is not None:
        head["Content-Length"] = str(len(body))
    writer.write(f"{method} {path} HTTP/1.1\r\n".encode()
                 + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode() + b"\r\n"
                 + (body or b""))
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 60)
    writer.close()
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    status = int(lines[0].split()[1])
    got = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if got.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return status, got, rest


def _unchunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def sse_docs(body: bytes) -> list[Any]:
    """The JSON documents of a server-sent event stream (``[DONE]`` as the string)."""
    docs = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            docs.append(data if data == "[DONE]" else json.loads(data))
    return docs
