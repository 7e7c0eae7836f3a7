"""The WAN bench's harness: a hive of separate processes on loopback addresses, shaped or not.

A sentinel and one `cadencia node` per stage (one span each), and `cadencia ask` against
them, each started through `hive_core.sim.shaped.LAUNCHER` with its own `CADENCIA_SHAPING`
(see `bench/bench_wan.py`); `hive up` and `generate` for the loopback comparison.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cadencia.commands.hive import HiveUpError, ready_line
from hive_core.sim.shaped import ENV, LAUNCHER, Placed, wan_specs

PROMPT = "Name three rivers of Europe and the seas they flow into."
READY_S = 180.0  # a node benchmarks its device and loads its layers at start: slow when busy
ASK_TIMEOUT_S = 900.0
ASKER_ADDR = "127.0.0.1"  # `ask` gathers candidates on 127.0.0.1 for a loopback sentinel
SENTINEL_ADDR = "127.0.0.2"
N_LAYERS = 30  # SmolLM2-135M


@dataclass(frozen=True)
class Scenario:
    """One emulated hive: where the asker and each stage's node sit, and the loss on links."""

    name: str
    asker: str  # country of the asker
    nodes: tuple[str, ...]  # country of each stage's node, in layer order
    loss: float = 0.0
    planner: bool = False  # also ask with the planner free to leave nodes out


def spans(stages: int) -> list[tuple[int, int]]:
    base, extra = divmod(N_LAYERS, stages)
    out, start = [], 0
    for i in range(stages):
        end = start + base + (1 if i < extra else 0)
        out.append((start, end))
        start = end
    return out


# -- processes ---------------------------------------------------------------------------------


async def spawn(args: list[str], env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER, *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, start_new_session=True)


async def ready(proc: asyncio.subprocess.Process, what: str) -> dict[str, Any]:
    try:
        return await ready_line(proc, what, READY_S)
    except HiveUpError as exc:
        raise SystemExit(f"bench wan: {exc}") from None


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for p in reversed(procs):
        if p.returncode is None:
            p.terminate()
    for p in reversed(procs):
        try:
            await asyncio.wait_for(p.wait(), 15)
        except TimeoutError:
            p.kill()
            await p.wait()


