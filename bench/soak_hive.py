"""The soak's hive (processes killed and restarted, RSS sampled) and its askers (the join path)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cadencia.commands.hive import HiveUpError, ready_line

PROMPTS = ["Name a primary color.", "What is the capital of France?", "Say hello in Spanish.",
           "Count to five."]
ROLES = (("sentinel", None), ("honest", None), ("liar", "noise"), ("silent", "silent"))
READY_S = 300.0  # four processes loading the model on a busy 2-core machine take a while
SAMPLE_S = 2.0  # RSS sampling period


@dataclass
class Settings:
    """One soak's shape."""

    minutes: float = 10.0  # how long the askers ask
    askers: int = 4  # concurrent askers
    max_new_tokens: int = 24  # per answer (greedy; most stop earlier at the end of turn)
    deadline_s: float = 180.0  # an ask with no outcome this long counts as hung
    kill_every_s: float = 60.0  # one kill -9 and restart per period, the first half-way in
    asks_per_join: int = 4  # an asker joins afresh after this many asks (and after a refusal)
    seed: int = 0  # the victims' draw
    model: str | None = None  # GGUF file (default: the bundled SmolLM2)


@dataclass
class Member:
    """One process of the hive, across its restarts."""

    role: str
    cmd: list[str]
    port: int
    proc: asyncio.subprocess.Process | None = None
    live: bool = False  # ready and not killed since
    restarts: int = 0
    rss: dict[int, int] = field(default_factory=dict)  # minute -> peak RSS bytes

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@dataclass
class Tally:
    """What the askers saw."""

    attempted: int = 0
    answered: int = 0
    correct: int = 0
    verified: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # reason -> count
    hung: list[str] = field(default_factory=list)  # where each ask with no outcome waited
    failed: list[str] = field(default_factory=list)  # errors with no reason a user could act on
    wrong: list[str] = field(default_factory=list)
    retried: int = 0  # answers asked again because an audit found a lie after it was used
    hedges: int = 0
    failovers: int = 0
    seconds: list[float] = field(default_factory=list)  # per answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reason_of(exc: BaseException) -> str | None:
    """A refusal's reason with the ids and numbers that differ between asks folded, or None
    when the error is not one the hive states (not a ValueError subclass with a message)."""
    if not isinstance(exc, ValueError) or not str(exc).strip():
        return None
    text = re.sub(r"\b[0-9a-f]{8,}\b", "<id>", str(exc).splitlines()[0])
    text = re.sub(r"ws://[^\s,;)]+", "<url>", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return f"{type(exc).__name__}: {text[:160]}"


def where(task: asyncio.Task[Any]) -> str:
    """Where a stuck task waits: its chain of awaited coroutines, `function:line` outside in."""
    out = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        out.append(f"{frame.f_code.co_qualname}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " > ".join(out[-8:]) or "?"


def rss_of(pid: int) -> int:
    """RSS of `pid` and its children (a node's compute process, where it runs one)."""
    try:
        p = psutil.Process(pid)
        return p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
    except psutil.Error:
        return 0


class Soak:
    """The hive's processes, the askers, the killer and the sampler of one soak."""

    def __init__(self, settings: Settings, base: Path) -> None:
        from hive_core.model.locate import resolve_model_path

        self.s = settings
        self.base = base
        self.path = resolve_model_path(settings.model)
        self.rng = random.Random(settings.seed)  # the victims: the same draw for a seed
        self.entries = random.Random(settings.seed + 1)  # where askers join (timing-dependent)
        self.tally = Tally()
        self.kills: list[str] = []
        self.asker_rss: dict[int, int] = {}
        self.t0 = 0.0
        self.members = [self._member(role, fault) for role, fault in ROLES]
        first = self.members[0].url
        for m in self.members[1:]:  # nodes fall back on any other entry when one is down
            for other in self.members:
                if other is not m:
                    m.cmd += ["--join", first if other is self.members[0] else other.url]

    def _member(self, role: str, fault: str | None) -> Member:
        port = free_port()
        cmd = ["sentinel"] if role == "sentinel" else ["node"]
        cmd += ["--listen", f"127.0.0.1:{port}", "--data-dir", str(self.base / role),
                "--serve", f"{self.path.name[:128]}:0-{self.n_layers}/{self.n_layers}",
                "--model", str(self.path), "--weights", "packed", "--threads", "1", "--json",
                "--parent-pid", str(os.getpid()), "--tflops", "1"]
        if role == "sentinel":
            cmd.append("--no-stun")
        if fault:
            cmd += ["--fault", fault]
        return Member(role, cmd, port)

    @property
    def n_layers(self) -> int:
        from hive_core.model.gguf_file import GGUFModelFile

        return GGUFModelFile(self.path).config.n_layers

    def minute(self) -> int:
        return int((time.monotonic() - self.t0) // 60)

    async def start(self, m: Member) -> None:
        from hive_core.mesh.layout import die_with_parent

        log = self.base / f"{m.role}.log"
        with log.open("ab") as err:  # each run's stderr, kept for a failed start's message
            m.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cadencia", *m.cmd, stdout=asyncio.subprocess.PIPE,
                stderr=err, stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent())
        try:
            await ready_line(m.proc, m.role, READY_S)
        except HiveUpError as exc:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            raise RuntimeError(f"{exc}: {tail[0][:300]}") from None
        m.live = True
        assert m.proc.stdout is not None
        asyncio.ensure_future(m.proc.stdout.read())  # drain: a full pipe would block it

    async def stop_all(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.returncode is None:
                m.proc.send_signal(signal.SIGTERM)
        for m in self.members:
            if m.proc is not None:
                try:
                    await asyncio.wait_for(m.proc.wait(), 10)
                except TimeoutError:
                    m.proc.kill()
                    await m.proc.wait()

    async def killer(self, end: float) -> None:
        """One SIGKILL and restart per period, the victim drawn among the live members."""
        wake = self.t0 + self.s.kill_every_s / 2
        while wake < end:
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            wake += self.s.kill_every_s
            live = [m for m in self.members if m.live and m.proc is not None]
            if not live:
                continue
            m = self.rng.choice(live)
            assert m.proc is not None
            m.live = False
            m.proc.kill()
            await m.proc.wait()
            took = time.monotonic()
            try:
                await self.start(m)
            except (RuntimeError, TimeoutError) as exc:
                self.kills.append(f"{m.role}: restart failed: {exc}")
                continue
            m.restarts += 1
            self.kills.append(f"{m.role} at {took - self.t0:.0f} s, back in "
                              f"{time.monotonic() - took:.1f} s")
            print(f"soak: killed and restarted the {self.kills[-1]}", file=sys.stderr, flush=True)

    async def sampler(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            minute = self.minute()
            for m in self.members:
                if m.proc is not None and m.proc.returncode is None:
                    m.rss[minute] = max(m.rss.get(minute, 0), rss_of(m.proc.pid))
            # This process alone: its children are the members, counted in their own rows.
            own = psutil.Process().memory_info().rss
            self.asker_rss[minute] = max(self.asker_rss.get(minute, 0), own)
            try:
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
            except TimeoutError:
                pass


class Asker:
    """One asker: a client through the join path, kept for a few asks, dropped on a refusal."""

    def __init__(self, soak: Soak, k: int, part: Any, file: Any, want: dict[str, list[int]],
                 prompt_ids: dict[str, list[int]], stop_ids: Any) -> None:
        self.soak, self.k, self.part, self.file = soak, k, part, file
        self.want, self.prompt_ids, self.stop_ids = want, prompt_ids, stop_ids
        self.hive: Any = None
        self.client: Any = None
        self.uses = 0

    async def drop(self) -> None:
        client, hive, self.client, self.hive = self.client, self.hive, None, None
        if client is not None:
            await asyncio.to_thread(client.close)
        if hive is not None:
            try:
                await asyncio.wait_for(hive.close(), 30)
            except TimeoutError:
                self.soak.tally.failed.append("closing an asker's mesh node hung")

    async def ask(self, prompt: str) -> tuple[list[int], Any]:
        from hive_core.exec import generate_hive
        from hive_core.exec.join import connect, join_hive

        if self.client is None or self.uses >= self.soak.s.asks_per_join:
            await self.drop()
            entries = [m.url for m in self.soak.members if m.live] or [self.soak.members[0].url]
            self.hive = await join_hive(self.soak.entries.choice(entries), timeout_s=15)
            self.client = await connect(self.hive, self.file, self.part, replicas=2,
                                        timeout_s=15)
            self.uses = 0
        self.uses += 1
        for attempt in range(2):  # as `cadencia ask`: again once if an audit found a lie late
            session = self.client.new_session()
            g = await generate_hive(session, self.prompt_ids[prompt],
                                    max_new_tokens=self.soak.s.max_new_tokens,
                                    context_length=self.file.config.context_length,
                                    stop_ids=self.stop_ids)
            await session.finish()
            if not session.tainted or attempt:
                break
            self.soak.tally.retried += 1
        return g.new_ids, session

    async def loop(self, end: float) -> None:
        t = self.soak.tally
        i = self.k
        while time.monotonic() < end:
            prompt = PROMPTS[i % len(PROMPTS)]
            i += 1
            t.attempted += 1
            t0 = time.monotonic()
            task = asyncio.ensure_future(self.ask(prompt))
            await asyncio.wait([task], timeout=self.soak.s.deadline_s)
            if not task.done():
                t.hung.append(f"{prompt!r} at {t0 - self.soak.t0:.0f} s: " + where(task))
                task.cancel()
                await asyncio.wait([task])
                await self.drop()
                continue
            try:
                ids, session = task.result()
            except Exception as exc:  # noqa: BLE001 - every outcome is counted, none ends the soak
                reason = reason_of(exc)
                if reason is None:
                    t.failed.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                else:
                    t.refused[reason] += 1
                await self.drop()
                await asyncio.sleep(1.0)  # as a user would, before asking again
                continue
            t.answered += 1
            t.seconds.append(time.monotonic() - t0)
            t.hedges += session.hedges
            t.failovers += session.failovers
            t.verified += bool(session.verified)
            if ids == self.want[prompt]:
                t.correct += 1
            else:
                t.wrong.append(f"{prompt!r}: {ids} != {self.want[prompt]}")
        await self.drop()


def references(path: Path, max_new_tokens: int) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(prompt ids, local greedy answer) of each prompt, as `cadencia generate` answers it."""
    from hive_core.model.chat import prompt_ids
    from hive_core.model.generation import generate
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.packed_run import chunked
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(path)
    tok = GGUFTokenizer(file)
    pipe = LocalPipeline.load_single(file, weights="packed")
    ids = {p: prompt_ids(file, tok, p) for p in PROMPTS}
    want = {p: generate(chunked(pipe.new_session(kv_factory("fp32")).forward), ids[p],
                        max_new_tokens=max_new_tokens, context_length=file.config.context_length,
                        stop_ids=tok.stop_ids).new_ids for p in PROMPTS}
    return ids, want
