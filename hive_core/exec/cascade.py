"""The asker's side of the compute cascade: hidden states go node to node, commitments come back.

Per step the asker signs a route (each stage's layers and its replicas' keys), seals the
input for stage 0's replicas and sends it; each node computes, and the stage's first replica,
its carrier, seals the output to every replica of the next stage and forwards it
(`exec.cascade_node`); every node reports its signed commitment to the asker, and the
carrier its output too (sealed for the asker). The answer's critical path is S + 1 one-way
hops for S stages, against 2S for the star.

Why one carrier per stage, to every replica of the next: replicas of a stage must receive
the same bytes so that their roots can be compared bit for bit, and one sender gives them
that with R messages a hop where every replica forwarding would take R x R and hand each
node R inputs to choose from. The carrier's copy to the asker is off the critical path; it
is what keeps every input the asker has always kept (failover rebuilds, end-of-session
audits and evidence all read them), so the trust machinery runs unchanged.

The asker accepts stage i's step only if the carrier's output decrypts, matches its signed
root, and every replica signed the same task, the same input (the previous stage's accepted
output, or the asker's own) and the same output root within one kernel class. Anything else
(a refusal, a missing report past the step's patience, a lost link, roots that differ or
replicas of different classes, which only the star compares within their bound) hands the
step to the star from that stage on, with its input from the accepted output before it:
replica comparison, hedging, failover, replays and slashing then run on the disputed step as
they always did. A session whose route the cascade cannot carry (more than `MAX_ROUTE`
stages or `MAX_CASCADE_REPLICAS` replicas, a node this asker holds no link to) runs by the
star, and says so once in the log; so does a route, for as long as its nodes stay, once a
carrier refused to forward (no link to the next stage), its replicas showed two kernel
classes, or a stage attested another input than its carrier reported (the forwarded bytes
are sealed, not signed, so neither side can be blamed for that; the star then drops a node
that attests another input than the one it was sent). A node serving two stages in a row
hands the output over to itself. The attention/MLP split travels like any stage.

Wire dtypes (`--wire`, `exec.wire`): measured by `python -m bench.bench_wire` on the bundled
SmolLM2-135M Q4_1 (packed weights, the asker's first and last layers and 4 stages between:
5 rounded hops; a 23-token prompt and 32 greedy tokens), the final hidden state against the
fp32 wire's, per row: fp16 max 2.4e-3 (median 4.7e-4), bf16 max 1.0e-2 (median 3.7e-3), every
row over the replica tolerance between two float32 kernel classes (8.1e-5), greedy tokens
unchanged. So fp32 stays the default; fp16 or bf16 halves the bytes of every hop for an
answer no longer within the replica tolerance of an fp32 run (replicas fed the same 16-bit
bytes still agree to the bit; a single replica's end-of-session audit, one prefill against
its steps, can differ past the audit bound once rounded, leaving the stage unaudited).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from hive_core.events import HopSent, ReplicaAnswered, StageStarted, trial_id
from hive_core.exec.answer import (
    Answer,
    BadAnswer,
    Hop,
    NeedsRebuild,
    OtherInput,
    Unavailable,
    check_answer,
    check_statement,
)
from hive_core.exec.cascade_node import sign_route
from hive_core.exec.verdicts import StepClock
from hive_core.exec.wire import seal_context, to_wire
from hive_core.mesh.node import PeerUnavailable
from hive_core.protocol.inference import (
    MAX_CASCADE_REPLICAS,
    MAX_ROUTE,
    CascadeHop,
    CascadeResult,
    CascadeRoute,
    RunCascade,
    StageResult,
)
from hive_core.protocol.messages import ErrorCode
from hive_core.trust import seal

if TYPE_CHECKING:
    from hive_core.exec.client import HiveClient, HiveSession

logger = logging.getLogger(__name__)
POLL_S = 0.25  # how often a waiting step checks that the route's links still stand
REMEMBERED_ROUTES = 256  # routes known not to cascade
MIXED_CLASSES = "replicas of different kernel classes (compared per row by the star)"
Route = tuple[tuple[bytes, ...], ...]  # each stage's replicas in use


class _Step:
    """The reports one cascade step waits for."""

    def __init__(self, expected: set[tuple[int, bytes]]) -> None:
        self.expected = expected
        self.got: dict[tuple[int, bytes], CascadeResult] = {}
        self.changed = asyncio.Event()

    def add(self, peer: bytes, msg: CascadeResult) -> None:
        key = (msg.index, peer)
        if key in self.expected and key not in self.got:  # only the nodes the route names
            self.got[key] = msg
            self.changed.set()

    @property
    def settled(self) -> bool:
        return len(self.got) == len(self.expected) or any(not r.ok for r in self.got.values())


class Cascade:
    """Runs a session's steps as cascades, handing disputed steps to the star."""

    def __init__(self, client: HiveClient) -> None:
        self.client = client
        self._waiting: dict[tuple[bytes, int], _Step] = {}
        self._said: set[str] = set()
        # Routes that cannot cascade for as long as their nodes stay the same (a carrier with
        # no link to the next stage, replicas of different kernel classes): the star at once.
        self._no_route: dict[Route, str] = {}
        client.node.on(CascadeResult, self._on_result)

    def _on_result(self, peer: bytes, msg: CascadeResult) -> None:
        step = self._waiting.get((msg.session_id, msg.step))
        if step is not None:
            step.add(peer, msg)

    def _star_because(self, reason: str) -> None:
        if len(self._said) > REMEMBERED_ROUTES:
            self._said.clear()
        if reason not in self._said:
            self._said.add(reason)
            logger.info("cascade: this route runs by the star: %s", reason)

    def _nodes(self, s: HiveSession) -> Route:
        return tuple(tuple(n for n in st.nodes if not self.client.reputation.excluded(n))
                     for st in s.stages)

    def why_not(self, s: HiveSession) -> str | None:
        """Why the cascade cannot carry this session's route as it stands (None: it can)."""
        known = self._no_route.get(self._nodes(s))
        if known is not None:
            return known
        if len(s.stages) > MAX_ROUTE:
            return f"{len(s.stages)} stages, more than a cascade's {MAX_ROUTE}"
        for st in s.stages:
            nodes = [n for n in st.nodes if not self.client.reputation.excluded(n)]
            if not nodes:
                return f"stage {st.stage} has no replica left (failover runs by the star)"
            if len(nodes) > MAX_CASCADE_REPLICAS:
                return f"stage {st.stage} has more than {MAX_CASCADE_REPLICAS} replicas"
            if any(self.client.node.peers.best(n) is None for n in nodes):
                return f"no link to a node of stage {st.stage}"
        return None

    async def run(self, s: HiveSession, x: np.ndarray) -> np.ndarray:
        """Every stage of one step, from the asker's input `x` to the last stage's output."""
        why = self.why_not(s)
        if why is not None:
            self._star_because(why)
            s.fallbacks += 1
            return await self._star(s, 0, x)
        route = self._nodes(s)
        accepted, x, why, lasting = await self._cascade(s, x)
        if accepted == len(s.stages):
            s.cascaded += 1
            return x
        s.fallbacks += 1
        logger.info("cascade step %d: stage %s runs by the star: %s", s.step,
                    s.stages[accepted].stage, why)
        if lasting:
            while len(self._no_route) >= REMEMBERED_ROUTES:
                del self._no_route[next(iter(self._no_route))]
            self._no_route[route] = why
        return await self._star(s, accepted, x)

    @staticmethod
    async def _star(s: HiveSession, first: int, x: np.ndarray) -> np.ndarray:
        for i in range(first, len(s.stages)):
            x = await s.run_stage(i, x)
        return x

    async def _cascade(self, s: HiveSession, x: np.ndarray) -> tuple[int, np.ndarray, str, bool]:
        """(stages accepted, the last accepted output, why the next was not, whether that
        lasts as long as the route's nodes do)."""
        client, cfg = self.client, self.client.config
        nodes = [list(ns) for ns in self._nodes(s)]
        s.asked.update(n for ns in nodes for n in ns)  # each may hold caches of the session
        try:
            route = sign_route(client.node.identity, CascadeRoute(
                client.node.identity.public_key, s.session_id, s.step, s.position, x.shape[0],
                cfg.kv, cfg.verify, client.wire,
                tuple(CascadeHop(st.stage.start, st.stage.end, st.stage.part,
                                 tuple(client.node.link(n).public_key for n in ns))
                      for st, ns in zip(s.stages, nodes, strict=True)),
                bytes(64)))
            boxes = {n: client.box(n) for n in nodes[0]}
        except (PeerUnavailable, Unavailable) as exc:  # a link went since `why_not` looked
            return 0, x, str(exc), False
        key = (s.session_id, s.step)
        wait = self._waiting[key] = _Step({(i, n) for i, ns in enumerate(nodes) for n in ns})
        sent = time.monotonic()
        try:
            first = s.stages[0].stage
            ctx = seal_context(b"in", s.session_id, s.step, first, s.position)
            data = to_wire(x, client.wire)
            msgs = [(n, RunCascade(route, 0, seal(boxes[n], data, ctx)))  # type: ignore[arg-type]
                    for n in nodes[0]]
            try:
                await asyncio.gather(*(client.node.send(n, m) for n, m in msgs))
            except (PeerUnavailable, ConnectionError) as exc:
                return 0, x, f"could not send the first hop: {exc}", False
            deadline = sent + sum(s.verifier.patience(i, x.shape[0]) for i in range(len(nodes)))
            flat = [n for ns in nodes for n in ns]
            while not wait.settled and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(wait.changed.wait(),
                                           min(POLL_S, max(0.0, deadline - time.monotonic())))
                except TimeoutError:
                    pass
                wait.changed.clear()
                if any(client.node.peers.best(n) is None for n in flat):
                    break  # a node of the route is gone: the star fails over
        finally:
            del self._waiting[key]
        wall = time.monotonic() - sent
        for n, m in msgs:  # one hop of the S + 1 the step took
            client.emit(HopSent(s.session_id, client.node.node_id, n, sent,
                                max(wall / (len(nodes) + 1), 1e-6), len(m.payload)))
        for i, ns in enumerate(nodes):
            hop = Hop(s.session_id, s.step, s.stages[i].stage, s.position, x.shape[0],
                      x.tobytes())
            answers, why, lasting = self._check(hop, ns, wait.got, i, wall)
            if not answers:
                lasting = lasting or any(r.code is ErrorCode.NOT_FOUND for r in wait.got.values())
                return i, x, why, lasting
            self._accept(s, i, hop, answers, wall / len(nodes))
            x = answers[0].out
        return len(nodes), x, "", False

    def _check(self, hop: Hop, nodes: list[bytes], got: dict[tuple[int, bytes], CascadeResult],
               i: int, wall: float) -> tuple[list[Answer], str, bool]:
        """Stage i's answers, carrier first, if they may be accepted; else ([], why, whether
        it lasts as long as the route: replicas of two classes, or a stage whose nodes attest
        another input than its carrier reported, which the asker cannot blame on either side
        (the forwarded bytes are sealed, not signed) but will not try again)."""
        client, cfg = self.client, self.client.config
        results = [got.get((i, n)) for n in nodes]
        for n, r in zip(nodes, results, strict=True):
            if r is None:
                return [], f"no report from {n.hex()[:12]} in time", False
            if not r.ok:
                return [], f"{n.hex()[:12]} refused: {r.error}", False
        carrier, first = nodes[0], results[0]
        assert first is not None  # every result was checked present above
        as_star = StageResult(0, first.code, first.error, first.cache_len, first.compute_s,
                              first.attestation, first.payload)
        try:
            lead = check_answer(carrier, hop, as_star, client.box(carrier),
                                client.local.config.hidden, cfg.verify, wall, client.wire)
        except (BadAnswer, NeedsRebuild) as exc:
            return [], str(exc), isinstance(exc, OtherInput)
        answers = [lead]
        for n, r in zip(nodes[1:], results[1:], strict=True):
            assert r is not None
            att = r.attestation
            if cfg.verify:
                if att is None or lead.attestation is None:
                    return [], f"{n.hex()[:12]} sent no attestation", False
                try:
                    check_statement(n, hop, att, None)
                except BadAnswer as exc:
                    return [], str(exc), isinstance(exc, OtherInput)
                if att.kernel != lead.kernel:
                    return [], MIXED_CLASSES, True
                if att.output_root != lead.attestation.output_root or att.kv != lead.attestation.kv:
                    return [], f"{n.hex()[:12]} and {carrier.hex()[:12]} disagree", False
            answers.append(Answer(n, lead.out, lead.out_bytes, att, max(r.compute_s, 0.0), wall))
        return answers, "", False

    def _accept(self, s: HiveSession, i: int, hop: Hop, answers: list[Answer],
                wall: float) -> None:
        """What the star records for an accepted step, and its verdict."""
        st = s.stages[i]
        for a in answers:
            if a.attestation is not None:
                st.history.setdefault(a.node, []).append((a.attestation, hop.input_bytes,
                                                          a.out_bytes))
                self.client.emit(ReplicaAnswered(hop.session_id,
                                                 trial_id(hop.step, hop.stage.start, hop.stage.part),
                                                 a.node, a.attestation.output_root,
                                                 time.monotonic()))
            work = st.work.setdefault(a.node, [0.0, 0.0])
            if work[0] == 0:
                self.client.emit(StageStarted(hop.session_id, a.node, hop.stage.start,
                                              hop.stage.end, hop.stage.part, time.monotonic()))
            work[0] += hop.tokens
            work[1] += wall
        s.verifier.clocks.setdefault(i, StepClock()).observe(hop.tokens, wall)
        s.verifier._accept(i, hop, answers, self.client.config.verify and len(answers) >= 2)
        st.segments.append((hop.step, hop.position, np.frombuffer(hop.input_bytes, dtype="<f4")
                            .reshape(hop.tokens, -1), answers[0].out, answers[0].node))
        st.steps += 1
