"""A shard server's side of the cascade: check a signed route, compute its hop, seal the output
to the next hop's nodes and forward it, and report the signed commitment to the asker.

A node forwards only when the asker's signed route names it as its hop's carrier (the hop's
first node), only to the next hop's nodes (each must be a peer it holds a link to under the
listed key, or itself: then it hands the output over here), and each (asker, session, step,
hop) only once: one asker request moves at most
the route's length of hops, so nobody can use the hive to amplify traffic. Whatever it
refuses is answered to the asker with a typed code (`CascadeRefused`), and the asker runs
that step by the star.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hive_core.base.codec import encode_struct
from hive_core.base.identity import Identity, IdentityError, node_id_of, verify
from hive_core.base.stage import Stage
from hive_core.events import HopSent, ReplicaAnswered, StageStarted, trial_id
from hive_core.exec.errors import ExecError
from hive_core.exec.feed import hop_time_s
from hive_core.exec.wire import seal_context, stage_of
from hive_core.mesh.node import PeerUnavailable
from hive_core.protocol.inference import CascadeHop, CascadeResult, CascadeRoute, RunCascade
from hive_core.protocol.messages import ErrorCode
from hive_core.trust import open_sealed, seal

if TYPE_CHECKING:
    from hive_core.exec.server import ShardServer

logger = logging.getLogger(__name__)
ROUTE_CONTEXT = b"cadencia/cascade-route/v1"
REMEMBERED_HOPS = 4096  # (asker, session, step, hop) served: a replayed request is refused


class CascadeRefused(ExecError):
    """A cascade request this node will not serve: its route is not signed by the asker, does
    not name this node or the sender, was served already, or names a next node it cannot reach."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def route_bytes(route: CascadeRoute) -> bytes:
    """What the asker's signature covers."""
    return ROUTE_CONTEXT + encode_struct(replace(route, signature=bytes(64)))


def sign_route(identity: Identity, route: CascadeRoute) -> CascadeRoute:
    """`route` signed by the asker `identity` (its key must be the route's `asker_key`)."""
    if route.asker_key != identity.public_key:
        raise ValueError("a cascade route is signed by the asker it names")
    return replace(route, signature=identity.sign(route_bytes(route)))


def check_route(route: CascadeRoute) -> None:
    """CascadeRefused unless the asker named in `route` signed it."""
    try:
        verify(route.asker_key, route_bytes(route), route.signature)
    except IdentityError:
        raise CascadeRefused(ErrorCode.UNAUTHENTICATED,
                             "the cascade route is not signed by its asker") from None


def hop_stage(hop: CascadeHop) -> Stage:
    return stage_of(hop.layer_start, hop.layer_end, hop.part)


@dataclass(frozen=True)
class Admitted:
    """A checked request: whose session it is, and where the output goes next."""

    asker: bytes
    sender_key: bytes
    stage: Stage
    carrier: bool  # this node carries the hop's output on (and back to the asker)
    targets: tuple[tuple[bytes, bytes], ...]  # next hop's (node id, key); empty at the end


