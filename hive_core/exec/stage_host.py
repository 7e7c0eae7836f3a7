"""The model half of a shard server: stage weights, one KV cache set per session, faults.

`StageHost` runs one stage step on hidden-state bytes and keeps the session's caches; the
server around it does the rest (links, sealing, attestations, receipts). It runs where the
server's compute runs: on the server's worker thread, or inside a child worker process
(`hive_core.exec.stage_worker`) when the server shares its process with a game's frames.

Memory: a node holds the layers it serves (`load`: its ``--serve`` spans) as the file's pages
and its sessions' KV caches, which grow with use. A stage outside those spans (a spare's
failover, an audit's recomputation) is loaded when asked for and let go when another one is,
or when no session runs it any more: one such stage at a time, its pages dropped, so a node
never comes to hold the whole model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from hive_core.base.stage import Stage
from hive_core.exec.errors import ExecError
from hive_core.exec.faults import Fault
from hive_core.exec.heap import trim_heap
from hive_core.exec.wire import hidden_bytes, hidden_from_bytes
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.cache import KVCache
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed.mapped import streaming
from hive_core.protocol.inference import KvKind
from hive_core.sched.memory import MemoryBudget

KV_NAMES = {KvKind.FP32: "fp32", KvKind.INT4: "int4"}
SessionKey = tuple[bytes, bytes, Stage]  # (asker node id, session id, stage)


class StepRefused(ExecError):
    """The step cannot run as asked (the asker must rebuild); `held` is the cache's length."""

    def __init__(self, message: str, held: int) -> None:
        super().__init__(message)
        self.held = held


@dataclass
class _Session:
    caches: dict[int, KVCache]
    last_used: float
    tokens: int = 0  # rows served (prompt + generated, including rolled-back drafts)
    compute_s: float = 0.0
    last_out: torch.Tensor | None = None  # for the "stale" fault


@dataclass(frozen=True)
class HostConfig:
    """What a StageHost needs from the server's config."""

    weights: str = "fp32"  # how matrices are held: packed | fp32 | bf16
    load_on_demand: bool = True  # refuse stages outside the first loaded ones when False
    max_sessions: int = 256  # oldest session is evicted beyond this
    fault: Fault | None = None  # TEST TOOL: misbehave on purpose
    fault_seed: int = 0
    allow_dequant: bool = False  # packed: dequantise a matrix no kernel here multiplies


def _covers(outer: Stage, inner: Stage) -> bool:
    """Whether `outer` runs every layer part `inner` does."""
    return (outer.start <= inner.start and inner.end <= outer.end
            and (outer.part.has_attention or not inner.part.has_attention)
            and (outer.part.has_mlp or not inner.part.has_mlp))


