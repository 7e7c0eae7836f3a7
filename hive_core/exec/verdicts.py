"""Redundant dispatch of one stage step, hedging of silent replicas, and the verdict on answers.

Every replica of the stage is asked at once. With verification on and two or more replicas,
the first two answers that agree win (`trust.agree_classes`: bit for bit within a kernel
class, per row within the calibrated bound across classes). A step unanswered past a few
times its expected time (`StepClock`, from measured answers) is hedged: a spare rebuilds the
session's cache and takes the step too, the first good answer wins, and the replicas it
outlasted are dropped, and banned with exponential backoff unless they answer within a
grace period after all (slow is not silent). Disagreement is settled by
recomputing the disputed steps on the asker's own copy of the model (`exec.replay`):
whoever signed an output its inputs do not give is slashed on evidence anyone can replay;
without a replayer, spares referee and the majority wins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from hive_core.events import NodeLeft, ReplicaAnswered, Slashed, Verified, trial_id
from hive_core.exec.answer import Answer, BadAnswer, Hop, NeedsRebuild, Unavailable
from hive_core.exec.errors import VerificationError
from hive_core.exec.feed import slashed_verdicts, verified_verdict
from hive_core.protocol.trust import Attestation
from hive_core.trust import (
    Cleared,
    EvidenceError,
    TrustError,
    agree_classes,
    check_evidence,
    judge,
    make_evidence,
)

if TYPE_CHECKING:
    from hive_core.exec.client import HiveSession, StageState

logger = logging.getLogger(__name__)
MAX_REFEREES = 2
MAX_HEDGES = 2  # spares one step may be sent to
PRIOR_LAYER_S = 0.01  # seconds per layer and row assumed before anything was measured
EWMA = 0.3
SILENT_GRACE = 3.0  # a hedged replica still unanswered after this many patiences is silent
MIN_GRACE_S = 2.0


def _watched(coro: Coroutine[Any, Any, Answer]) -> asyncio.Future[Answer]:
    """A replica's request as a task whose failure counts as seen: a verdict reads the ones
    it needs, and the others (outrun, abandoned) are no error to report."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


def _abandon(tasks: dict[asyncio.Future[Answer], bytes]) -> None:
    for t in tasks:
        t.cancel()


class StepClock:
    """Expected answer time of one stage's steps, from what the asker measured."""

    def __init__(self) -> None:
        self.decode_s: float | None = None  # one-row steps
        self.row_s: float | None = None  # per row of many-row steps

    def observe(self, rows: int, wall_s: float) -> None:
        if wall_s <= 0:
            return
        if rows == 1:
            self.decode_s = wall_s if self.decode_s is None else (
                (1 - EWMA) * self.decode_s + EWMA * wall_s)
        else:
            per = wall_s / rows
            self.row_s = per if self.row_s is None else (1 - EWMA) * self.row_s + EWMA * per

    def expect(self, rows: int, prior_s: float) -> float:
        if rows == 1 and self.decode_s is not None:
            return self.decode_s
        if self.row_s is not None:
            return max(self.row_s * rows, self.decode_s or 0.0)
        return prior_s


