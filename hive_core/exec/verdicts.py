"""Redundant dispatch of one stage step and the verdict on its replicas' answers.

With verification on and two or more replicas, the first two answers that agree within
the tolerance win at once; answers already in that disagree, and lagging ones when they
arrive, are judged against that pair and slashed on signed evidence. When the answers
in disagree with no majority, a referee (a spare rebuilt from the kept hop inputs)
recomputes the step. With one replica, a spot check at the end does the same for the
last step of each stage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from hive_core.events import NodeLeft, ReplicaAnswered, Slashed, Verified, trial_id
from hive_core.exec.answer import Answer, BadAnswer, Hop, NeedsRebuild, Unavailable
from hive_core.exec.errors import VerificationError
from hive_core.exec.feed import slashed_verdicts, verified_verdict
from hive_core.trust import EvidenceError, agree, judge, make_evidence

if TYPE_CHECKING:
    from hive_core.exec.client import HiveSession

logger = logging.getLogger(__name__)
MAX_REFEREES = 2


class StageVerifier:
    """Runs stage steps for one session and keeps the verdicts."""

    def __init__(self, session: HiveSession) -> None:
        self.s = session
        self.late: list[asyncio.Task[None]] = []
        self.last: dict[int, tuple[Hop, Answer]] = {}
        self.spot_checked: set[int] = set()

    @staticmethod
    def _trial(hop: Hop) -> int:
        return trial_id(hop.step, hop.stage.start, hop.stage.part)

    async def _ask(self, i: int, node: bytes, hop: Hop) -> Answer:
        try:
            return await self.s.ask(node, hop)
        except NeedsRebuild:
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

    async def run(self, i: int, hop: Hop, nodes: list[bytes]) -> Answer | None:
        """The accepted answer, or None when every replica failed (the caller fails over)."""
        cfg = self.s.client.config
        tasks = {asyncio.ensure_future(self._ask(i, n, hop)): n for n in nodes}
        # Rank by the order asked: `nodes` (the stage's list) loses a node dropped meanwhile.
        rank = {n: k for k, n in enumerate(nodes)}
        quorum = cfg.attest and len(nodes) >= 2
        answers: list[Answer] = []
        pending = set(tasks)
        agreeing: list[Answer] = []
        while pending and not agreeing:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in sorted(done, key=lambda t: rank[tasks[t]]):
                a = self._collect(i, hop, tasks[t], t)
                if a is None:
                    continue
                answers.append(a)
                if not quorum:
                    agreeing = [a]
                    break
                for prev in answers[:-1]:
                    if agree(prev.out, a.out, cfg.rtol):
                        agreeing = [prev, a]
                        break
                if agreeing:
                    break
        verified = quorum and len(agreeing) >= 2
        if not agreeing:
            if not answers:
                return None
            if quorum and len(answers) >= 2:
                return await self._referee(i, hop, answers)
            agreeing = [answers[0]]  # the other replicas died: use it, unverified
        for a in answers:
            if a not in agreeing:
                self._slash(i, hop, a, agreeing)
        if pending:
            self.late.append(asyncio.ensure_future(
                self._judge_late(i, hop, {t: tasks[t] for t in pending}, agreeing, verified)))
        self._accept(i, hop, agreeing, verified)
        return agreeing[0]

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
        st = self.s.stages[i]
        if verified:
            st.verified_steps += 1
            self.s.client.emit(Verified(hop.session_id, self._trial(hop),
                                        tuple(a.node for a in agreeing), time.monotonic()))
            for a in agreeing:
                self.s.client.reputation.reward(a.node)
            nodes = [a.node for a in agreeing]
            self.s.client.announce([verified_verdict(hop.session_id, hop.step, hop.stage.start,
                                                     hop.stage.end, hop.stage.part, nodes)],
                                   nodes)
        self.last[i] = (hop, agreeing[0])

    def _slash(self, i: int, hop: Hop, bad: Answer, agreeing: list[Answer]) -> None:
        rtol = self.s.client.config.rtol
        witnesses = [(a.attestation, a.out_bytes) for a in agreeing if a.attestation is not None]
        if bad.attestation is None or len(witnesses) < 2:
            self._drop(i, bad.node, "disagrees with the accepted answer", gone=False)
            return
        try:
            ev = make_evidence(bad.attestation, bad.out_bytes, witnesses[:8], rtol)
            self.s.client.reputation.slash(ev)
        except EvidenceError as exc:
            logger.warning("no evidence against %s: %s", bad.node.hex()[:12], exc)
            return
        self._drop(i, bad.node, "slashed", gone=False)
        reason = f"output outside tolerance {rtol:g} of {len(witnesses)} agreeing replicas"
        self.s.client.emit(Slashed(hop.session_id, self._trial(hop), bad.node, reason,
                                   time.monotonic(), ev))
        self.s.client.announce(slashed_verdicts(ev, bad.node, reason), [a.node for a in agreeing])

    async def _judge_late(self, i: int, hop: Hop, tasks: dict[asyncio.Future[Answer], bytes],
                          agreeing: list[Answer], verified: bool) -> None:
        for t, node in tasks.items():
            await asyncio.wait([t])  # its outcome, error or answer, is judged by _collect
            a = self._collect(i, hop, node, t)
            if a is None or not verified:
                continue
            if agree(agreeing[0].out, a.out, self.s.client.config.rtol):
                self.s.client.reputation.reward(a.node)
            else:
                self._slash(i, hop, a, agreeing)

    async def _referee(self, i: int, hop: Hop, answers: list[Answer]) -> Answer:
        """Replicas disagree with no majority: recruit spares until one forms."""
        rtol = self.s.client.config.rtol
        exclude = [a.node for a in answers]
        for _ in range(MAX_REFEREES):
            ref = self.s.spare_for(i, exclude)
            if ref is None:
                break
            exclude.append(ref)
            try:
                await self.s.rebuild(i, ref, hop.position)
                answers.append(await self.s.ask(ref, hop))
            except (Unavailable, BadAnswer, NeedsRebuild) as exc:
                logger.info("referee %s failed: %s", ref.hex()[:12], exc)
                continue
            v = judge({a.node: a.out for a in answers}, rtol)
            if v.quorum:
                agreeing = [a for a in answers if a.node in v.agreeing]
                for a in answers:
                    if a.node in v.outliers:
                        self._slash(i, hop, a, agreeing)
                st = self.s.stages[i]
                if ref in v.agreeing and ref not in st.nodes:
                    st.nodes.append(ref)
                self._accept(i, hop, agreeing, True)
                return agreeing[0]
        raise VerificationError(
            f"stage {self.s.stages[i].stage}: {len(answers)} replicas disagree and no referee "
            "could settle it")

    async def spot_check(self, i: int) -> bool:
        """Recompute the last step of stage `i` on a spare; slash the worker if it lied."""
        if i not in self.last:
            return False
        hop, answer = self.last[i]
        ref = self.s.spare_for(i, [answer.node])
        if ref is None:
            return False
        try:
            await self.s.rebuild(i, ref, hop.position)
            other = await self.s.ask(ref, hop)
        except (Unavailable, BadAnswer, NeedsRebuild) as exc:
            logger.info("spot check on %s failed: %s", ref.hex()[:12], exc)
            return False
        if agree(answer.out, other.out, self.s.client.config.rtol):
            self.spot_checked.add(i)
            self.s.client.emit(Verified(hop.session_id, self._trial(hop), (answer.node, ref),
                                        time.monotonic()))
            return True
        # One against one: a second referee decides, and a liar is slashed.
        try:
            await self._referee(i, hop, [answer, other])
        except VerificationError:
            return False
        return False

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout`) for lagging replicas to be judged."""
        if self.late:
            _, pending = await asyncio.wait(self.late, timeout=timeout)
            for t in pending:
                t.cancel()
            self.late = []