async def run_json(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any] | str:
    """A cadencia command's one JSON object, or the last line of its error."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER, *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env})
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"no answer within {timeout:g} s"
    for line in reversed(out.decode().splitlines()):
        try:
            return dict(json.loads(line))
        except ValueError:
            continue
    tail = err.decode().strip().splitlines()
    return tail[-1] if tail else f"exit {proc.returncode}"


def ask_args(url: str, n_new: int, *extra: str) -> list[str]:
    return ["ask", PROMPT, "--hive", url, "--json", "--max-new-tokens", str(n_new),
            "--threads", "1", "--timeout", "30", *extra]


Mode = tuple[str, list[str], dict[str, str]]  # name, ask's extra flags, extra environment
AfterAsk = Callable[[str, list[asyncio.subprocess.Process]], Awaitable[None]]


async def wan_hive(scn: Scenario, data: Any, model: str, work: str, n_new: int,
                   modes: list[Mode], tflops: float, env_all: dict[str, str] | None = None,
                   after_ask: AfterAsk | None = None, mesh_flags: tuple[str, ...] = (),
                   ) -> tuple[dict[str, dict[str, Any] | str], dict[str, str]]:
    """Start the scenario's hive, ask it once per mode (`after_ask(name, processes)` before
    the first, with name "", and after each),
    stop it: (mode name -> ask's JSON, node id -> its country). A scenario with no asker
    country is loopback, unshaped."""
    addrs = [f"127.0.0.{10 + i}" for i in range(len(scn.nodes))]
    hosts = [Placed(ASKER_ADDR, scn.asker), *(Placed(a, c) for a, c in zip(addrs, scn.nodes,
                                                                           strict=True))]
    specs = wan_specs(hosts, data, loss=scn.loss, seed=7) if scn.asker else [""] * len(hosts)
    extra = env_all or {}
    procs: list[asyncio.subprocess.Process] = []
    out: dict[str, dict[str, Any] | str] = {}
    where: dict[str, str] = {}
    try:
        procs.append(await spawn(["sentinel", "--listen", "127.0.0.1:0", "--ice-host",
                                  SENTINEL_ADDR, "--no-stun", "--data-dir",
                                  os.path.join(work, "sentinel"), "--json", "--no-world",
                                  *mesh_flags], extra))
        url = (await ready(procs[0], "the sentinel"))["listen"]
        for i, ((lo, hi), addr) in enumerate(zip(spans(len(scn.nodes)), addrs, strict=True)):
            procs.append(await spawn(
                ["node", "--join", url, "--ice-host", addr, "--data-dir",
                 os.path.join(work, f"node-{i}"), "--serve", f"{model}:{lo}-{hi}/{N_LAYERS}",
                 "--threads", "1", "--ping-interval", "1", "--json", "--no-world",
                 "--tflops", f"{tflops:.4f}", *mesh_flags],
                {**extra, ENV: specs[1 + i]}))
        for i, p in enumerate(procs[1:]):
            where[(await ready(p, f"node {i}"))["id"]] = scn.nodes[i]
        await asyncio.sleep(3.0)  # a few pings: links measured before the asker routes
        env = {**extra, ENV: specs[0], "CADENCIA_DATA_DIR": os.path.join(work, "asker")}
        if after_ask is not None:
            await after_ask("", procs)  # before the first ask
        for name, extra, more in modes:
            out[name] = await run_json(ask_args(url, n_new, *extra), {**env, **more},
                                       ASK_TIMEOUT_S)
            if after_ask is not None:
                await after_ask(name, procs)
    finally:
        await stop(procs)
    return out, where


async def local_generate(n_new: int, threads: int | None) -> dict[str, Any] | str:
    """`cadencia generate` (`threads` None: its default, the physical cores)."""
    flags = [] if threads is None else ["--threads", str(threads)]
    return await run_json(["generate", PROMPT, "--json", "--max-new-tokens", str(n_new), *flags],
                          {}, ASK_TIMEOUT_S)


LOOP_MODES = (  # name, ask's extra flags
    ("not verified, cascade", ["--no-verify", "--replicas", "1", "--cascade"]),
    ("not verified, star", ["--no-verify", "--replicas", "1"]),
    ("verified (audited), 1 replica, cascade", ["--replicas", "1", "--cascade"]),
    ("verified, 2 replicas compared, cascade", ["--replicas", "2", "--cascade"]),
)
LOOP_SETTLE_S = 5.0  # after `hive up` is ready: links pinged, start-up benchmarks over


async def loopback_hive(work: str, n_new: int, rounds: int, *, lan: bool = True,
                        modes: tuple[tuple[str, list[str]], ...] = LOOP_MODES,
                        ) -> dict[str, list[dict[str, Any] | str]]:
    """`hive up --nodes 4` (2 stages x 2 replicas) and `ask` on it in each of `modes`, with
    `generate --threads 1` ("local") run between them: `rounds` times each, interleaved, so a
    busy minute on shared cores slows both sides alike. `lan`: False runs every process with
    CADENCIA_LAN_LINKS=0 (data channels only, no direct WebSockets between them)."""
    env_lan = {} if lan else {"CADENCIA_LAN_LINKS": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", "hive", "up", "--nodes", "4", "--json", "--no-world",
        "--data-dir", os.path.join(work, "up"), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env_lan}, start_new_session=True)
    out: dict[str, list[dict[str, Any] | str]] = {name: [] for name, _ in modes}
    out["local"] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_S * 2)
        url = json.loads(line)["sentinel"]
        await asyncio.sleep(LOOP_SETTLE_S)
        env = {"CADENCIA_DATA_DIR": os.path.join(work, "asker-up"), **env_lan}
        for _ in range(rounds):
            for name, extra in modes:
                out[name].append(await run_json(ask_args(url, n_new, *extra), env,
                                                ASK_TIMEOUT_S))
            out["local"].append(await local_generate(n_new, 1))
    finally:
        await stop([proc])
    return out

