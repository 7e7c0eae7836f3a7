"""What answers a request: the hive (through the one join path) or the model on this device.

An engine hands out a `Seat` per request: a session that the shared generation loop
(`hive_core.exec.generate_hive`) drives token by token, and a `close` that frees it, on the
hive by ending its sessions on every node that served it (also when the client hung up
mid-answer) and signing the work receipts. `HiveEngine` connects lazily and again after a
route breaks, so a hive that lost the node of a stage answers 503 until one is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch

from hive_core.api.errors import Unavailable
from hive_core.events import Consumer
from hive_core.exec.client import HiveClient, HiveSession
from hive_core.exec.errors import ExecError
from hive_core.exec.generate import Session
from hive_core.exec.priority import compute_pool
from hive_core.mesh.node import PeerUnavailable
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed_run import PREFILL_CHUNK
from hive_core.model.pipeline import LocalPipeline, PipelineSession
from hive_core.protocol.inference import EndSession

logger = logging.getLogger(__name__)


class Seat(Protocol):
    """One request's session and how to let it go."""

    @property
    def session(self) -> Session: ...

    def failed(self, why: str) -> None:
        """The session failed for want of nodes: the engine routes again next time."""
        ...

    async def close(self) -> dict[str, Any]:
        """Free the session; the answer's `cadencia` extension (route, verification, receipts)."""
        ...


