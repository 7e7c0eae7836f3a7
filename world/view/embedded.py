"""An embedded local hive for `cadencia play` and `cadencia demo`, until `hive_core.exec` lands.

Four nodes in this process: the model split into one stage per node (this device, "you",
keeps the embedding, head and sampling and runs the first stage). Hidden states travel
between nodes as real protocol frames (`TensorChunk`, chunked, encoded) over in-memory
channels whose latency emulates the given RTTs; each stage runs on a worker thread so
the event loop keeps rendering. The last stage runs on three replicas whose outputs are
Merkle-hashed and judged with `hive_core.trust`; an outlier is slashed. Every step feeds
the `LiveWorld` the view draws.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hive_core.economy import WorkReceipt
from hive_core.economy.efficiency import Part as WorkPart
from hive_core.mesh.identity import Identity
from hive_core.mesh.memchannel import LinkProfile, MemoryChannel, memory_pair
from hive_core.model.chat import ChatTemplate
from hive_core.model.executor import ShardExecutor
from hive_core.model.generation import check_prompt
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv_factory import kv_factory, new_caches
from hive_core.model.sampling import Sampler
from hive_core.model.stage import Stage, even_stages
from hive_core.model.tokenizer import GGUFTokenizer
from hive_core.protocol.codec import decode, encode
from hive_core.protocol.tensor import Reassembler, chunk_tensor
from hive_core.trust import judge, merkle_root
from world.layout import HiveMap

from .live import LiveWorld

NODES = ("you", "oak", "elm", "ash")
# Emulated round trips between the four nodes, in ms (a neighbourhood hive on home links).
RTT_MS = np.array([[0, 6, 18, 32], [6, 0, 14, 26], [18, 14, 0, 12], [32, 26, 12, 0]], float)
BYZANTINE = "oak"  # its replica of the last stage adds noise, so the demo shows a slashing


@dataclass
class AskResult:
    """What one ask produced."""

    text: str
    new_ids: list[int]
    tokens_per_s: float
    hops: int
    slashed: tuple[str, ...]
    receipts: tuple[WorkReceipt, ...]  # signed by the asker, one per node that did verified work


class LocalHive:
    """The hive, loaded; `ask` runs one prompt through it."""

    def __init__(self, file: GGUFModelFile, world: LiveWorld, *, kv: str = "fp32",
                 byzantine: str | None = BYZANTINE, rtt_scale: float = 1.0, you: Identity | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _m: None)
        self.file, self.world, self.kv_kind = file, world, kv
        self.config = file.config
        self.tokenizer = GGUFTokenizer(file)
        self.stages = dict(zip(NODES, even_stages(self.config.n_layers, len(NODES))))
        say(f"loading {len(NODES)} shards of {file.path.name if hasattr(file, 'path') else 'the model'}")
        self.executors: dict[str, ShardExecutor] = {}
        for node, stage in self.stages.items():
            first = node == NODES[0]
            self.executors[node] = ShardExecutor.load(file, [stage], embed=first, head=first)
        last_node, last = NODES[-1], self.stages[NODES[-1]]
        # Replicas of the last stage on two more nodes (sharing the weights in this process).
        self.replicas = [last_node, NODES[1], NODES[2]]
        self.replica_ex = {n: ShardExecutor(self.config, self.executors[last_node].weights, [last], torch.float32)
                           for n in self.replicas}
        self.byzantine = byzantine
        # "you" is this device's node (the player's identity when playing); prompts are asked by
        # a separate, per-hive client identity, which signs the work receipts.
        self.client = Identity.generate()
        self.identities = {n: (you or Identity.generate()) if n == NODES[0] else Identity.generate() for n in NODES}
        self.battery = {n: [1.0, 0.9, 0.6, 1.0][k] for k, n in enumerate(NODES)}
        self.slashed: set[str] = set()
        self.links: dict[tuple[str, str], tuple[MemoryChannel, MemoryChannel]] = {}
        for (i, a), (j, b) in itertools.combinations(enumerate(NODES), 2):
            profile = LinkProfile(latency_s=rtt_scale * RTT_MS[i, j] / 2000.0)
            self.links[(a, b)] = memory_pair(f"{a}-{b}", profile, seed=i * 10 + j)
        self.hop_ms = {pair: rtt_scale * RTT_MS[NODES.index(pair[0]), NODES.index(pair[1])] / 2
                       for pair in self.links}
        self._streams = itertools.count(1)
        self.frames_sent = 0  # protocol frames (tensor chunks) over the emulated links
        snap = HiveMap(dim=2).update(NODES, RTT_MS)
        world.set_map(snap.as_dict(), {(a, b): RTT_MS[i, j] for (i, a), (j, b)
                                       in itertools.combinations(enumerate(NODES), 2)})
        for k, node in enumerate(NODES):
            world.health(node, tflops=[1.2, 2.5, 0.8, 1.8][k], battery=self.battery[node],
                         efficiency=[1.0, 0.95, 0.55, 0.9][k])
        world.status(sharding=" | ".join(f"{n} {s.start}-{s.end - 1}" for n, s in self.stages.items())
                     + f" (x{len(self.replicas)} last)",
                     routing=f"{len(NODES)} nodes, local RTT {RTT_MS[0, 1]:.0f} ms (emulated), "
                             f"pulses x{world.slow_motion:g} slow motion",
                     kv_cache=kv, consensus="idle")

    # -- transport --------------------------------------------------------------------------

    async def _send(self, src: str, dst: str, hidden: torch.Tensor, stream: int, position: int) -> torch.Tensor:
        """Move `hidden` from `src` to `dst` as protocol frames; returns what `dst` received."""
        if src == dst:
            return hidden
        pair = (src, dst) if (src, dst) in self.links else (dst, src)
        a, b = self.links[pair]
        out, inn = (a, b) if pair == (src, dst) else (b, a)
        t0 = time.monotonic()
        self.world.hop_sent(src, dst, t0, self.hop_ms[pair] / 1000.0)
        chunks = list(chunk_tensor(hidden.numpy(), stream_id=stream, sequence=position))
        for chunk in chunks:
            await out.send(encode(chunk))
            self.frames_sent += 1
        reasm = Reassembler()
        got = None
        while got is None:
            got = reasm.feed(decode(await inn.recv()))
        took = (time.monotonic() - t0) * 1000.0
        self.hop_ms[pair] = 0.7 * self.hop_ms[pair] + 0.3 * took  # the next pulse flies at this pace
        return torch.from_numpy(got.to_numpy().copy())

    # -- one ask ----------------------------------------------------------------------------

    def prompt_ids(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        source = self.file.metadata.get("tokenizer.chat_template")
        if isinstance(source, str):
            bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
            eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
            prompt = ChatTemplate(source, bos_token=bos, eos_token=eos).render([{"role": "user", "content": prompt}])
        ids = tok.encode(prompt)
        check_prompt(ids, self.config.context_length)
        return ids

    async def ask(self, prompt: str, max_new_tokens: int = 32) -> AskResult:
        """Greedy generation through the hive, streaming pieces into the world's HUD."""
        ids = self.prompt_ids(prompt)
        kv = kv_factory(self.kv_kind)
        caches = {n: new_caches(self.stages[n].layers, kv) for n in NODES[:-1]}
        replica_caches = {n: new_caches(self.stages[NODES[-1]].layers, kv) for n in self.replicas}
        stream, sampler, text = next(self._streams), Sampler(), self.tokenizer.stream()
        self.world.status(answer="", tokens_per_s=0.0)
        new: list[int] = []
        hops, position, feed = 0, 0, ids
        self._busy: dict[tuple[str, Stage], float] = {}  # compute seconds per (node, stage) served
        t0 = time.monotonic()
        you = self.executors[NODES[0]]
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                h = you.embed(torch.tensor(feed, dtype=torch.long))
                where = NODES[0]
                for node in NODES[:-1]:
                    h = await self._send(where, node, h, stream, position)
                    self.world.stage_started(node)
                    c0 = time.perf_counter()
                    h = await asyncio.to_thread(self.executors[node].run_stage, self.stages[node], h,
                                                position, caches[node])
                    self._served(node, self.stages[node], time.perf_counter() - c0)
                    where, hops = node, hops + 1
                h = await self._consensus(where, h, stream, position, replica_caches)
                hops += 1
                position += len(feed)
                token = sampler(you.head(h[-1:])[0])
                new.append(token)
                self.world.answer_piece(text.push(token))
                self._kv_status(caches[NODES[0]])
                rate = len(new) / max(time.monotonic() - t0, 1e-6)
                self.world.status(tokens_per_s=rate)
                if token in self.tokenizer.stop_ids or position + 1 >= self.config.context_length:
                    break
                feed = [token]
        self.world.answer_piece(text.finish())
        self.world.idle()
        elapsed = max(time.monotonic() - t0, 1e-6)
        receipts = self._receipts(position)
        for r in receipts:
            if r.worker_id == self.identities[NODES[0]].node_id:
                self.world.receipt(r.reward_mc())
        return AskResult(self.tokenizer.decode(new), new, len(new) / elapsed, hops, tuple(sorted(self.slashed)),
                         receipts)

    def _served(self, node: str, stage: Stage, seconds: float) -> None:
        self._busy[(node, stage)] = self._busy.get((node, stage), 0.0) + seconds

    def _receipts(self, tokens: int) -> tuple[WorkReceipt, ...]:
        """The asker signs one receipt per node for the stages it served (slashed nodes get none)."""
        session, out = os.urandom(16), []
        for (node, stage), busy in self._busy.items():
            if node in self.slashed:
                continue
            out.append(WorkReceipt.create(
                self.client, session_id=session, worker_id=self.identities[node].node_id,
                layer_start=stage.start, layer_end=stage.end, part=WorkPart.FULL, tokens=tokens,
                wall_time_s=busy, timestamp_ms=time.time_ns() // 1_000_000, stability=1.0,
                temperature_c=None, battery_pct=100.0 * self.battery[node], on_ac=self.battery[node] >= 1.0))
        return tuple(out)

    async def _consensus(self, src: str, h: torch.Tensor, stream: int, position: int,
                         caches: dict[str, dict]) -> torch.Tensor:
        """Run the last stage on every live replica, judge their outputs, return to `you`."""
        live = [n for n in self.replicas if n not in self.slashed]
        stage = self.stages[NODES[-1]]

        async def one(node: str) -> tuple[str, torch.Tensor]:
            x = await self._send(src, node, h, stream, position)
            self.world.stage_started(node)
            c0 = time.perf_counter()
            y = await asyncio.to_thread(self.replica_ex[node].run_stage, stage, x, position, caches[node])
            self._served(node, stage, time.perf_counter() - c0)
            if node == self.byzantine:
                y = y + 0.05 * torch.randn_like(y) * y.abs().mean()  # a cheating node's wrong answer
            y = await self._send(node, NODES[0], y, stream, position)
            done = sum(1 for _ in answered) + 1
            answered.append(node)
            self.world.replica_answered(NODES[-1], done, len(live))
            return node, y

        answered: list[str] = []
        results = dict(await asyncio.gather(*(one(n) for n in live)))
        outputs = {n.encode(): results[n].numpy() for n in live}
        verdict = judge(outputs, order=[n.encode() for n in live])
        roots = {n: merkle_root(results[n].numpy().tobytes()).hex()[:8] for n in live}
        for bad in verdict.outliers:
            node = bad.decode()
            self.slashed.add(node)
            self.world.slashed(node, time.monotonic())
        if not verdict.quorum:
            self.world.status(consensus=f"no quorum among {len(live)} replicas")
            raise RuntimeError("replicas of the last stage do not agree; no quorum")
        winner = verdict.agreeing[0].decode()
        self.world.verified(NODES[-1])
        self.world.status(consensus=f"merkle {roots[winner]} verified {len(verdict.agreeing)}/{len(live)}, "
                                    f"byzantine {len(self.slashed)}")
        return results[winner]

    def _kv_status(self, caches: dict) -> None:
        held = sum(c.nbytes() for c in caches.values())
        positions = max((len(c) for c in caches.values()), default=0)
        fp16 = len(caches) * positions * self.config.kv_dim * 2 * 2
        if fp16:
            saved = 100.0 * (1 - held / fp16)
            self.world.status(kv_cache=f"{self.kv_kind} {held // 1024} KiB vs fp16 {fp16 // 1024} KiB "
                                       f"({saved:+.0f}% saved)" if saved > 0 else
                              f"{self.kv_kind} {held // 1024} KiB")