class StageVerifier:
    """Runs stage steps for one session and keeps the verdicts."""

    def __init__(self, session: HiveSession) -> None:
        self.s = session
        self.late: list[asyncio.Task[None]] = []
        self.clocks: dict[int, StepClock] = {}

    @staticmethod
    def _trial(hop: Hop) -> int:
        return trial_id(hop.step, hop.stage.start, hop.stage.part)

    async def _ask(self, i: int, node: bytes, hop: Hop) -> Answer:
        try:
            return await self.s.ask(node, hop)
        except NeedsRebuild:
            await self.s.rebuild(i, node, hop.position)
            return await self.s.ask(node, hop)

    async def _hedge(self, i: int, node: bytes, hop: Hop) -> Answer:
        await self.s.rebuild(i, node, hop.position)
        return await self.s.ask(node, hop)

    def _drop(self, i: int, node: bytes, reason: str, *, gone: bool) -> None:
        st = self.s.stages[i]
        if node in st.nodes:
            st.nodes.remove(node)
        st.failed.add(node)
        logger.info("stage %s: dropping %s: %s", st.stage, node.hex()[:12], reason)
        if gone:
            self.s.client.emit(NodeLeft(node, time.monotonic()))

    def patience(self, i: int, rows: int) -> float:
        """How long a step of `rows` rows may go unanswered before it is hedged."""
        cfg = self.s.client.config
        layers = len(self.s.stages[i].stage.layers)
        per = self.s.local_layer_s or PRIOR_LAYER_S
        expected = self.clocks.setdefault(i, StepClock()).expect(rows, per * layers * rows)
        return max(cfg.hedge_floor_s, cfg.hedge_factor * expected)

    def silent_after(self, i: int, rows: int) -> float:
        """How long a request of `rows` rows may go unanswered before its node counts as
        silent: SILENT_GRACE patience spans, at least MIN_GRACE_S."""
        return max(MIN_GRACE_S, SILENT_GRACE * self.patience(i, rows))

    def ban_silent(self, node: bytes, reason: str) -> None:
        """Ban a node that took a request and never answered (and publish the ban)."""
        ban = self.s.client.reputation.ban(node, reason)
        if self.s.client.publish_ban is not None:
            self.s.client.publish_ban(node, ban)

    @staticmethod
    def agree(a: Answer, b: Answer) -> bool:
        try:
            return agree_classes(a.out, a.kernel, b.out, b.kernel)
        except TrustError:
            return False

    # -- one step ----------------------------------------------------------------------

    async def run(self, i: int, hop: Hop, nodes: list[bytes]) -> Answer | None:
        """The accepted answer, or None when every replica failed (the caller fails over)."""
        tasks: dict[asyncio.Future[Answer], bytes] = {
            _watched(self._ask(i, n, hop)): n for n in nodes}
        try:
            return await self._run(i, hop, nodes, tasks)
        except BaseException:
            # Cancelled (the asker gave up) or no verdict: the replicas' requests are abandoned,
            # not left waiting out the request timeout.
            _abandon(tasks)
            raise

    async def _run(self, i: int, hop: Hop, nodes: list[bytes],
                   tasks: dict[asyncio.Future[Answer], bytes]) -> Answer | None:
        cfg = self.s.client.config
        need = 2 if cfg.verify and len(nodes) >= 2 else 1
        rank = {n: k for k, n in enumerate(nodes)}
        outlasted: set[bytes] = set()  # replicas a hedge was sent for
        hedgers: set[bytes] = set()  # spares a hedge went to (busy rebuilding, not silent)
        deadline = time.monotonic() + self.patience(i, hop.tokens)
        answers: list[Answer] = []
        accepted: list[Answer] = []
        pending = set(tasks)
        while pending and not accepted:
            done, pending = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()),
                                               return_when=asyncio.FIRST_COMPLETED)
            if not done:  # past the deadline: hedge, or settle for what came in
                silent = {tasks[t] for t in pending} - outlasted - hedgers
                spare = (self.s.spare_for(i, list(tasks.values()))
                         if len(hedgers) < MAX_HEDGES else None)
                if spare is not None:
                    hedgers.add(spare)
                    self.s.hedges += 1
                    outlasted |= silent
                    logger.info("stage %s step %d: no answer from %s in time: hedging to %s",
                                self.s.stages[i].stage, hop.step,
                                ", ".join(n.hex()[:12] for n in silent), spare.hex()[:12])
                    hedge = _watched(self._hedge(i, spare, hop))
                    tasks[hedge], rank[spare] = spare, len(rank)
                    pending.add(hedge)
                elif answers:
                    outlasted |= silent
                    accepted = [answers[0]]  # nobody else to ask: use it unverified
                    break
                # A spare first rebuilds the cache: give it the time of every row so far.
                deadline = time.monotonic() + self.patience(i, hop.position + hop.tokens)
                continue
            for t in sorted(done, key=lambda t: rank[tasks[t]]):
                a = self._collect(i, hop, tasks[t], t)
                if a is None:
                    continue
                answers.append(a)
                if need == 1:
                    accepted = [a]
                    break
                accepted = next(([p, a] for p in answers[:-1] if self.agree(p, a)), [])
                if accepted:
                    break
        verified = need == 2 and len(accepted) == 2
        if not accepted:
            if not answers:
                return None
            if need == 2 and len(answers) >= 2:
                return await self._settle(i, hop, answers)
            accepted = [answers[0]]  # the other replicas died: use it, unverified
        for a in answers:
            if a in accepted or self.agree(accepted[0], a):
                continue
            found = await self.convict(i, hop, a, "disagrees with agreeing replicas")
            if found is False:
                _abandon(tasks)  # the recomputation settles the step
                return await self._settle(i, hop, answers)  # it was right: the pair lied
            if found is None:  # nothing here can judge it: outvoted, left out, not published
                self.s.client.reputation.distrust(a.node)
                self._drop(i, a.node, "outvoted", gone=False)
        self._after(i, hop, tasks, accepted, outlasted, verified)
        return accepted[0]

    def _after(self, i: int, hop: Hop, tasks: dict[asyncio.Future[Answer], bytes],
               accepted: list[Answer], outlasted: set[bytes], verified: bool) -> None:
        """Bookkeeping once a step is accepted: silent replicas banned, late ones judged."""
        st = self.s.stages[i]
        self.clocks.setdefault(i, StepClock()).observe(hop.tokens, accepted[0].wall_s)
        for a in accepted:
            if a.node not in st.nodes and a.node not in st.failed:
                st.nodes.append(a.node)  # a hedge's spare now holds the cache
        late: dict[asyncio.Future[Answer], bytes] = {}
        grace = self.silent_after(i, hop.tokens)
        for t, node in tasks.items():
            if t.done():
                continue
            if node in outlasted:
                self._drop(i, node, "a hedge answered first", gone=False)
                self.late.append(asyncio.ensure_future(
                    self._watch(i, hop, node, t, grace, accepted[0])))
            else:
                late[t] = node
        if late:
            self.late.append(asyncio.ensure_future(self._judge_late(i, hop, late, accepted,
                                                                    verified)))
        self._accept(i, hop, accepted, verified)

    def _collect(self, i: int, hop: Hop, node: bytes, task: asyncio.Future[Answer]) -> Answer | None:
        try:
            a = task.result()
        except Unavailable as exc:
            self._drop(i, node, f"unavailable: {exc}", gone=True)
            return None
        except (BadAnswer, NeedsRebuild) as exc:
            self._drop(i, node, str(exc), gone=False)
            return None
        if a.attestation is not None:
            self.s.client.emit(ReplicaAnswered(hop.session_id, self._trial(hop), node,
                                               a.attestation.output_root, time.monotonic()))
        return a

    def _accept(self, i: int, hop: Hop, agreeing: list[Answer], verified: bool) -> None:
        if not verified:
            return
        st = self.s.stages[i]
        st.verified_steps += 1
        self.s.client.emit(Verified(hop.session_id, self._trial(hop),
                                    tuple(a.node for a in agreeing), time.monotonic()))
        for a in agreeing:
            self.s.client.reputation.reward(a.node)
        nodes = [a.node for a in agreeing]
        self.s.client.announce([verified_verdict(hop.session_id, hop.step, hop.stage.start,
                                                 hop.stage.end, hop.stage.part, nodes)], nodes)

    # -- convictions -------------------------------------------------------------------

    @staticmethod
    def history_until(st: StageState, a: Answer) -> list[tuple[Attestation, bytes]]:
        """`a`'s node's signed steps (with inputs) up to and including the one `a` answers."""
        hist = st.history.get(a.node, [])
        for k in range(len(hist) - 1, -1, -1):
            if hist[k][0] == a.attestation:
                return [(att, data) for att, data, _ in hist[: k + 1]]
        return []

    async def convict(self, i: int, hop: Hop, bad: Answer, reason: str) -> bool | None:
        """Slash `bad`'s node if its signed output for this step is not what its inputs give
        (True); False when the recomputation found it right; None when nothing here can judge
        it (kernel classes too far apart, the model's layers not loadable). Without a replayer
        (or a signed answer) the node is dropped and distrusted here, nothing is published,
        and True is returned."""
        st = self.s.stages[i]
        client = self.s.client
        rep = client.reputation
        hist = self.history_until(st, bad)
        if rep.replayer is None or not hist:
            rep.distrust(bad.node)
            self._drop(i, bad.node, reason, gone=False)
            return True
        ev = make_evidence(hist, bad.out_bytes, reason)
        try:
            offender = await client.local_call(check_evidence, ev, rep.replayer)
        except Cleared as exc:
            logger.info("%s not convicted: %s", bad.node.hex()[:12], exc)
            return False
        except EvidenceError as exc:
            logger.info("%s not judged: %s", bad.node.hex()[:12], exc)
            return None
        rep.record(ev, offender)
        self._drop(i, bad.node, "slashed", gone=False)
        why = f"{reason}; recomputed: its output is not what its inputs give"
        client.emit(Slashed(hop.session_id, self._trial(hop), bad.node, why[:200],
                            time.monotonic(), ev))
        client.announce(slashed_verdicts(ev, bad.node, why[:200]),
                        [n for n in st.nodes if n != bad.node])
        if client.publish is not None:
            client.publish(ev, offender)
        return True

    async def _settle(self, i: int, hop: Hop, answers: list[Answer]) -> Answer:
        """Replicas disagree: recompute (every liar among them is slashed) or, with no model
        here, recruit spares until a majority forms."""
        if self.s.client.reputation.replayer is None:
            return await self._referee(i, hop, answers)
        found = [(a, await self.convict(i, hop, a, "replicas disagree")) for a in answers]
        honest = [a for a, f in found if f is False]
        if not honest:
            unjudged = [a for a, f in found if f is None]
            if unjudged:  # nothing here could judge them: spares vote
                return await self._referee(i, hop, unjudged)
            raise VerificationError(f"stage {self.s.stages[i].stage}: every replica lied")
        self._accept(i, hop, honest[:2], len(honest) >= 2)
        if len(honest) < 2:  # checked by our own recomputation
            self.s.stages[i].verified_steps += 1
        return honest[0]

    async def _watch(self, i: int, hop: Hop, node: bytes, task: asyncio.Future[Answer],
                     grace: float, accepted: Answer) -> None:
        """A replica a hedge outlasted: banned if it stays silent past `grace`; judged if it
        answers after all."""
        done, _ = await asyncio.wait([task], timeout=grace)
        a = None
        if done:
            try:
                a = task.result()
            except (Unavailable, BadAnswer, NeedsRebuild):
                a = None
        else:
            task.cancel()
        if a is None:
            self.ban_silent(node, f"silent on step {hop.step} of {self.s.stages[i].stage}")
        elif a.attestation is not None and not self.agree(accepted, a):
            await self.convict(i, hop, a, "disagrees with the answer that outran it")

    async def _judge_late(self, i: int, hop: Hop, tasks: dict[asyncio.Future[Answer], bytes],
                          accepted: list[Answer], verified: bool) -> None:
        for t, node in tasks.items():
            await asyncio.wait([t])  # its outcome, error or answer, is judged by _collect
            a = self._collect(i, hop, node, t)
            if a is None or not verified:
                continue
            if self.agree(accepted[0], a):
                self.s.client.reputation.reward(a.node)
                continue
            found = await self.convict(i, hop, a, "disagrees with agreeing replicas")
            if found is False:
                # A late answer was right and the accepted pair was not: the answer is tainted.
                self.s.tainted = True
                for b in accepted:
                    await self.convict(i, hop, b, "outvoted by a recomputation")
            elif found is None:
                self.s.client.reputation.distrust(a.node)

    async def _referee(self, i: int, hop: Hop, answers: list[Answer]) -> Answer:
        """Replicas disagree with no majority: recruit spares until one forms."""
        exclude = [a.node for a in answers]
        for _ in range(MAX_REFEREES):
            ref = self.s.spare_for(i, exclude)
            if ref is None:
                break
            exclude.append(ref)
            try:
                answers.append(await self._hedge(i, ref, hop))
            except (Unavailable, BadAnswer, NeedsRebuild) as exc:
                logger.info("referee %s failed: %s", ref.hex()[:12], exc)
                continue
            v = judge({a.node: a.out for a in answers}, {a.node: a.kernel for a in answers})
            if v.quorum:
                agreeing = [a for a in answers if a.node in v.agreeing]
                for a in answers:
                    if a.node in v.outliers:
                        await self.convict(i, hop, a, "outvoted by a referee")
                st = self.s.stages[i]
                if ref in v.agreeing and ref not in st.nodes:
                    st.nodes.append(ref)
                self._accept(i, hop, agreeing, True)
                return agreeing[0]
        raise VerificationError(
            f"stage {self.s.stages[i].stage}: {len(answers)} replicas disagree and no referee "
            "could settle it")

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout`) for lagging replicas to be judged."""
        if self.late:
            _, pending = await asyncio.wait(self.late, timeout=timeout)
            for t in pending:
                t.cancel()
            self.late = []
