"""The shard server: serves stages of one model to askers over a `Node`.

It loads only the layers it is asked for (a preloaded range, others on first request),
computes on one dedicated worker thread (never on the asyncio loop, and in request order),
or with `compute_process` in a child process that thread forwards each step to (a game's
hosted shards: the model's Python then never holds the frame loop's interpreter lock),
keeps one KV cache per (client, session, stage) in fp32 or INT4, evicts idle sessions,
serves the hops of a cascade (`exec.cascade_node`: computed, forwarded to the next node,
committed to the asker) beside the asker's own requests (the star),
holds its matrices in one weights mode (packed, fp32 or bf16) that it reports to askers,
signs a Merkle root of every output, seals outputs for the asker only, and keeps the
work receipts clients sign for it. What it does is published on its live event feed
(`hive_core.exec.feed`) for spectators: node ids, session ids, layers, timings, roots only.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from hive_core.base.stage import Stage, StageError
from hive_core.economy import ReceiptError, WorkReceipt
from hive_core.events import (
    EventSink,
    HopSent,
    ReceiptIssued,
    ReplicaAnswered,
    StageStarted,
    trial_id,
)
from hive_core.exec.cascade_node import CascadeNode
from hive_core.exec.errors import ExecError
from hive_core.exec.faults import Fault
from hive_core.exec.feed import EventFeed, FeedConfig, hop_time_s
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.kernel import kernel_class, load_stages, model_digest
from hive_core.exec.open_sessions import OpenSessions
from hive_core.exec.priority import compute_pool
from hive_core.exec.stage_host import HostConfig, StageHost, StepRefused
from hive_core.exec.stage_worker import StageWorker, WorkerConfig
from hive_core.exec.wire import (
    WEIGHTS_TO_WIRE,
    WireError,
    WireRangeError,
    attested_kv,
    from_wire,
    seal_context,
    stage_of,
    to_wire,
)
from hive_core.mesh.node import Node
from hive_core.mesh.peers import Link
from hive_core.model.errors import ModelError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.protocol.inference import (
    EndSession,
    KvKind,
    ReceiptMsg,
    RunCascade,
    RunStage,
    ShardInfo,
    ShardQuery,
    StageResult,
)
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tensor import Dtype
from hive_core.protocol.trust import Attestation
from hive_core.trust import TrustError, attest, box_between, open_sealed, seal

logger = logging.getLogger(__name__)
T = TypeVar("T")
SERVED_SESSIONS = 4096  # (asker, session) pairs remembered: receipts for others are refused
KEPT_RECEIPTS = 4096  # receipts kept on the server for status and tests (hooks get every one)


@dataclass(frozen=True)
class ServerConfig:
    """How a shard server behaves."""

    preload: tuple[Stage, ...] = ()  # stages loaded at start; others load on first request
    load_on_demand: bool = True  # refuse stages outside `preload` when False
    idle_evict_s: float = 300.0  # a session unused this long loses its caches
    max_sessions: int = 256  # oldest session is evicted beyond this
    fault: Fault | None = None  # TEST TOOL: misbehave on purpose
    fault_seed: int = 0
    tflops: float = 0.0  # reported in ShardInfo (from the Health Vector)
    free_ram_mb: float = 0.0
    on_ac: bool = True
    feed: FeedConfig = field(default_factory=FeedConfig)  # limits of the live event feed for spectators
    compute_nice: int = 0  # OS priority of the compute thread (the game uses 10: frames first)
    weights: str = "fp32"  # how matrices are held: packed | fp32 | bf16 (`hive_core.model.modes`)
    compute_process: bool = False  # weights, caches and compute in a child process at compute_nice
    compute_gate: FrameGate | None = None  # a game's frame gate: compute waits while a frame renders
    kernel_path: str = ""  # TEST TOOL: packed matrices on this kernel path (avx2, portable, int4)
    allow_dequant: bool = False  # packed: dequantise a matrix no kernel here multiplies

    def __post_init__(self) -> None:
        if self.weights not in WEIGHTS_TO_WIRE:
            raise ValueError(f"weights mode must be one of {', '.join(WEIGHTS_TO_WIRE)}, "
                             f"got {self.weights!r}")


@dataclass
class ServedStats:
    """What this server did, for status output and tests."""

    requests: int = 0
    errors: int = 0
    evicted: int = 0
    loaded_stages: list[str] = field(default_factory=list)  # by a child process: preloads only


class ShardServer:
    """Serves RunStage / ShardQuery / EndSession / ReceiptMsg on `node`."""

    class State(enum.Enum):
        SERVING = "serving"  # answers requests (from construction: preloads come with start)
        CRASHED = "crashed"  # an injected fault killed it: silent, links dropped
        CLOSED = "closed"  # closed by its owner; final

    def __init__(self, node: Node, model: GGUFModelFile, config: ServerConfig | None = None) -> None:
        self.node = node
        self.model = model
        self.config = config or ServerConfig()
        cfg = self.config
        self.host: StageHost | StageWorker
        if cfg.compute_process:
            self.host = StageWorker(WorkerConfig(
                str(model.path), weights=cfg.weights, load_on_demand=cfg.load_on_demand,
                max_sessions=cfg.max_sessions, fault=str(cfg.fault) if cfg.fault else "",
                fault_seed=cfg.fault_seed, nice=cfg.compute_nice, threads=torch.get_num_threads(),
                gate_fd=cfg.compute_gate.fd if cfg.compute_gate is not None else -1,
                allow_dequant=cfg.allow_dequant))
        else:
            self.host = StageHost(model, HostConfig(cfg.weights, cfg.load_on_demand,
                                                    cfg.max_sessions, cfg.fault, cfg.fault_seed,
                                                    cfg.allow_dequant),
                                  pause=cfg.compute_gate.wait if cfg.compute_gate is not None else None)
        # What its attestations name: the model file and the kernel class computing here.
        self.model_digest = model_digest(model.path)
        self.kernel = kernel_class(cfg.weights, cfg.kernel_path or None)
        self.receipts: list[WorkReceipt] = []  # the last KEPT_RECEIPTS or so
        self._served: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()  # (asker, session)
        # Ended when their asker's last link goes, if the asker did not end them.
        self.open_sessions = OpenSessions(self.config.max_sessions, SERVED_SESSIONS)
        self.receipt_hooks: list[Callable[[WorkReceipt], None]] = []  # called per kept receipt
        self.feed = EventFeed(node, self.config.feed)
        # What this node does, logged and shown to its spectators.
        self.events = EventSink([self.feed.publish])
        self.stats = ServedStats(loaded_stages=self.host.loaded_stages)
        self.state = ShardServer.State.SERVING
        self._pool = compute_pool("shard", self.config.compute_nice, self.config.compute_gate)
        self._boxes: dict[bytes, object] = {}
        self._evictor: asyncio.Task[None] | None = None
        node.on(RunStage, self._on_run)
        node.on(ShardQuery, self._on_query)
        node.on(EndSession, self._on_end)
        node.on(ReceiptMsg, self._on_receipt)
        node.on_link_lost.append(self._on_link_lost)
        self.cascade = CascadeNode(self)  # hops of a cascade: computed, forwarded, reported
        node.on(RunCascade, self.cascade.on_run)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the preloaded stages (off the loop) and start idle eviction."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self.host.ready)  # a child process is up
        for stage in self.config.preload:
            await loop.run_in_executor(self._pool, self.host.load, stage)
        if self.config.kernel_path and isinstance(self.host, StageHost):
            self.host.executors = [await loop.run_in_executor(
                self._pool, load_stages, self.model, ex.stages, self.config.weights,
                self.config.kernel_path) for ex in self.host.executors]
        self._evictor = self.node.spawn(self._evict_loop(), name="evict sessions")

    def load(self, stage: Stage) -> None:
        """Load a stage's weights now (blocking: call before serving, or off the loop).

        The load runs on the compute thread, like every stage step: torch's OpenMP threads
        spin between parallel regions only while one thread of the process drives them (a
        second team, e.g. the main thread's from loading, throttles both: see the worker-thread
        row of `bench/bench_packed.py`).
        """
        self._pool.submit(self.host.load, stage).result()

    @property
    def executors(self) -> list[ShardExecutor]:
        """The loaded stages' executors (none here when a child process holds them)."""
        return self.host.executors if isinstance(self.host, StageHost) else []

    @property
    def sessions(self) -> dict[tuple[bytes, bytes, Stage], object]:
        """Sessions with caches here (none when a child process holds them)."""
        return self.host.sessions if isinstance(self.host, StageHost) else {}  # type: ignore[return-value]

    def _set_state(self, state: ShardServer.State) -> None:
        if state is self.state or self.state is ShardServer.State.CLOSED:
            return
        logger.info("%s: %s -> %s", self.node, self.state.value, state.value)
        self.state = state

    @property
    def serving(self) -> bool:
        return self.state is ShardServer.State.SERVING

    @property
    def crashed(self) -> bool:
        return self.state is ShardServer.State.CRASHED

    async def close(self) -> None:
        self._set_state(ShardServer.State.CLOSED)
        if self._evictor is not None:
            self._evictor.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.host, StageWorker):
            await asyncio.get_running_loop().run_in_executor(None, self.host.close)
        await self.feed.close()

    # -- handlers --------------------------------------------------------------------

    def admit(self, asker: bytes, session_id: bytes) -> bool:
        """Count a request of `asker`'s session (receipts for it are kept) and play an injected
        crash or silence; False when it must not be served."""
        if not self.serving:
            return False
        fault = self.config.fault
        if fault is not None and fault.should_crash(self.stats.requests):
            logger.warning("%s: fault %s: crashing now", self.node, fault)
            self._set_state(ShardServer.State.CRASHED)
            self.node.spawn(self._crash(), name="crash")
            return False
        self.stats.requests += 1
        self._served[(asker, session_id)] = None
        self._served.move_to_end((asker, session_id))
        while len(self._served) > SERVED_SESSIONS:
            self._served.popitem(last=False)
        self.open_sessions.opened(asker, session_id)
        if fault is not None and fault.silent:
            return False  # takes the work and never answers
        if self._evictor is None:  # started lazily when the node was built outside a loop
            self._evictor = self.node.spawn(self._evict_loop(), name="evict sessions")
        return True

    def _on_run(self, peer: bytes, msg: RunStage) -> asyncio.Future[None] | None:
        if not self.admit(peer, msg.session_id):
            return None
        link = self.node.peers.best(peer)
        if link is None:
            return None
        # Submitted before any await, so a session's steps compute in arrival order.
        job = asyncio.get_running_loop().run_in_executor(
            self._pool, self._serve, peer, link.public_key, msg)
        if msg.layer_end > msg.layer_start:
            self.events(StageStarted(msg.session_id, self.node.node_id, msg.layer_start,
                                     msg.layer_end, msg.part, time.monotonic()))
        return asyncio.ensure_future(self._reply(peer, msg, job))

    async def _reply(self, peer: bytes, msg: RunStage, job: asyncio.Future[StageResult]) -> None:
        rpc_id = msg.rpc_id
        try:
            result = await job
        except Exception as exc:  # a bug must still answer, never leave the asker waiting
            logger.exception("%s: stage failed", self.node)
            result = _failure(rpc_id, ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}", 0)
        if not result.ok:
            self.stats.errors += 1
        else:
            self._publish_served(peer, msg, result)
        try:
            await self.node.send(peer, result)
        except ConnectionError as exc:
            logger.info("%s: could not answer %s: %s", self.node, peer.hex()[:12], exc)

    def _publish_served(self, peer: bytes, msg: RunStage, result: StageResult) -> None:
        me = self.node.node_id
        now = time.monotonic()
        if peer != me:
            hop_s = hop_time_s(self.node, peer)
            self.events(HopSent(msg.session_id, peer, me, max(0.0, now - 2 * hop_s), hop_s,
                                len(msg.payload)))
        if result.attestation is not None:
            self.events(ReplicaAnswered(msg.session_id, trial_id(msg.step, msg.layer_start, msg.part),
                                        me, result.attestation.output_root, now))

    async def _crash(self) -> None:
        """Die abruptly: every link drops without a reply (what a killed process looks like)."""
        for link in self.node.peers.all():
            await link.channel.close()
            if link.rtc is not None:
                await link.rtc.close()

    def _on_query(self, peer: bytes, msg: ShardQuery) -> asyncio.Future[None] | None:
        if not self.serving:
            return None
        cfg = self.model.config
        pre = self.config.preload
        start, end = (pre[0].start, pre[-1].end) if pre else (0, 0)
        info = ShardInfo(msg.rpc_id, self.model.path.name[:128], cfg.n_layers, cfg.hidden,
                         start, end, float(self.config.tflops), float(self.config.free_ram_mb),
                         self.config.on_ac, WEIGHTS_TO_WIRE[self.config.weights], self.kernel,
                         self.model_digest)
        return asyncio.ensure_future(self.node.send(peer, info))

    def _on_end(self, peer: bytes, msg: EndSession) -> asyncio.Future[None] | None:
        if not self.serving:
            return None
        self.open_sessions.ended(peer, msg.session_id)
        # Sessions are only touched on the worker thread.
        return asyncio.get_running_loop().run_in_executor(self._pool, self._end, peer, msg.session_id)

    def _end(self, peer: bytes, *session_ids: bytes) -> None:
        try:
            for session_id in session_ids:
                self.host.end(peer, session_id)
        except ExecError as exc:  # a dead worker: its caches are gone anyway
            logger.info("%s: could not end a session: %s", self.node, exc)

    def _on_link_lost(self, link: Link) -> None:
        """The asker's last link went: its sessions cannot go on (an asker that comes back
        rebuilds from position 0), so their caches go now, not at the idle eviction minutes
        later; an asker's key is often one it throws away after a few asks."""
        peer = link.node_id
        if self.node.peers.best(peer) is not None:
            return
        self._boxes.pop(peer, None)
        left = self.open_sessions.gone(peer)
        if left and self.state is not ShardServer.State.CLOSED:
            self._pool.submit(self._end, peer, *left)

    def _on_receipt(self, peer: bytes, msg: ReceiptMsg) -> None:
        try:
            receipt = WorkReceipt.parse(msg.receipt)
            receipt.verify()
        except ReceiptError as exc:
            logger.info("%s: refused receipt from %s: %s", self.node, peer.hex()[:12], exc)
            return
        if receipt.worker_id != self.node.node_id or receipt.client_id != peer:
            logger.info("%s: refused a receipt not between %s and us", self.node, peer.hex()[:12])
            return
        if (peer, receipt.session_id) not in self._served:
            logger.info("%s: refused a receipt from %s for a session it never ran here",
                        self.node, peer.hex()[:12])
            return
        self.receipts.append(receipt)
        if len(self.receipts) > 2 * KEPT_RECEIPTS:  # trimmed in batches: one copy per batch
            del self.receipts[:-KEPT_RECEIPTS]
        self.events(ReceiptIssued(receipt, time.monotonic()))
        for hook in list(self.receipt_hooks):
            try:
                hook(receipt)
            except Exception:  # a game's ledger bug must not break serving
                logger.exception("%s: receipt hook failed", self.node)

    # -- compute (worker thread) -----------------------------------------------------

    def compute(self, fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
        """`fn(*args)` on the compute thread, after the jobs submitted before it."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def box(self, peer: bytes, public_key: bytes) -> object:
        """The seal box between this node and `peer` (kept per peer)."""
        box = self._boxes.get(peer)
        if box is None:
            box = self._boxes[peer] = box_between(self.node.identity, public_key)
        return box

    def _serve(self, peer: bytes, public_key: bytes, msg: RunStage) -> StageResult:
        try:
            return self._compute(peer, public_key, msg)
        except (StepRefused, StageError, TrustError, ModelError, ExecError) as exc:
            code, held = refusal_code(exc)
            return _failure(msg.rpc_id, code, str(exc), held)
        finally:
            self.stats.evicted = self.host.evicted

    def _compute(self, peer: bytes, public_key: bytes, msg: RunStage) -> StageResult:
        stage = stage_of(msg.layer_start, msg.layer_end, msg.part)
        stage.check(self.model.config.n_layers)  # a range past the model is refused before decrypting
        box = self.box(peer, public_key)
        data = open_sealed(box, msg.payload,  # type: ignore[arg-type]
                           seal_context(b"in", msg.session_id, msg.step, stage, msg.position))
        att, out_wire, compute_s = self.step(peer, msg.session_id, msg.step, stage, msg.position,
                                             msg.tokens, msg.kv, msg.wire, msg.attest, data)
        sealed = seal(box, out_wire,  # type: ignore[arg-type]
                      seal_context(b"out", msg.session_id, msg.step, stage, msg.position))
        return StageResult(msg.rpc_id, ErrorCode.OK, "", msg.position + msg.tokens, compute_s, att,
                           sealed)

    def step(self, asker: bytes, session_id: bytes, step: int, stage: Stage, position: int,
             tokens: int, kv: KvKind, wire: Dtype, sign: bool,
             data: bytes) -> tuple[Attestation | None, bytes, float]:
        """One step of `asker`'s session on the compute thread, from the input as it travelled
        (`wire` bytes): (the attestation, the output's `wire` bytes, compute seconds). What is
        attested is the float32 image of the bytes received and sent (`exec.wire`)."""
        hidden = self.model.config.hidden
        raw = data if wire is Dtype.F32 else from_wire(data, tokens, hidden, wire).tobytes()
        out_bytes, compute_s = self.host.step((asker, session_id, stage), position, tokens, kv, raw)
        out_wire = out_bytes
        if wire is not Dtype.F32:
            out_wire = to_wire(from_wire(out_bytes, tokens, hidden, Dtype.F32), wire)
            out_bytes = from_wire(out_wire, tokens, hidden, wire).tobytes()
        if self.config.compute_gate is not None:
            self.config.compute_gate.wait()  # hashing, signing and sealing between frames too
        att = None
        if sign:
            att = attest(self.node.identity, session_id=session_id, step=step,
                         layer_start=stage.start, layer_end=stage.end, part=stage.part,
                         position=position, tokens=tokens, input_bytes=raw,
                         output_bytes=out_bytes, model=self.model_digest,
                         kv=attested_kv(kv, wire), kernel=self.kernel)
        return att, out_wire, compute_s

    # -- eviction --------------------------------------------------------------------

    def evict_idle(self, now: float | None = None) -> int:
        """Drop sessions idle longer than `idle_evict_s`; returns how many went."""
        now = time.monotonic() if now is None else now
        count = self.host.evict_idle(self.config.idle_evict_s, now)
        self.stats.evicted = self.host.evicted
        return count

    async def _evict_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.config.idle_evict_s / 4))
            await asyncio.get_running_loop().run_in_executor(self._pool, self.evict_idle)


def refusal_code(exc: Exception) -> tuple[ErrorCode, int]:
    """The code a failed step answers with, and the positions the cache holds (a rebuild)."""
    if isinstance(exc, StepRefused):
        return ErrorCode.NEEDS_REBUILD, exc.held
    if isinstance(exc, WireRangeError):  # the asker's choice of wire, not a bad request
        return ErrorCode.UNSUPPORTED, 0
    if isinstance(exc, (StageError, WireError)):
        return ErrorCode.MALFORMED, 0
    if isinstance(exc, TrustError):
        return ErrorCode.UNAUTHENTICATED, 0
    if isinstance(exc, ModelError):
        return ErrorCode.UNSUPPORTED, 0
    return ErrorCode.INTERNAL, 0


def _failure(rpc_id: int, code: ErrorCode, error: str, cache_len: int) -> StageResult:
    return StageResult(rpc_id, code, error[:256], cache_len, 0.0, None, b"")
