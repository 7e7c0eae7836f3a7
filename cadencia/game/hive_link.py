"""The embedded hive the game plays with: `hive_core.exec`'s in-process hive, wired to the view.

Four shard servers (two stages of the model, each on two replicas) and one spare that
referees disagreements, all holding their matrices in one weights mode, linked to the asker by authenticated in-memory mesh links with
an emulated latency; one replica may be made faulty so the game shows a slashing. Every
hive event goes to the `GameSource` (game state, pulse replay); the map comes from RTTs
the asker measures by pinging each server; prompts stream their answer into the HUD.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.hive import build_hive
from hive_core.exec.worker_fork import ForkServer
from hive_core.mesh.memchannel import LinkProfile
from hive_core.model.chat import prompt_ids
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.locate import resolve_model_path
from hive_core.model.modes import DEFAULT_WEIGHTS
from hive_core.model.tokenizer import GGUFTokenizer
from hive_core.protocol.inference import KvKind
from world.view.frame import RoadView
from world.view.game_source import GameSource

if TYPE_CHECKING:
    from hive_core.exec.hive import InProcessHive

N_SERVERS, REPLICAS, SPARES = 4, 2, 1
LINK_MS = 8.0  # emulated one-way latency of every asker link, ms
COMPUTE_NICE = 19  # hosted shards compute at the lowest OS priority: the frame loop goes first
# ...and in child processes of their own, so their Python never holds the frame loop's GIL
COMPUTE_PROCESS = True
# torch threads in this process and in each stage worker. Five workers and the asker share the
# cores with the frame loop: with two OpenMP threads each, idle threads spin and fight the
# working ones (on 2 cores the workers burned 7 times the CPU per token, 5.6 -> 12 tok/s
# with one thread each, measured by the demo's own run).
THREADS = 1


def star_layout(hub: bytes, ring: list[tuple[bytes, float]]) -> dict[bytes, tuple[float, float]]:
    """Map positions for a hive measured only from its asker (the embedded hive: servers link
    to the asker alone). Its RTTs say how far each server is from the asker and nothing about
    where servers are from each other, so MDS would pile them up; here they stand on a ring
    around the asker in pipeline order (stage by stage, then the spares), each a little
    further out the slower its link measured."""
    if not ring:
        return {hub: (0.0, 0.0)}
    slowest = max(max(ms for _, ms in ring), 1e-9)
    radius = 10.0  # map units: only ratios matter to the view
    out = {hub: (0.0, 0.0)}
    for k, (node, ms) in enumerate(ring):
        angle = math.pi / 2 - 2 * math.pi * k / len(ring)
        r = radius * (1.0 + 0.35 * max(ms, 0.0) / slowest)
        out[node] = (r * math.cos(angle), r * math.sin(angle))
    return out


@dataclass(frozen=True)
class AskResult:
    """One answered prompt."""

    text: str
    new_ids: list[int]
    tokens_per_s: float
    verified: bool  # every stage step confirmed by agreeing replicas or the referee
    receipts: tuple[Any, ...]  # WorkReceipt, signed by the asker, one per worker and stage
    slashed: tuple[str, ...]  # hex ids of nodes slashed so far


class EmbeddedHive:
    """Start it, then `ask`; `close` when done."""

    def __init__(self, source: GameSource, say: Callable[[str], None] = lambda _m: None,
                 forks: ForkServer | None = None) -> None:
        """`forks`: a fork server for the stage workers started early (`early_fork_server`)."""
        self.source, self.say = source, say
        self.forks = forks
        self.hive: InProcessHive | None = None
        self.compute_process = COMPUTE_PROCESS  # False: the servers compute on threads here
        self.gate = FrameGate()  # the app holds it while a frame renders; hosted compute waits
        self._file: GGUFModelFile | None = None
        self._tokenizer: GGUFTokenizer | None = None

    @property
    def file(self) -> GGUFModelFile:
        if self._file is None:
            raise RuntimeError("the hive is not started")
        return self._file

    @property
    def tokenizer(self) -> GGUFTokenizer:
        if self._tokenizer is None:
            raise RuntimeError("the hive is not started")
        return self._tokenizer

    def _hive(self) -> InProcessHive:
        if self.hive is None:
            raise RuntimeError("the hive is not started")
        return self.hive

    @property
    def node_ids(self) -> list[bytes]:
        hive = self._hive()
        return [hive.asker.node_id, *hive.node_ids]

    async def start(self, model_path: str | Path | None = None, *, file: GGUFModelFile | None = None,
                    faulty: bool = True,
                    kv: str = "fp32", link_ms: float = LINK_MS, host: Any = None,
                    transport: str = "memory", weights: str | None = None,
                    verify: bool = True) -> None:
        """Build the hive; with `host` (an `Identity`: the player's) server 0 runs under that key,
        so the stage it serves is the player's work and its receipts name the player.

        `transport`: "memory" (authenticated in-memory links with `link_ms` of emulated latency)
        or "rtc" (real aiortc data channels on loopback; `link_ms` does not apply).
        `weights`: how the servers and the asker hold the matrices (packed, fp32, bf16;
        default `hive_core.model.modes.DEFAULT_WEIGHTS`).
        `verify` False skips verification (signed roots, replica comparison, audits): the
        liar's answers are then taken as they come."""

        weights = weights or DEFAULT_WEIGHTS
        t0 = time.perf_counter()
        self._file = file or GGUFModelFile(resolve_model_path(model_path))
        self._tokenizer = GGUFTokenizer(self._file)
        self.say(f"starting a hive of {N_SERVERS} shard servers + {SPARES} referee on "
                 f"{self.file.config.n_layers} layers ({weights} weights) ...")
        self.hive = await build_hive(
            self.file.path, N_SERVERS, replicas=REPLICAS, spares=SPARES,
            faults={1: Fault.parse("noise")} if faulty else None, model=self.file,
            transport=transport, on_event=self._hook,
            profile=LinkProfile(latency_s=link_ms / 1000.0) if transport == "memory" else None,
            client_config=ClientConfig(kv={"fp32": KvKind.FP32, "int4": KvKind.INT4}[kv],
                                       compute_nice=COMPUTE_NICE, verify=verify),
            compute_nice=COMPUTE_NICE, compute_process=self.compute_process,
            compute_gate=self.gate, weights=weights,
            server_identities={0: host} if host is not None else None, fork_server=self.forks)
        self.forks = None  # closed once the servers were built
        await self._map()
        self._status(kv, weights, f"emulated {link_ms:g} ms links" if transport == "memory"
                     else "aiortc data channels on loopback")
        self.say(f"hive ready in {time.perf_counter() - t0:.1f}s")

    def _hook(self, event: object) -> None:
        self.source.on_event(event, time.monotonic())

    async def _map(self, pings: int = 3) -> None:
        """Roads carry the RTTs the asker measures by pinging each server; districts stand on
        a ring around the asker (`star_layout`: servers see only the asker, so there is no
        server-to-server distance for MDS to place them by)."""
        hive = self._hive()
        asker = hive.asker.node_id
        roads, rtt = [], {}
        for node in hive.node_ids:
            link = hive.asker.peers.best(node)
            samples = [await hive.asker.ping(link) for _ in range(pings)] if link is not None else []
            if samples:
                rtt[node] = float(np.median(samples))
                roads.append(RoadView(asker.hex(), node.hex(), rtt[node]))
        self.source.roads = tuple(roads)
        order = [n for ps in hive.client.plan.stages for n in ps.nodes]
        order += [n for n in hive.node_ids if n not in order]  # spares: the referee
        self.source.state.set_layout(star_layout(asker, [(n, rtt.get(n, 0.0)) for n in order]))

    def _status(self, kv: str, weights: str, links: str) -> None:
        hive = self._hive()
        # The plan's own spans: the asker keeps the first and last layers (ClientConfig).
        sharding = " | ".join(f"L{ps.stage.start}-{ps.stage.end - 1}: "
                              + "+".join(n.hex()[:6] for n in ps.nodes)
                              for ps in hive.client.plan.stages)
        rtts = [r.rtt_ms for r in self.source.roads]
        self.source.hud.set(
            sharding=f"{sharding} (full blocks, x{REPLICAS}, {weights} weights)",
            routing=f"{len(self.node_ids)} nodes, RTT {min(rtts):.1f}-{max(rtts):.1f} ms ({links})",
            kv_cache=f"{kv} on the shard servers")

    def prompt_ids(self, prompt: str) -> list[int]:
        return prompt_ids(self.file, self.tokenizer, prompt)

    async def ask(self, prompt: str, max_new_tokens: int = 32) -> AskResult:
        """Greedy generation through the hive, the answer streaming into the HUD."""
        hive = self._hive()
        return await ask_through(hive.client, self.file, self.tokenizer, self.source, prompt, max_new_tokens)

    async def close(self) -> None:
        if self.forks is not None:  # never started: it exits once its socket closes
            self.forks.close()
            self.forks = None
        if self.hive is not None:
            await self.hive.close()
            self.hive = None
        self.gate.close()  # open for good: a frame loop still running no longer holds compute


async def ask_through(client: Any, file: GGUFModelFile, tokenizer: GGUFTokenizer, source: GameSource,
                      prompt: str, max_new_tokens: int) -> AskResult:
    """One greedy answer from `client` (a `hive_core.exec.HiveClient`), streamed into the HUD;
    the session's receipts are signed and sent at the end."""

    ids = prompt_ids(file, tokenizer, prompt)
    hud, stream = source.hud, tokenizer.stream()
    hud.set(answer="", tokens_per_s=0.0)
    session = client.new_session()
    first, count = [0.0], [0]

    def on_token(token: int) -> None:
        # The decode rate, as `ask` reports it: tokens after the first, per second since it
        # came (the prompt's prefill before it is not decode).
        count[0] += 1
        now = time.perf_counter()
        if count[0] == 1:
            first[0] = now
        hud.append_answer(stream.push(token))
        if count[0] > 1:
            hud.set(tokens_per_s=(count[0] - 1) / max(now - first[0], 1e-6))

    gen = await generate_hive(session, ids, max_new_tokens=max_new_tokens,
                              context_length=file.config.context_length,
                              stop_ids=tokenizer.stop_ids, on_token=on_token)
    hud.append_answer(stream.finish())
    hud.set(tokens_per_s=gen.tokens_per_s)  # the answer's own figure, once it is in
    receipts = tuple(await session.finish())
    slashed = tuple(sorted(n.hex() for n in client.reputation.slashed))
    return AskResult(tokenizer.decode(gen.new_ids), list(gen.new_ids), gen.tokens_per_s,
                     session.verified, receipts, slashed)