class Engine(Protocol):
    """Where answers come from."""

    mode: str  # "hive" or "local"
    file: GGUFModelFile

    async def seat(self) -> Seat: ...

    def describe(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


# -- on this device ---------------------------------------------------------------------


class _LocalSession:
    """A `PipelineSession` whose steps run on the engine's compute thread, prefill in chunks."""

    def __init__(self, inner: PipelineSession, pool: ThreadPoolExecutor) -> None:
        self.inner, self.pool = inner, pool

    @property
    def position(self) -> int:
        return self.inner.position

    @position.setter
    def position(self, value: int) -> None:
        self.inner.position = value

    def _forward(self, ids: list[int], all_logits: bool) -> torch.Tensor:
        outs = [self.inner.forward(ids[lo:lo + PREFILL_CHUNK], all_logits=all_logits)
                for lo in range(0, len(ids), PREFILL_CHUNK)]
        return torch.cat(outs) if all_logits else outs[-1]

    async def forward(self, ids: Sequence[int], *, all_logits: bool = False) -> torch.Tensor:
        job = partial(self._forward, list(ids), all_logits)
        return await asyncio.get_running_loop().run_in_executor(self.pool, job)

    def rollback(self, position: int) -> None:
        for caches in self.inner.caches:
            for cache in caches.values():
                cache.truncate(position)
        self.inner.position = position


@dataclass
class _LocalSeat:
    session: _LocalSession

    def failed(self, why: str) -> None:
        pass

    async def close(self) -> dict[str, Any]:
        return {"mode": "local", "route": [], "verified": None, "slashed": [], "receipts": 0}


class LocalEngine:
    """The whole model on this device, computed on one thread of its own (`--local`)."""

    mode = "local"

    def __init__(self, file: GGUFModelFile, pipeline: LocalPipeline, pool: ThreadPoolExecutor,
                 weights: str, kv: str = "fp32") -> None:
        self.file, self.pipeline, self.pool, self.weights = file, pipeline, pool, weights
        self.kv = kv_factory(kv)

    @classmethod
    async def load(cls, file: GGUFModelFile, *, weights: str, kv: str = "fp32") -> LocalEngine:
        # The thread that loads the weights computes with them (torch's threads spin only for
        # the thread that drove them: see hive_core.exec.client.load_local).
        pool = compute_pool("api-local")
        try:
            pipeline = await asyncio.get_running_loop().run_in_executor(
                pool, partial(LocalPipeline.load_single, file, weights=weights))
        except BaseException:
            pool.shutdown(wait=False)
            raise
        return cls(file, pipeline, pool, weights, kv)

    async def seat(self) -> Seat:
        return _LocalSeat(_LocalSession(self.pipeline.new_session(self.kv), self.pool))

    def describe(self) -> dict[str, Any]:
        n = self.file.config.n_layers
        return {"mode": "local", "stages": [{"layers": [0, n], "nodes": ["local"],
                                             "weights": self.weights}]}

    async def close(self) -> None:
        self.pool.shutdown(wait=False)


# -- through the hive -------------------------------------------------------------------

class Connector(Protocol):
    """Routes a client over a hive (`hive_core.api.connect`); owns what it joined or built."""

    async def connect(self, on_event: Consumer) -> HiveClient: ...

    async def close(self) -> None: ...


class _HiveSeat:
    def __init__(self, engine: HiveEngine, client: HiveClient) -> None:
        self.engine, self.client = engine, client
        self.session: HiveSession = client.new_session()
        engine.on_session(self.session.session_id)

    def failed(self, why: str) -> None:
        self.engine.broken(self.client, why)

    async def close(self) -> dict[str, Any]:
        s, client = self.session, self.client
        try:
            receipts = len(await s.finish())
        except (ExecError, PeerUnavailable, ConnectionError) as exc:
            logger.info("finishing session %s: %s", s.session_id.hex()[:8], exc)
            receipts = 0
        # finish() ends the session on the nodes that did work; a node whose step was still
        # in flight when the client hung up holds a cache too: end it everywhere.
        for node in {n for st in s.stages for n in [*st.nodes, *st.work, *st.failed]}:
            try:
                await client.node.send(node, EndSession(s.session_id))
            except (PeerUnavailable, ConnectionError):
                pass
        return {"mode": "hive", "route": s.route(), "verified": s.verified,
                "slashed": sorted(n.hex() for n in client.reputation.slashed),
                "receipts": receipts, "failovers": s.failovers}


class HiveEngine:
    """Answers through a hive: `connector.connect(on_event)` returns a routed `HiveClient`
    (join.py's `connect`, or an in-process hive); it is called on first use and after a
    route broke."""

    mode = "hive"

    def __init__(self, file: GGUFModelFile, connector: Connector, *,
                 on_event: Consumer | None = None, retry_s: float = 2.0) -> None:
        self.file = file
        self.connector = connector
        self.on_event = on_event or (lambda _e: None)
        self.retry_s = retry_s  # after a failed connect, refuse at once for this long
        self.client: HiveClient | None = None
        self.on_route: Callable[[], None] = lambda: None  # called after each new route
        self.on_session: Callable[[bytes], None] = lambda _s: None  # each new session's id
        self._lock = asyncio.Lock()
        self._failed_at = -1e9
        self._failure = ""

    async def _connected(self) -> HiveClient:
        async with self._lock:
            if self.client is not None:
                return self.client
            if time.monotonic() - self._failed_at < self.retry_s:
                raise Unavailable(self._failure, code="hive_unavailable")
            try:
                self.client = await self.connector.connect(self.on_event)
            except (ExecError, ConnectionError, OSError, TimeoutError) as exc:
                self._failed_at = time.monotonic()
                self._failure = f"the hive cannot answer: {exc}"
                raise Unavailable(self._failure, code="hive_unavailable") from None
            self.on_route()
            return self.client

    def broken(self, client: HiveClient, why: str) -> None:
        """A session on `client` failed for want of nodes: route again on the next request."""
        if self.client is client:
            logger.info("route broken (%s): reconnecting on the next request", why)
            self.client = None

    async def seat(self) -> Seat:
        return _HiveSeat(self, await self._connected())

    async def warm(self) -> None:
        """Route now (Unavailable if the hive cannot answer yet)."""
        await self._connected()

    def describe(self) -> dict[str, Any]:
        client = self.client
        if client is None:
            return {"mode": "hive", "stages": []}
        return {"mode": "hive", "asker": client.node.node_id.hex(),
                "stages": [{"layers": [ps.stage.start, ps.stage.end],
                            "nodes": [n.hex() for n in ps.nodes], "weights": mode}
                           for ps, mode in zip(client.plan.stages, client.stage_weights,
                                               strict=True)]}

    async def close(self) -> None:
        self.client = None
        await self.connector.close()