class StageHost:
    """Executors of the stages loaded so far and the sessions' caches (one thread at a time)."""

    def __init__(self, model: GGUFModelFile, config: HostConfig | None = None,
                 pause: Callable[[], object] | None = None) -> None:
        """`pause` is called before each layer of a step (a `FrameGate.wait`: a game's
        hosted compute yields to its frames)."""
        self.model = model
        self.config = config or HostConfig()
        self.pause = pause
        self.executors: list[ShardExecutor] = []
        self.sessions: dict[SessionKey, _Session] = {}
        self.loaded_stages: list[str] = []
        self.evicted = 0
        self.served: list[Stage] = []  # the stages `load` was asked for: held for good
        self._passing: ShardExecutor | None = None  # one stage outside them, held while asked
        self.budget: MemoryBudget | None = None  # the node's --max-memory: loads past it refused
        self._gen = torch.Generator().manual_seed(self.config.fault_seed)

    def executor_for(self, stage: Stage) -> ShardExecutor:
        stage.check(self.model.config.n_layers)
        for ex in self.executors:
            w = ex.weights
            if all((not stage.part.has_attention or layer in w.attention)
                   and (not stage.part.has_mlp or layer in w.mlp) for layer in stage.layers):
                return ex
        if self.executors and not self.config.load_on_demand:
            raise ExecError(f"stage {stage} is not served here")
        passing = self._outside(stage)
        if passing:
            self._let_go()
        if self.budget is not None:
            self.budget.admit(stage)
        try:
            ex = ShardExecutor.load(self.model, [stage], weights=self.config.weights,
                                    allow_dequant=self.config.allow_dequant)
        except BaseException:
            if self.budget is not None:
                self.budget.release(stage)
            raise
        self.executors.append(ex)
        self.loaded_stages.append(str(stage))
        if passing:
            self._passing = ex
        return ex

    def _outside(self, stage: Stage) -> bool:
        """Whether `stage` lies outside the stages this node serves (held only while asked)."""
        return bool(self.served) and not any(_covers(s, stage) for s in self.served)

    def _let_go(self) -> None:
        """Drop the stage held outside the served ones, and its pages."""
        ex, self._passing = self._passing, None
        if ex is not None and ex in self.executors:
            self.executors.remove(ex)
            ex.weights.release()
            if self.budget is not None:
                for stage in ex.stages:
                    self.budget.release(stage)

    def ready(self) -> None:
        """Nothing to wait for here (a `StageWorker` waits for its child process)."""

    def load(self, stage: Stage) -> None:
        """Load `stage`'s weights now (if no loaded executor holds them) and hold them for
        good: one of the stages this node serves."""
        self.served.append(stage)
        ex = self.executor_for(stage)
        if ex is self._passing:
            self._passing = None

    def step(self, key: SessionKey, position: int, tokens: int, kv: KvKind,
             raw: bytes) -> tuple[bytes, float]:
        """Run `key`'s stage on `raw` hidden states (float32 rows) at `position`: the output
        bytes and the compute seconds. Raises StepRefused, ExecError or ModelError."""
        stage = key[2]
        # Many rows of a stage this node does not serve (an audit, a rebuild): streamed, so
        # its pages come and go a slice of a matrix at a time instead of adding the stage's.
        stream = streaming if tokens > 1 and self._outside(stage) else nullcontext
        with stream():
            ex = self.executor_for(stage)
        hidden = torch.from_numpy(hidden_from_bytes(raw, tokens, self.model.config.hidden).copy())
        now = time.monotonic()
        sess = self.sessions.get(key)
        if sess is None:
            if position != 0 and stage.part.has_attention:
                raise StepRefused("unknown session: rebuild from position 0", 0)
            factory = kv_factory(KV_NAMES[kv])
            caches = ex.new_caches(factory) if stage.part.has_attention else {}
            sess = self.sessions[key] = _Session(
                {layer: caches[layer] for layer in stage.layers} if caches else {}, now)
            self._evict_excess()
        held = len(next(iter(sess.caches.values()))) if sess.caches else position
        if position > held:
            raise StepRefused(f"cache holds {held} positions, input starts at {position}: "
                              "rebuild", held)
        for cache in sess.caches.values():
            if len(cache) > position:
                cache.truncate(position)  # rejected speculative tokens
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), stream():
                out = ex.run_stage(stage, hidden, position, sess.caches, self.pause)
        except Exception:
            for cache in sess.caches.values():
                cache.truncate(position)
            raise
        if self.config.fault is not None:
            out = self.config.fault.corrupt(out, hidden, sess.last_out, self._gen)
            sess.last_out = out
        compute_s = time.perf_counter() - t0
        sess.last_used = time.monotonic()
        sess.tokens += tokens
        sess.compute_s += compute_s
        return hidden_bytes(out), compute_s

    def end(self, peer: bytes, session_id: bytes) -> None:
        """Forget every cache of `peer`'s session."""
        keys = [k for k in self.sessions if k[0] == peer and k[1] == session_id]
        for key in keys:
            del self.sessions[key]
        self._let_go_unused()
        if keys:
            trim_heap()  # the caches' pages back to the OS (`exec.heap`)

    def evict_idle(self, idle_s: float, now: float) -> int:
        """Drop sessions unused for more than `idle_s` at monotonic time `now`; how many went."""
        stale = [k for k, s in self.sessions.items() if now - s.last_used > idle_s]
        for k in stale:
            del self.sessions[k]
        self.evicted += len(stale)
        self._let_go_unused()
        if stale:
            trim_heap()
        return len(stale)

    def _let_go_unused(self) -> None:
        """Drop the stage held outside the served ones once no session runs a stage outside
        them (an audit's or a failover's session ended)."""
        if self._passing is not None and all(
                any(_covers(s, key[2]) for s in self.served) for key in self.sessions):
            self._let_go()

    def _evict_excess(self) -> None:
        while len(self.sessions) > self.config.max_sessions:
            oldest = min(self.sessions, key=lambda k: self.sessions[k].last_used)
            del self.sessions[oldest]
            self.evicted += 1
