"""The asker's side of distributed inference: a session driving stages across the hive.

The asker keeps the tokenizer, the embedding, the LM head and sampling; only hidden
states travel, sealed for the one node that must read them. Each stage goes to all of
its replicas at once: with verification on and two or more replicas, the first two
answers that agree within the tolerance are used at once, and every other answer is
judged against them (outliers are slashed with signed evidence). A replica that dies is
dropped; when none is left, a spare takes over and rebuilds the KV cache from the hop
inputs the asker kept. After the session, the asker signs a work receipt per stage.

Replicas are compared only with replicas holding their weights in the same mode (packed,
fp32, bf16): honest nodes in different modes differ by more than the tolerance, so a plan
that mixes them in one stage is refused, and spares and referees are drawn from the
stage's own mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from hive_core.base.ids import new_session_id
from hive_core.base.stage import Stage
from hive_core.economy import WorkReceipt
from hive_core.events import Consumer, EventSink, HopSent, ReceiptIssued, StageStarted
from hive_core.exec.answer import Answer, BadAnswer, Hop, NeedsRebuild, Unavailable, check_answer
from hive_core.exec.errors import ExecError, NoReplicaError
from hive_core.exec.feed import tell_verdict
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.priority import compute_pool
from hive_core.exec.verdicts import StageVerifier
from hive_core.exec.wire import seal_context
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.model.executor import ShardExecutor
from hive_core.model.kv.factory import kv_factory
from hive_core.protocol.feed import FeedVerdict
from hive_core.protocol.inference import (
    MAX_PAYLOAD,
    EndSession,
    KvKind,
    ReceiptMsg,
    RunStage,
    StageResult,
)
from hive_core.sched.planner import Plan
from hive_core.trust import DEFAULT_RTOL, ReputationBook, box_between, seal

logger = logging.getLogger(__name__)
REPLAY_STEP_BASE = 1 << 31  # step numbers of cache rebuilds never collide with real steps


@dataclass(frozen=True)
class ClientConfig:
    """How the asker dispatches and checks stages."""

    kv: KvKind = KvKind.FP32  # cache kind the shard servers keep for this session
    attest: bool = True  # ask for signed Merkle roots and compare replicas (verification)
    rtol: float = DEFAULT_RTOL  # relative L2 tolerance between replicas
    request_timeout_s: float = 120.0  # one stage request (covers a first-use weight load)
    max_hop_tokens: int = 0  # rows per request; 0: as many as fit in one frame
    late_wait_s: float = 30.0  # at the end, how long lagging replicas may still be judged
    # Layers 0..local_layers run here too (the `local` executor must hold them): the first
    # remote node then sees mixed hidden states, not embeddings it could look up as tokens.
    local_layers: int = 0
    compute_nice: int = 0  # OS priority of the local compute thread (the game uses 10)


@dataclass
class StageState:
    """One hop of the route within one session."""

    stage: Stage
    nodes: list[bytes]  # replicas still in use, primary first
    segments: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # accepted inputs
    steps: int = 0
    verified_steps: int = 0
    failed: set[bytes] = field(default_factory=set)  # nodes dropped from this stage
    weights: str | None = None  # the replicas' weights mode (None: not reported)
    work: dict[bytes, list[float]] = field(default_factory=dict)  # node -> [rows, compute s]


def load_local(load: Callable[[], ShardExecutor], nice: int = 0,
               gate: FrameGate | None = None) -> tuple[ShardExecutor, ThreadPoolExecutor]:
    """Run `load` (the asker's embedding, head and local layers) on a new compute thread and
    return it with that thread, for `HiveClient(pool=...)`: torch's OpenMP threads spin between
    parallel regions only while one thread of the process drives them, so the thread that
    loads is the thread that computes (see `ShardServer.load`). With `gate` (a game's frame
    gate) each job on that thread starts between frames."""
    pool = compute_pool("asker", nice, gate)
    try:
        return pool.submit(load).result(), pool
    except BaseException:
        pool.shutdown(wait=False)
        raise


class HiveClient:
    """Drives sessions over `node` along `plan`; `local` holds the embedding and the head.

    `weights` maps node ids to the weights mode each server reported; every stage's
    replicas must share one mode (ExecError otherwise), and a spare of another mode never
    stands in for them. Nodes missing from it are taken to be of any mode.
    """

    def __init__(
        self, node: Node, local: ShardExecutor, plan: Plan, config: ClientConfig | None = None,
        *, reputation: ReputationBook | None = None, spares: Sequence[bytes] = (),
        on_event: Consumer | None = None, weights: Mapping[bytes, str] | None = None,
        pool: ThreadPoolExecutor | None = None, own_pool: bool = True,
    ) -> None:
        """`pool`: the compute thread, when the caller loaded `local` on it (see `load_local`);
        `close` shuts it down unless `own_pool` is False (a pool kept across clients)."""
        self.node = node
        self._own_pool = own_pool or pool is None
        self.local = local
        self.plan = plan
        self.weights = dict(weights or {})
        self.stage_weights = [self._mode_of(ps.stage, ps.nodes) for ps in plan.stages]
        self.config = config or ClientConfig()
        self.reputation = reputation or ReputationBook()
        self.spares = list(spares)
        self.emit = EventSink([on_event])
        self._pool = pool or compute_pool("asker", self.config.compute_nice)
        self._boxes: dict[bytes, object] = {}
        node.register_reply(StageResult)
        hidden = local.config.hidden
        self.max_hop_tokens = self.config.max_hop_tokens or max(1, (MAX_PAYLOAD - 64) // (hidden * 4))

    def _mode_of(self, stage: Stage, nodes: Sequence[bytes]) -> str | None:
        modes = sorted({self.weights[n] for n in nodes if n in self.weights})
        if len(modes) > 1:
            raise ExecError(
                f"stage {stage}: its replicas hold weights in different modes "
                f"({', '.join(modes)}); their outputs differ by more than the replica "
                "tolerance, so honest nodes would be slashed: give each stage replicas of one mode")
        return modes[0] if modes else None

    def same_mode(self, node: bytes, mode: str | None) -> bool:
        """Whether `node` may be compared with replicas of weights mode `mode`."""
        theirs = self.weights.get(node)
        return mode is None or theirs is None or theirs == mode

    def new_session(self) -> HiveSession:
        return HiveSession(self)

    def box(self, node_id: bytes) -> object:
        box = self._boxes.get(node_id)
        if box is None:
            link = self.node.peers.best(node_id)
            if link is None:
                raise Unavailable(f"no link to {node_id.hex()[:12]}")
            box = self._boxes[node_id] = box_between(self.node.identity, link.public_key)
        return box

    async def local_call(self, fn: object, *args: object) -> torch.Tensor:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]

    def announce(self, verdicts: Sequence[FeedVerdict], to: Sequence[bytes]) -> None:
        """Send a trial's verdict to nodes that served it, whose feeds show it to spectators."""
        if to and verdicts:
            self.node.spawn(tell_verdict(self.node, list(to), list(verdicts)), name="verdict")

    def close(self) -> None:
        if self._own_pool:
            self._pool.shutdown(wait=False)


class HiveSession:
    """One sequence generated across the hive (the remote twin of `PipelineSession`)."""

    def __init__(self, client: HiveClient) -> None:
        self.client = client
        self.session_id = new_session_id()
        self.position = 0
        self.step = 0
        self.replays = 0  # cache rebuilds (failover, referees)
        self.failovers = 0
        self.stages = [StageState(s.stage, list(s.nodes), weights=mode)
                       for s, mode in zip(client.plan.stages, client.stage_weights, strict=True)]
        k = client.config.local_layers
        self.local_stage = Stage(0, k) if k > 0 else None
        kv = kv_factory("int4" if client.config.kv is KvKind.INT4 else "fp32")
        self.local_caches = client.local.new_caches(kv) if self.local_stage else {}
        first = self.stages[0].stage.start if self.stages else 0
        if first != k:
            raise ExecError(f"the route starts at layer {first} but {k} layers run locally")
        self.verifier = StageVerifier(self)
        self._replay_step = REPLAY_STEP_BASE

    # -- the forward pass ------------------------------------------------------------

    async def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> torch.Tensor:
        """Feed `ids` at the current position; logits of the last (or every) position."""
        ids = list(ids)
        outs = []
        n = self.client.max_hop_tokens
        for lo in range(0, len(ids), n):
            chunk = ids[lo:lo + n]
            h = await self.client.local_call(self._embed, chunk)
            x = np.ascontiguousarray(h.numpy(), dtype="<f4")
            try:
                for i in range(len(self.stages)):
                    x = await self._run_stage(i, x)
            except BaseException:
                self.rollback(self.position)  # drop this step's kept inputs: retry cleanly
                raise
            last = lo + n >= len(ids)
            if all_logits or last:
                rows = torch.from_numpy(x.copy()) if all_logits else torch.from_numpy(x[-1:].copy())
                outs.append(await self.client.local_call(self._head, rows))
            self.position += len(chunk)
            self.step += 1
        logits = torch.cat(outs) if all_logits else outs[-1][0]
        return logits

    def _embed(self, ids: list[int]) -> torch.Tensor:
        local = self.client.local
        with torch.inference_mode():
            h = local.embed(torch.tensor(ids, dtype=torch.long))
            if self.local_stage is not None:
                h = local.run_stage(self.local_stage, h, self.position, self.local_caches)
            return h

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.client.local.head(h)

    def rollback(self, position: int) -> None:
        """Forget positions from `position` on (rejected speculative tokens)."""
        if position > self.position:
            raise ValueError(f"cannot roll forward from {self.position} to {position}")
        self.position = position
        for cache in self.local_caches.values():
            if len(cache) > position:
                cache.truncate(position)
        for st in self.stages:
            kept = []
            for step, pos, rows in st.segments:
                if pos < position:
                    kept.append((step, pos, rows[: position - pos]))
            st.segments = kept

    # -- one stage -------------------------------------------------------------------

    async def _run_stage(self, i: int, x: np.ndarray) -> np.ndarray:
        st = self.stages[i]
        hop = Hop(self.session_id, self.step, st.stage, self.position, x.shape[0], x.tobytes())
        while True:
            st.nodes = [n for n in st.nodes if not self.client.reputation.excluded(n)]
            if not st.nodes:
                st.nodes = [await self._failover(i, hop)]
            answer = await self.verifier.run(i, hop, st.nodes)
            if answer is not None:
                break
        st.segments.append((hop.step, hop.position, x))
        st.steps += 1
        return answer.out

    async def ask(self, node: bytes, hop: Hop) -> Answer:
        """Send one stage step to one replica and check its answer."""
        cfg = self.client.config
        try:
            box = self.client.box(node)
            payload = seal(box, hop.input_bytes,  # type: ignore[arg-type]
                           seal_context(b"in", hop.session_id, hop.step, hop.stage, hop.position))
            msg = RunStage(self.client.node.next_rpc_id(), hop.session_id, hop.step,
                           hop.stage.start, hop.stage.end, hop.stage.part, hop.position,
                           hop.tokens, cfg.kv, cfg.attest, payload)
            sent = time.monotonic()
            result = await self.client.node.request(node, msg, timeout=cfg.request_timeout_s)
        except (PeerUnavailable, ConnectionError) as exc:
            raise Unavailable(str(exc)) from None
        took = time.monotonic() - sent
        self.client.emit(HopSent(hop.session_id, self.client.node.node_id, node, sent,
                                 max(took / 2, 1e-6), len(payload)))
        answer = check_answer(node, hop, result, box, self.client.local.config.hidden, cfg.attest)
        work = self.stages_by_stage(hop.stage).work.setdefault(node, [0.0, 0.0])
        if work[0] == 0:
            self.client.emit(StageStarted(hop.session_id, node, hop.stage.start, hop.stage.end,
                                          hop.stage.part, time.monotonic()))
        work[0] += hop.tokens
        work[1] += answer.compute_s
        return answer

    def stages_by_stage(self, stage: Stage) -> StageState:
        for st in self.stages:
            if st.stage == stage:
                return st
        raise KeyError(str(stage))

    # -- failover and rebuilds -------------------------------------------------------

    def spare_for(self, i: int, exclude: Sequence[bytes] = ()) -> bytes | None:
        """A connected, non-excluded node of the stage's weights mode not already serving
        stage `i`."""
        st = self.stages[i]
        for cand in [*self.client.spares, *self.client.plan.nodes]:
            if (cand not in st.nodes and cand not in exclude and cand not in st.failed
                    and self.client.same_mode(cand, st.weights)
                    and not self.client.reputation.excluded(cand)
                    and self.client.node.peers.best(cand) is not None):
                return cand
        return None

    async def _failover(self, i: int, hop: Hop) -> bytes:
        tried: list[bytes] = []
        while True:
            spare = self.spare_for(i, tried)
            if spare is None:
                mode = self.stages[i].weights
                raise NoReplicaError(f"stage {self.stages[i].stage}: every replica failed and "
                                     "no spare node" + (f" with {mode} weights" if mode else "")
                                     + " is left")
            tried.append(spare)
            try:
                await self.rebuild(i, spare, hop.position)
            except (Unavailable, BadAnswer, NeedsRebuild) as exc:
                logger.info("spare %s failed to rebuild: %s", spare.hex()[:12], exc)
                continue
            self.failovers += 1
            return spare

    async def rebuild(self, i: int, node: bytes, upto: int) -> None:
        """Give `node` this session's KV cache for stage `i` up to `upto` from kept inputs."""
        st = self.stages[i]
        self.replays += 1
        rows = [seg[2][: max(0, upto - seg[1])] for seg in st.segments if seg[1] < upto]
        if not rows or not st.stage.part.has_attention:
            return
        everything = np.concatenate(rows)
        n = self.client.max_hop_tokens
        for lo in range(0, everything.shape[0], n):
            part = np.ascontiguousarray(everything[lo:lo + n])
            self._replay_step += 1
            hop = Hop(self.session_id, self._replay_step, st.stage, lo, part.shape[0],
                      part.tobytes())
            await self.ask(node, hop)

    # -- the end of a session ----------------------------------------------------------

    async def finish(self) -> list[WorkReceipt]:
        """Judge lagging replicas, free remote caches, sign and send one receipt per stage."""
        await self.verifier.drain(self.client.config.late_wait_s)
        receipts = []
        ident = self.client.node.identity
        for st in self.stages:
            for node, (rows, compute_s) in st.work.items():
                if rows <= 0 or node in self.client.reputation.slashed:
                    continue
                if self.client.node.peers.best(node) is None:
                    continue
                r = WorkReceipt.create(
                    ident, session_id=self.session_id, worker_id=node,
                    layer_start=st.stage.start, layer_end=st.stage.end,
                    part=st.stage.part, tokens=int(rows),
                    wall_time_s=max(compute_s, 1e-6), timestamp_ms=int(time.time() * 1000),
                    stability=1.0, temperature_c=None, battery_pct=None, on_ac=True)
                receipts.append(r)
                self.client.emit(ReceiptIssued(r, time.monotonic()))
                try:
                    await self.client.node.send(node, ReceiptMsg(bytes(r)))
                    await self.client.node.send(node, EndSession(self.session_id))
                except (PeerUnavailable, ConnectionError):
                    pass
        return receipts

    @property
    def verified(self) -> bool:
        """True only if every stage was verified: each step confirmed by agreeing replicas
        (or a referee), or, with one replica, its spot check passed."""
        return all(st.steps > 0 and (st.verified_steps == st.steps or i in self.verifier.spot_checked)
                   for i, st in enumerate(self.stages))

    def route(self) -> list[dict[str, object]]:
        return [{"layers": [st.stage.start, st.stage.end], "part": st.stage.part.value,
                 "nodes": [n.hex() for n in st.nodes], "weights": st.weights}
                for st in self.stages]
