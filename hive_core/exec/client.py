"""The asker's side of distributed inference: a session driving stages across the hive.

The asker keeps the tokenizer, the embedding, its first and last layers, the LM head and
sampling; only hidden states travel, sealed for the one node that must read them, and no
node sees raw embeddings or the states the head reads. Each stage goes to all of its
replicas at once (`verdicts.StageVerifier`): answers are compared per token row (bit for
bit within a kernel class), a step that a replica leaves unanswered is hedged to a spare,
and disagreement is settled by recomputing the disputed steps (`hive_core.exec.replay`), so
a liar is slashed on evidence anyone can replay. Stages with a single replica are audited
while the answer is decoded and at its end (`audit_stream`, `audit`). After the session, the
asker signs a work receipt per worker and stage (`pay`), with the asker's own measurements.

Replicas are compared only with replicas holding their weights in the same mode (packed,
fp32, bf16): a plan that mixes modes in one stage is refused, and spares and referees are
drawn from the stage's own mode.

With `topology="cascade"` a step's hidden states go node to node instead (`exec.cascade`),
and a step the cascade cannot settle runs here as above; `wire` picks the dtype they travel in.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from hive_core.base.health import HealthRecord
from hive_core.base.ids import new_session_id
from hive_core.base.stage import Stage
from hive_core.economy import WorkReceipt
from hive_core.events import Consumer, EventSink, HopSent, StageStarted
from hive_core.exec.answer import Answer, BadAnswer, Hop, NeedsRebuild, Unavailable, check_answer
from hive_core.exec.audit_stream import AuditStream
from hive_core.exec.errors import ExecError, NoReplicaError
from hive_core.exec.feed import tell_verdict
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.heap import trim_heap
from hive_core.exec.priority import compute_pool
from hive_core.exec.session_types import ClientConfig, StageState
from hive_core.exec.verdicts import StageVerifier
from hive_core.exec.wire import round_wire, seal_context, to_wire, wire_dtype
from hive_core.mesh.node import Node, PeerUnavailable
from hive_core.model.executor import ShardExecutor
from hive_core.model.kv.factory import kv_factory
from hive_core.protocol.feed import FeedVerdict
from hive_core.protocol.inference import MAX_PAYLOAD, KvKind, RunStage, StageResult
from hive_core.protocol.tensor import Dtype
from hive_core.protocol.trust import SlashEvidence
from hive_core.sched.planner import Plan
from hive_core.trust import Ban, Replayer, ReputationBook, box_between, seal

if TYPE_CHECKING:
    from hive_core.exec.cascade import Cascade

logger = logging.getLogger(__name__)
REPLAY_STEP_BASE = 1 << 31  # step numbers of cache rebuilds never collide with real steps
T = TypeVar("T")
Publish = Callable[[SlashEvidence, bytes], None]  # (checked evidence, offender) -> gossip it


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
    """Drives sessions over `node` along `plan`; `local` holds the embedding, the head and
    the local layers.

    `weights` maps node ids to the weights mode each server reported; every stage's
    replicas must share one mode (ExecError otherwise), and a spare of another mode never
    stands in for them. `health` holds the Health records the servers published (what their
    receipts are paid by); `replayer` recomputes disputed steps; `publish` gossips verdicts.
    """

    def __init__(
        self, node: Node, local: ShardExecutor, plan: Plan, config: ClientConfig | None = None,
        *, reputation: ReputationBook | None = None, spares: Sequence[bytes] = (),
        on_event: Consumer | None = None, weights: Mapping[bytes, str] | None = None,
        pool: ThreadPoolExecutor | None = None, own_pool: bool = True,
        health: Mapping[bytes, HealthRecord] | None = None, replayer: Replayer | None = None,
        publish: Publish | None = None, n_layers: int | None = None,
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
        self.n_layers = n_layers or local.config.n_layers
        self.reputation = reputation or ReputationBook()
        if self.reputation.replayer is None:
            self.reputation.replayer = replayer
        self.spares = list(spares)
        self.health = dict(health or {})
        self.publish = publish
        self.publish_ban: Callable[[bytes, Ban], None] | None = None  # gossip a silent node's ban
        self.flushers: list[Callable[[], Awaitable[None]]] = []  # publications to wait for
        self.emit = EventSink([on_event])
        self._pool = pool or compute_pool("asker", self.config.compute_nice)
        self._boxes: dict[bytes, object] = {}
        self.wire = wire_dtype(self.config.wire)
        self._cascade: object | None = None
        node.register_reply(StageResult)
        hidden = local.config.hidden
        item = 4 if self.wire is Dtype.F32 else 2  # a 16-bit wire fits twice the rows a frame
        self.max_hop_tokens = self.config.max_hop_tokens or max(
            1, (MAX_PAYLOAD - 64) // (hidden * item))

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

    @property
    def cascade(self) -> Cascade:
        """The cascade's side of this client (it listens for the nodes' reports)."""
        from hive_core.exec.cascade import Cascade

        if not isinstance(self._cascade, Cascade):
            self._cascade = Cascade(self)
        return self._cascade

    def box(self, node_id: bytes) -> object:
        box = self._boxes.get(node_id)
        if box is None:
            link = self.node.peers.best(node_id)
            if link is None:
                raise Unavailable(f"no link to {node_id.hex()[:12]}")
            box = self._boxes[node_id] = box_between(self.node.identity, link.public_key)
        return box

    async def local_call(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the asker's compute thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def announce(self, verdicts: Sequence[FeedVerdict], to: Sequence[bytes]) -> None:
        """Send a trial's verdict to nodes that served it, whose feeds show it to spectators."""
        if to and verdicts:
            self.node.spawn(tell_verdict(self.node, list(to), list(verdicts)), name="verdict")

    async def flush(self) -> None:
        """Wait for verdicts still being published (call before the node closes)."""
        for flush in self.flushers:
            await flush()

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
        self.replays = 0  # cache rebuilds (failover, referees, hedges)
        self.failovers = 0
        self.hedges = 0  # steps sent to a spare because a replica stayed silent
        self.tainted = False  # a lie was found after its output was used: the answer may be wrong
        # Every node sent a step of this session (replicas, hedges, spares, auditors, the lost
        # ones): each holds its caches until told the session ended (`pay_session`).
        self.asked: set[bytes] = set()
        self.stages = [StageState(s.stage, list(s.nodes), weights=mode)
                       for s, mode in zip(client.plan.stages, client.stage_weights, strict=True)]
        cfg, n = client.config, client.n_layers
        k, tail = cfg.local_layers, cfg.local_tail_layers
        self.local_stage = Stage(0, k) if k > 0 else None
        self.tail_stage = Stage(n - tail, n) if tail > 0 else None
        kv = kv_factory("int4" if cfg.kv is KvKind.INT4 else "fp32")
        self.local_caches = client.local.new_caches(kv) if (k or tail) else {}
        first = self.stages[0].stage.start if self.stages else k
        last = self.stages[-1].stage.end if self.stages else n - tail
        if first != k or last != n - tail:
            raise ExecError(f"the route covers layers {first}..{last} but this asker runs "
                            f"0..{k} and {n - tail}..{n} itself")
        # Spares in an order drawn for this session: no key is always asked first.
        self.spares = sorted(dict.fromkeys([*client.spares, *client.plan.nodes]),
                             key=lambda n: hashlib.blake2b(self.session_id + n).digest())
        self.verifier = StageVerifier(self)
        self._replay_step = REPLAY_STEP_BASE
        self.local_layer_s: float | None = None  # measured seconds per row and layer here
        self.cascaded = self.fallbacks = 0  # steps the cascade carried / handed to the star
        self.audit_stream = AuditStream(self)  # single-replica stages audited while decoding

    # -- the forward pass ------------------------------------------------------------

    async def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> torch.Tensor:
        """Feed `ids` at the current position; logits of the last (or every) position."""
        ids = list(ids)
        outs = []
        n = self.client.max_hop_tokens
        for lo in range(0, len(ids), n):
            chunk = ids[lo:lo + n]
            self.audit_stream.tick()  # the rows accepted so far go to their auditors
            t0 = time.perf_counter()
            h = await self.client.local_call(self._embed, chunk)
            if self.local_stage is not None:
                per = (time.perf_counter() - t0) / (len(chunk) * self.local_stage.end)
                self.local_layer_s = per if self.local_layer_s is None else min(per, self.local_layer_s)
            x = round_wire(h.numpy(), self.client.wire)  # the inputs kept are what was sent
            try:
                if self.client.config.topology == "cascade":
                    x = await self.client.cascade.run(self, x)
                else:
                    for i in range(len(self.stages)):
                        x = await self.run_stage(i, x)
            except BaseException:
                self.rollback(self.position)  # drop this step's kept inputs: retry cleanly
                raise
            last = lo + n >= len(ids)
            if all_logits or last:
                logits = await self.client.local_call(
                    self._tail_head, torch.from_numpy(x.copy()), all_logits)
                outs.append(logits)
            elif self.tail_stage is not None:  # the tail's caches need every row
                await self.client.local_call(self._tail, torch.from_numpy(x.copy()))
            self.position += len(chunk)
            self.step += 1
        return torch.cat(outs) if all_logits else outs[-1][0]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        local = self.client.local
        with torch.inference_mode():
            h = local.embed(torch.tensor(ids, dtype=torch.long))
            if self.local_stage is not None:
                h = local.run_stage(self.local_stage, h, self.position, self.local_caches)
            return h

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        if self.tail_stage is None:
            return h
        with torch.inference_mode():
            return self.client.local.run_stage(self.tail_stage, h, self.position, self.local_caches)

    def _tail_head(self, h: torch.Tensor, every: bool) -> torch.Tensor:
        h = self._tail(h)
        with torch.inference_mode():
            return self.client.local.head(h if every else h[-1:])

    def rollback(self, position: int) -> None:
        """Forget positions from `position` on (rejected speculative tokens)."""
        if position > self.position:
            raise ValueError(f"cannot roll forward from {self.position} to {position}")
        self.position = position
        self.audit_stream.rollback(position)
        for cache in self.local_caches.values():
            if len(cache) > position:
                cache.truncate(position)
        for st in self.stages:
            st.segments = [(step, pos, xi[: position - pos], xo[: position - pos], node)
                           for step, pos, xi, xo, node in st.segments if pos < position]

    # -- one stage -------------------------------------------------------------------

    async def run_stage(self, i: int, x: np.ndarray) -> np.ndarray:
        """Stage i of the current step by the star: every replica asked, the answers judged."""
        st = self.stages[i]
        hop = Hop(self.session_id, self.step, st.stage, self.position, x.shape[0], x.tobytes())
        while True:
            st.nodes = [n for n in st.nodes if not self.client.reputation.excluded(n)]
            if not st.nodes:
                st.nodes = [await self._failover(i, hop)]
            answer = await self.verifier.run(i, hop, st.nodes)
            if answer is not None:
                break
        st.segments.append((hop.step, hop.position, x, answer.out, answer.node))
        st.steps += 1
        self.audit_stream.tick(after=answer.node)  # it has a step's time before its next
        return answer.out

    async def ask(self, node: bytes, hop: Hop, *, keep: bool = True) -> Answer:
        """Send one stage step to one replica and check its answer (`keep`: record it in the
        stage's history and work, as steps of this session are)."""
        cfg = self.client.config
        if hop.session_id == self.session_id:  # not a warm session, kept on purpose
            self.asked.add(node)
        try:
            box = self.client.box(node)
            wire = self.client.wire
            sent_bytes = hop.input_bytes if wire is Dtype.F32 else to_wire(
                np.frombuffer(hop.input_bytes, dtype="<f4").reshape(hop.tokens, -1), wire)
            payload = seal(box, sent_bytes,  # type: ignore[arg-type]
                           seal_context(b"in", hop.session_id, hop.step, hop.stage, hop.position))
            msg = RunStage(self.client.node.next_rpc_id(), hop.session_id, hop.step,
                           hop.stage.start, hop.stage.end, hop.stage.part, hop.position,
                           hop.tokens, cfg.kv, cfg.verify, payload, wire)
            sent = time.monotonic()
            result = await self.client.node.request(node, msg, timeout=cfg.request_timeout_s)
        except (PeerUnavailable, ConnectionError) as exc:
            raise Unavailable(str(exc)) from None
        took = time.monotonic() - sent
        self.client.emit(HopSent(hop.session_id, self.client.node.node_id, node, sent,
                                 max(took / 2, 1e-6), len(payload)))
        answer = check_answer(node, hop, result, box, self.client.local.config.hidden, cfg.verify,
                              took, self.client.wire)
        st = self.stages_by_stage(hop.stage)
        if keep and answer.attestation is not None:
            st.history.setdefault(node, []).append((answer.attestation, hop.input_bytes,
                                                    answer.out_bytes))
        work = st.work.setdefault(node, [0.0, 0.0])
        if work[0] == 0:
            self.client.emit(StageStarted(hop.session_id, node, hop.stage.start, hop.stage.end,
                                          hop.stage.part, time.monotonic()))
        work[0] += hop.tokens
        work[1] += took
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
        for cand in self.spares:
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
            # The hedging grace of every row so far: a silent spare (it takes the rebuild and
            # never answers) would otherwise hold the answer for the whole request timeout.
            grace = self.verifier.silent_after(i, hop.position + hop.tokens)
            try:
                await asyncio.wait_for(self.rebuild(i, spare, hop.position), grace)
            except TimeoutError:
                logger.info("spare %s did not rebuild within %.1f s", spare.hex()[:12], grace)
                self.verifier.ban_silent(spare, f"silent on a failover of {self.stages[i].stage}")
                continue
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
            hop = Hop(self.session_id, self.next_replay_step(), st.stage, lo, part.shape[0],
                      part.tobytes())
            await self.ask(node, hop)

    def next_replay_step(self) -> int:
        """A step number for a rebuild or audit request (never one of the real steps')."""
        self._replay_step += 1
        return self._replay_step

    # -- the end of a session ----------------------------------------------------------

    async def finish(self) -> list[WorkReceipt]:
        """Judge lagging replicas, audit single-replica stages, free remote caches, then sign
        and send one receipt per worker and stage."""
        from hive_core.exec.audit import audit_session
        from hive_core.exec.pay import pay_session

        await self.verifier.drain(self.client.config.late_wait_s)
        if self.client.config.verify:
            await audit_session(self)
        receipts = await pay_session(self)
        await self.client.flush()
        await self.client.local_call(trim_heap)  # the session's buffers back to the OS
        return receipts

    @property
    def verified(self) -> bool:
        """True only if every stage was verified (each step confirmed by agreeing replicas or
        a referee, or an audit recomputed all of them) and no lie slipped into the answer."""
        return not self.tainted and all(
            st.steps > 0 and (st.verified_steps == st.steps or st.audited) for st in self.stages)

    def route(self) -> list[dict[str, object]]:
        return [{"layers": [st.stage.start, st.stage.end], "part": st.stage.part.value,
                 "nodes": [n.hex() for n in st.nodes], "weights": st.weights}
                for st in self.stages]
