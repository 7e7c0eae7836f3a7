"""The HTTP API under load (`python -m bench.bench_api [--quick]`, or `python -m bench api`).

Starts `cadencia hive up --nodes N --http 127.0.0.1:0` (a sentinel, N serving node
processes and the API server process, all on loopback), then runs 1, 4 and 16 concurrent
streaming clients, each asking greedily in a loop for a fixed time. Reports requests/s,
tokens/s, p50/p95 time to first token, and every refusal with its status and code. Checks
what the load must not break: every request is answered or refused with 429/503 and a
reason (none hangs: each has a deadline), each stream holds exactly the answer its prompt
gets alone (no token of one answer in another's stream), and the API server's memory stays
flat (its RSS at the start and end of the longest run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROMPTS = ["Name a primary color.", "What is the capital of France?", "Say hello in Spanish.",
           "Count to five."]
DEADLINE_S = 300.0  # a request still open this long counts as hung


@dataclass
class Run:
    """One load level's results."""

    clients: int
    seconds: float
    ttft: list[float] = field(default_factory=list)
    tokens: int = 0
    done: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # "429 queue_full" -> count
    mixed: int = 0  # answers that differ from their prompt's answer alone
    hung: int = 0
    failed: list[str] = field(default_factory=list)


async def stream(host: str, port: int, model: str, prompt: str, max_tokens: int
                 ) -> tuple[int, float | None, str, int, dict[str, Any] | None]:
    """One streaming chat request: (status, ttft s, text, completion tokens, error)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        if status != 200:
            raw = await reader.read()
            start = raw.find(b"{")
            return status, None, "", 0, json.loads(raw[start:raw.rfind(b"}") + 1])["error"]
        ttft, text, tokens, error = None, [], 0, None
        async for line in reader:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            doc = json.loads(line[6:])
            if "error" in doc:
                error = doc["error"]
                continue
            if doc.get("usage"):
                tokens = doc["usage"]["completion_tokens"]
            for choice in doc.get("choices", []):
                piece = choice["delta"].get("content")
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text.append(piece)
        return (500 if error else 200), ttft, "".join(text), tokens, error
    finally:
        writer.close()


async def load(host: str, port: int, model: str, clients: int, seconds: float, max_tokens: int,
               reference: dict[str, str]) -> Run:
    run = Run(clients, seconds)
    end = time.monotonic() + seconds

    async def client(k: int) -> None:
        i = k
        while time.monotonic() < end:
            prompt = PROMPTS[i % len(PROMPTS)]
            i += 1
            try:
                status, ttft, text, tokens, err = await asyncio.wait_for(
                    stream(host, port, model, prompt, max_tokens), DEADLINE_S)
            except TimeoutError:
                run.hung += 1
                continue
            if status == 200:
                run.done += 1
                run.tokens += tokens
                if ttft is not None:
                    run.ttft.append(ttft)
                if reference.setdefault(prompt, text) != text:
                    run.mixed += 1
            elif status in (429, 503) and err and err.get("message"):
                key = f"{status} {err.get('code')}"
                run.refused[key] = run.refused.get(key, 0) + 1
                await asyncio.sleep(0.5)  # as a client honouring Retry-After would, briefly
            else:
                run.failed.append(f"{status}: {err}")

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    run.seconds = time.monotonic() - t0
    return run


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def start_hive(nodes: int, model: str | None, data: str) -> tuple[Any, str]:
    cmd = [sys.executable, "-m", "cadencia", "hive", "up", "--nodes", str(nodes), "--http",
           "127.0.0.1:0", "--json", "--no-world", "--data-dir", data, "--tflops", "1"]
    if model:
        cmd += ["--model", model, "--weights", "fp32"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    assert proc.stdout is not None
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
        if not line:
            raise RuntimeError("hive up exited before it was ready")
        doc = json.loads(line) if line.startswith(b"{") else {}
        if doc.get("http"):
            return proc, str(doc["http"])


def serve_process(hive_up_pid: int) -> psutil.Process:
    for child in psutil.Process(hive_up_pid).children(recursive=True):
        if "serve" in child.cmdline():
            return child
    raise RuntimeError("no API server process under hive up")


async def main_async(args: argparse.Namespace) -> int:
    model = None
    tmp = tempfile.TemporaryDirectory()
    if args.quick:
        from hive_core.model.tiny import write_tiny_llama

        model = str(write_tiny_llama(Path(tmp.name) / "tiny-llama.gguf"))
    proc, url = await start_hive(args.nodes, model, tmp.name)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        server = serve_process(proc.pid)
        models = json.loads(await asyncio.to_thread(_get, url + "/v1/models"))
        name = models["data"][0]["id"]
        reference: dict[str, str] = {}
        await load(host, int(port), name, 1, 1, args.max_tokens, reference)  # route, warm up
        runs, rss = [], []
        for clients in (1, 4, 16):
            seconds = args.seconds if clients < 16 else args.long_seconds
            before = server.memory_info().rss
            runs.append(await load(host, int(port), name, clients, seconds, args.max_tokens,
                                   reference))
            rss.append((before, server.memory_info().rss))
    finally:
        proc.terminate()
        await proc.wait()
        tmp.cleanup()
    print(f"API over `hive up --nodes {args.nodes}` on loopback ({'tiny model' if args.quick else 'SmolLM2-135M'}, "
          f"greedy, {args.max_tokens} new tokens at most, streamed; server: 4 slots, 16 waiting), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| clients | seconds | answers | requests/s | tokens/s | TTFT p50 s | TTFT p95 s "
          "| refused (status code: n) | mixed | hung | other failures | server RSS MB start -> end |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    bad = 0
    for run, (a, b) in zip(runs, rss, strict=True):
        refused = ", ".join(f"{k}: {v}" for k, v in sorted(run.refused.items())) or "none"
        print(f"| {run.clients} | {run.seconds:.0f} | {run.done} | {run.done / run.seconds:.2f} "
              f"| {run.tokens / run.seconds:.1f} | {pct(run.ttft, 0.5):.3f} | "
              f"{pct(run.ttft, 0.95):.3f} | {refused} | {run.mixed} | {run.hung} | "
              f"{len(run.failed)} | {a / 2**20:.0f} -> {b / 2**20:.0f} |")
        bad += run.mixed + run.hung + len(run.failed)
        for f in run.failed[:3]:
            print(f"  failure: {f}", file=sys.stderr)
    print(f"\nmean TTFT over all answers {statistics.fmean([t for r in runs for t in r.ttft]):.3f} s")
    return 1 if bad else 0


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:  # loopback only
        return r.read().decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 s per level")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0, help="per level of 1 and 4 clients")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="the 16-client run")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.long_seconds, args.max_tokens = 3.0, 3.0, 8
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