class CascadeNode:
    """Serves RunCascade for `server` (its compute thread, caches, keys and faults)."""

    def __init__(self, server: ShardServer) -> None:
        self.server = server
        self._seen: OrderedDict[tuple[bytes, bytes, int, int], None] = OrderedDict()
        self.forwarded = 0  # hops this node carried on (tests, status)
        self.refused = 0  # requests refused before computing

    def on_run(self, peer: bytes, msg: RunCascade) -> asyncio.Future[None] | None:
        route = msg.route
        asker = node_id_of(route.asker_key)
        if not self.server.admit(asker, route.session_id):
            return None
        try:
            ok = self.check(peer, msg)
        except CascadeRefused as exc:
            self.refused += 1
            logger.info("%s: refused a cascade hop from %s: %s", self.server.node,
                        peer.hex()[:12], exc)
            return asyncio.ensure_future(self._report(asker, _refusal(msg, exc.code, str(exc))))
        job = self.server.compute(self._compute, msg, ok)
        self.server.events(StageStarted(route.session_id, self.server.node.node_id,
                                        ok.stage.start, ok.stage.end, ok.stage.part,
                                        time.monotonic()))
        return asyncio.ensure_future(self._finish(msg, ok, job))

    def check(self, peer: bytes, msg: RunCascade) -> Admitted:
        """The request's checks, in the order that costs a forger the least of our time."""
        route = msg.route
        hop = route.hops[msg.index]
        me = self.server.node.identity.public_key
        if me not in hop.nodes:
            raise CascadeRefused(ErrorCode.UNAUTHENTICATED,
                                 f"hop {msg.index} of the route does not name this node")
        asker = node_id_of(route.asker_key)
        sender_key = route.asker_key if msg.index == 0 else route.hops[msg.index - 1].nodes[0]
        if node_id_of(sender_key) != peer:
            raise CascadeRefused(ErrorCode.UNAUTHENTICATED,
                                 f"hop {msg.index} was sent by {peer.hex()[:12]}, whom the "
                                 "route does not name as its sender")
        check_route(route)
        key = (asker, route.session_id, route.step, msg.index)
        if key in self._seen:
            raise CascadeRefused(ErrorCode.REPLAYED, f"hop {msg.index} of step {route.step} "
                                 "was served already")
        carrier = hop.nodes[0] == me
        targets: list[tuple[bytes, bytes]] = []
        if carrier and msg.index + 1 < len(route.hops):
            for k in route.hops[msg.index + 1].nodes:
                nid = node_id_of(k)
                if k == me:  # this node serves the next stage too: handed over here
                    targets.append((nid, k))
                    continue
                link = self.server.node.peers.best(nid)
                if link is None or link.public_key != k:
                    raise CascadeRefused(ErrorCode.NOT_FOUND,
                                         f"told to forward to {nid.hex()[:12]}, a node this "
                                         "one has no link to")
                targets.append((nid, k))
        self._seen[key] = None
        while len(self._seen) > REMEMBERED_HOPS:
            self._seen.popitem(last=False)
        return Admitted(asker, sender_key, hop_stage(hop), carrier, tuple(targets))

    def _compute(self, msg: RunCascade, ok: Admitted) -> tuple[CascadeResult, list[tuple[bytes, RunCascade]]]:
        """On the compute thread: the step, its seals for the next hop and the asker."""
        from hive_core.exec.server import refusal_code

        srv, route = self.server, msg.route
        try:
            ok.stage.check(srv.model.config.n_layers)
            box = srv.box(node_id_of(ok.sender_key), ok.sender_key)
            data = open_sealed(box, msg.payload,  # type: ignore[arg-type]
                               seal_context(b"in", route.session_id, route.step, ok.stage,
                                            route.position))
            att, out, compute_s = srv.step(ok.asker, route.session_id, route.step, ok.stage,
                                           route.position, route.tokens, route.kv, route.wire,
                                           route.attest, data)
        except Exception as exc:  # every failure is answered with its code
            code, held = refusal_code(exc)
            if code is ErrorCode.INTERNAL and not isinstance(exc, ExecError):
                logger.exception("%s: cascade hop failed", srv.node)
            return _refusal(msg, code, str(exc), held), []
        finally:
            srv.stats.evicted = srv.host.evicted
        forwards = []
        if ok.targets:
            nxt = hop_stage(route.hops[msg.index + 1])
            ctx = seal_context(b"in", route.session_id, route.step, nxt, route.position)
            forwards = [(nid, RunCascade(route, msg.index + 1,
                                         seal(srv.box(nid, k), out, ctx)))  # type: ignore[arg-type]
                        for nid, k in ok.targets]
        payload = b""
        if ok.carrier:
            ctx = seal_context(b"out", route.session_id, route.step, ok.stage, route.position)
            payload = seal(srv.box(ok.asker, route.asker_key), out, ctx)  # type: ignore[arg-type]
        result = CascadeResult(route.session_id, route.step, msg.index, ErrorCode.OK, "",
                               route.position + route.tokens, compute_s, att, payload)
        return result, forwards

    async def _finish(self, msg: RunCascade, ok: Admitted,
                      job: asyncio.Future[tuple[CascadeResult, list[tuple[bytes, RunCascade]]]]) -> None:
        result, forwards = await job
        me = self.server.node.node_id
        for nid, f in forwards:
            if nid == me:
                self.on_run(me, f)  # the next stage is ours too
        # The next hop first: it is on the answer's critical path, the report is not.
        sent = await asyncio.gather(*(self.server.node.send(nid, f) for nid, f in forwards
                                      if nid != me), return_exceptions=True)
        lost = [nid for (nid, _), r in zip([f for f in forwards if f[0] != me], sent, strict=True)
                if isinstance(r, BaseException)]
        self.forwarded += len(forwards) - len(lost)
        if lost:
            result = replace(result, code=ErrorCode.NOT_FOUND,
                             error=f"could not forward to {lost[0].hex()[:12]}: link lost")
        if not result.ok:
            self.server.stats.errors += 1
        else:
            self._published(msg, ok, result)
        await self._report(ok.asker, result)

    def _published(self, msg: RunCascade, ok: Admitted, result: CascadeResult) -> None:
        """The hop that brought the input, and the commitment, on this node's live feed."""
        me, sender = self.server.node.node_id, node_id_of(ok.sender_key)
        now = time.monotonic()
        if sender != me:
            hop_s = hop_time_s(self.server.node, sender)
            self.server.events(HopSent(msg.route.session_id, sender, me,
                                       max(0.0, now - hop_s - result.compute_s), hop_s,
                                       len(msg.payload)))
        if result.attestation is not None:
            self.server.events(ReplicaAnswered(
                msg.route.session_id, trial_id(msg.route.step, ok.stage.start, ok.stage.part),
                me, result.attestation.output_root, now))

    async def _report(self, asker: bytes, result: CascadeResult) -> None:
        try:
            await self.server.node.send(asker, result)
        except (PeerUnavailable, ConnectionError) as exc:
            logger.info("%s: could not report a cascade hop to %s: %s", self.server.node,
                        asker.hex()[:12], exc)


def _refusal(msg: RunCascade, code: ErrorCode, error: str, held: int = 0) -> CascadeResult:
    return CascadeResult(msg.route.session_id, msg.route.step, msg.index, code, error[:256],
                         held, 0.0, None, b"")
