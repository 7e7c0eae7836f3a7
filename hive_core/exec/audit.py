"""Audits: a stage no replica checked is recomputed, in prefills, before the receipts.

A stage served by a single replica (the hive had no other, or it failed) is not compared
step by step; an auditor recomputes every step it accepted in prefills over the inputs the
asker kept (VeriLLM-style re-execution: batched passes, a fraction of the decode's cost),
streamed during the decode in chunks (`audit_stream`) with only the last chunk left for the
session's end, or, where the stream stopped, in one prefill at the end (`audit_stage`):
a spare of the stage's weights mode (under the session's id,
with step numbers of their own, so spectators see the audit as part of the ask), or, with no
spare, the asker itself on its own copy of the model. Rows outside the
calibrated prefill-versus-step bound convict their worker by replaying its own signed steps
(`StageVerifier.convict`); if the replay clears the worker, the auditor lied and is
convicted on its own signed audit steps. A lie found here was already used: the session is
marked tainted, so its answer does not count as verified.

What an audit costs is mostly the auditor loading the stage (SmolLM2, 7 layers: 0.3 s in
fp32, 0.03 s packed, against 0.06 s for the 72-row prefill), and a node lets a stage it does
not serve go when the last session using it ends. So a client keeps its auditors: each
stage's auditor is drawn from a client-wide random order (one stage per auditor where the
hive allows) and kept, all re-drawn at random with probability 1/`AUDITOR_TERM` per session;
after each audit the client leaves a one-row session of its own open on the auditor
(`Auditors.warm_session`), which keeps the stage loaded there until its idle eviction, for
stages small enough to hold beside the auditor's own layers (`WARM_MAX_WEIGHTS`).
Keeping an auditor does not help a liar: the audit recomputes every step whoever audits,
and over many sessions a colluding auditor is drawn for a given stage as often as with a
draw per session (in runs of sessions instead of one at a time).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hive_core.base.ids import SESSION_BYTES
from hive_core.base.stage import Part, Stage
from hive_core.events import Verified, trial_id
from hive_core.exec.answer import Answer, BadAnswer, Hop, NeedsRebuild, Unavailable
from hive_core.exec.errors import ExecError
from hive_core.model.config import LlamaConfig
from hive_core.protocol.trust import Attestation
from hive_core.trust import (
    EvidenceError,
    ReplayJob,
    TrustError,
    check_evidence,
    make_evidence,
    outside_audit,
)

if TYPE_CHECKING:
    from hive_core.exec.client import HiveSession, StageState

logger = logging.getLogger(__name__)
MAX_AUDITORS = 2  # nodes asked to audit one stage before the asker audits it itself


class AuditorFailed(ExecError):
    """An auditor did not deliver the audit (gone, a bad answer, no attestation)."""


class SilentAuditor(AuditorFailed):
    """An auditor took an audit request and did not answer within its grace."""


AUDITOR_TERM = 8  # sessions a client keeps its auditors for, on average (re-drawn at random)
WARM_TIMEOUT_S = 5.0  # the one-row request keeping an auditor warm (it never holds an ask up longer)
# Stages kept loaded on their auditors at most this many weights: reloading a small stage is
# most of its audit, but a big one (a quarter of Llama-3-8B: 1.7 billion weights, a GB packed)
# would double the memory of a node sized for its own layers, which is what a hive is for.
WARM_MAX_WEIGHTS = 256e6


@dataclass
class Auditors:
    """A client's kept auditors: who audits which stage, and the session keeping them warm."""

    salt: bytes = field(default_factory=lambda: os.urandom(32))  # the client's draw
    warm_session: bytes = field(default_factory=lambda: os.urandom(SESSION_BYTES))
    kept: dict[Stage, bytes] = field(default_factory=dict)

    def redraw(self) -> None:
        self.salt = os.urandom(32)
        self.kept.clear()


_AUDITORS: weakref.WeakKeyDictionary[object, Auditors] = weakref.WeakKeyDictionary()


def auditors_of(client: object) -> Auditors:
    """The auditors `client` keeps (made on first use)."""
    found = _AUDITORS.get(client)
    if found is None:
        found = _AUDITORS[client] = Auditors()
    return found


def _drawn(session_id: bytes, i: int, rate: float) -> bool:
    """Whether stage `i` of this session is audited: a draw no worker can predict."""
    if rate >= 1.0:
        return True
    h = hashlib.blake2b(session_id + bytes([i % 256]), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64 < rate


async def audit_session(s: HiveSession) -> None:
    """Audit every stage of `s` whose steps replicas did not all confirm (drawn at the
    configured rate), all at once: each stage's auditor is another node. A stage whose audit
    streamed during the decode (`audit_stream`) has only its last rows left to recompute."""
    todo = [i for i in range(len(s.stages)) if due(s, i)]
    if todo:
        s.audit_stream.draw_term()
    await asyncio.gather(*(_audit_logged(s, i) for i in todo))


def due(s: HiveSession, i: int) -> bool:
    """Whether stage `i` is to be audited: steps that replicas did not all confirm, not yet
    audited, drawn at the configured rate."""
    st = s.stages[i]
    return bool(st.steps and st.verified_steps < st.steps and not st.audited and st.segments
                and _drawn(s.session_id, i, s.client.config.audit_rate))


def draw_term(s: HiveSession) -> None:
    """Re-draw the client's auditors with probability 1/`AUDITOR_TERM` (once per session)."""
    if secrets.randbelow(AUDITOR_TERM) == 0:
        auditors_of(s.client).redraw()


async def _audit_logged(s: HiveSession, i: int) -> None:
    try:
        await s.audit_stream.finish(i)
    except (ExecError, TrustError) as exc:  # no auditor, or bfloat16: nothing to judge by
        logger.warning("stage %s was not audited: %s", s.stages[i].stage, exc)


def rows_of(st: StageState, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray,
                                                        list[tuple[int, int, int, bytes]]]:
    """The accepted inputs and outputs of positions [lo, hi), and each step's rows in them (in
    the session's positions). Segments are appended in position order: scan back from the end."""
    found = []
    for seg in reversed(st.segments):
        if seg[1] + seg[2].shape[0] <= lo:
            break
        if seg[1] < hi:
            found.append(seg)
    ins, outs, spans, at = [], [], [], lo
    for step, pos, x_in, x_out, node in sorted(found, key=lambda seg: seg[1]):
        a, b = max(pos, lo), min(pos + x_in.shape[0], hi)
        if a != at:
            raise ExecError(f"kept inputs of {st.stage} have a gap at position {at}")
        ins.append(x_in[a - pos:b - pos])
        outs.append(x_out[a - pos:b - pos])
        spans.append((step, a, b, node))
        at = b
    if at != hi:
        raise ExecError(f"kept inputs of {st.stage} end at {at}, not {hi}")
    return (np.ascontiguousarray(np.concatenate(ins), dtype="<f4"),
            np.ascontiguousarray(np.concatenate(outs), dtype="<f4"), spans)


async def audit_stage(s: HiveSession, i: int, refused: list[bytes] | None = None,
                      first: int = 0) -> bool:
    """Recompute stage `i`'s accepted steps as one prefill; True if all held. An auditor found
    lying is convicted, and one that lies, fails or stays silent is replaced by another; after
    MAX_AUDITORS of them (`first` already tried, the `refused` ones) the asker audits the
    stage itself."""
    st = s.stages[i]
    inputs, outputs, spans = rows_of(st, 0, max(seg[1] + seg[2].shape[0] for seg in st.segments))
    workers = {node for *_, node in spans}
    refused = list(refused or [])
    for k in range(first, MAX_AUDITORS + 1):  # the last round is the asker's own
        auditor = auditor_for(s, i, [*workers, *refused]) if k < MAX_AUDITORS else None
        if auditor is not None:
            try:
                audit, kernel, statements = await remote(s, i, auditor, inputs)
            except AuditorFailed as exc:  # another audits (or the asker): the answer stays checked
                failed(s, i, auditor, exc)
                refused.append(auditor)
                continue
            await keep_warm(s, i, auditor, inputs[:1])
        else:
            audit, kernel = await _local(s, st, inputs)
            statements = []
        verdict = await check(s, i, spans, outputs, audit, kernel, auditor, statements)
        if verdict:
            settle(s, i, auditor)
            return True
        if verdict is False:
            return False
        if auditor is None:
            return False
        refused.append(auditor)  # it lied (convicted): ask another
    return False


def failed(s: HiveSession, i: int, auditor: bytes, exc: AuditorFailed) -> None:
    """An auditor did not deliver: logged, and banned as a silent replica is if it was silent."""
    logger.warning("stage %s: %s", s.stages[i].stage, exc)
    if isinstance(exc, SilentAuditor):
        s.verifier.ban_silent(auditor, f"silent on the audit of {s.stages[i].stage}")


def _usable(s: HiveSession, i: int, exclude: list[bytes]) -> list[bytes]:
    """Nodes that may audit stage `i` (what `HiveSession.spare_for` takes, in no order)."""
    st = s.stages[i]
    client = s.client
    return [n for n in s.spares
            if n not in st.nodes and n not in exclude and n not in st.failed
            and client.same_mode(n, st.weights) and not client.reputation.excluded(n)
            and client.node.peers.best(n) is not None]


def auditor_for(s: HiveSession, i: int, exclude: list[bytes]) -> bytes | None:
    """The stage's kept auditor if it can still audit, else one drawn from the client's order
    (preferring a node that audits no other stage, so each keeps one stage loaded)."""
    kept = auditors_of(s.client)
    stage = s.stages[i].stage
    usable = _usable(s, i, exclude)
    mine = kept.kept.get(stage)
    if mine in usable:
        return mine
    others = {n for st, n in kept.kept.items() if st != stage}
    usable.sort(key=lambda n: (n in others, hashlib.blake2b(kept.salt + n).digest()))
    if not usable:
        kept.kept.pop(stage, None)
        return None
    kept.kept[stage] = usable[0]
    return usable[0]


def stage_weights(cfg: LlamaConfig, stage: Stage) -> float:
    """How many weights `stage` holds (its part of each of its layers' matrices)."""
    attn = cfg.hidden * cfg.head_dim * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)
    mlp = 3 * cfg.hidden * cfg.ffn
    per = {Part.FULL: attn + mlp, Part.ATTENTION: attn, Part.MLP: mlp}[stage.part]
    return float(per * (stage.end - stage.start))


async def keep_warm(s: HiveSession, i: int, auditor: bytes, row: np.ndarray) -> None:
    """Leave a one-row session of the client's own open on the auditor: the stage stays
    loaded there for the next audit (until that session's idle eviction), where the stage is
    small enough (`WARM_MAX_WEIGHTS`) for an auditor to hold beside its own layers."""
    st = s.stages[i]
    if stage_weights(s.client.local.config, st.stage) > WARM_MAX_WEIGHTS:
        return
    hop = Hop(auditors_of(s.client).warm_session, s.next_replay_step(), st.stage, 0, 1,
              np.ascontiguousarray(row, dtype="<f4").tobytes())
    billed = st.work.get(auditor)
    kept = list(billed) if billed is not None else None
    try:
        await asyncio.wait_for(s.ask(auditor, hop, keep=False), WARM_TIMEOUT_S)
    except (Unavailable, BadAnswer, NeedsRebuild, TimeoutError) as exc:
        logger.info("could not keep %s warm on %s: %s", st.stage, auditor.hex()[:12], exc)
    finally:  # not this session's work: it serves the client's next audit
        if kept is None:
            st.work.pop(auditor, None)
        else:
            st.work[auditor] = kept


async def check(s: HiveSession, i: int, spans: list[tuple[int, int, int, bytes]],
                outputs: np.ndarray, audit: np.ndarray, kernel: str, auditor: bytes | None,
                statements: list[Statement], base: int = 0) -> bool | None:
    """True: every row held; False: a worker lied (or nothing could judge who did); None: the
    auditor lied (convicted: try another). `outputs` and `audit` hold rows from `base` on;
    `spans` are in the session's positions, `statements` are all of the auditor's so far."""
    st = s.stages[i]
    for step, lo, hi, node in spans:
        bad = outside_audit(outputs[lo - base:hi - base], _kernel_of(st, node),
                            audit[lo - base:hi - base], kernel)
        if not len(bad):
            continue
        logger.warning("audit of %s: %d rows of step %d from %s are off", st.stage, len(bad),
                       step, node.hex()[:12])
        found = await _convict_worker(s, i, step, node)
        if found:
            s.tainted = True
            return False
        if found is None or auditor is None:  # nothing here could judge who lied
            return False
        await _convict_auditor(s, i, auditor, statements, lo)
        return None
    return True


def settle(s: HiveSession, i: int, auditor: bytes | None) -> None:
    """Every accepted step of stage `i` was recomputed and held: the stage is audited."""
    st = s.stages[i]
    workers = [seg[4] for seg in sorted(st.segments, key=lambda seg: seg[1])]
    last = max(seg[0] for seg in st.segments)
    st.audited = True
    nodes = tuple(dict.fromkeys([*workers, *([auditor] if auditor else [])]))
    s.client.emit(Verified(s.session_id, trial_id(last, st.stage.start, st.stage.part),
                           nodes, time.monotonic()))


def _kernel_of(st: StageState, node: bytes) -> str:
    hist = st.history.get(node)
    if not hist:
        raise ExecError(f"no signed steps of {node.hex()[:12]} to audit")
    return hist[-1][0].kernel


Statement = tuple[Attestation, bytes, bytes]


async def remote(s: HiveSession, i: int, auditor: bytes, inputs: np.ndarray,
                 start: int = 0) -> tuple[np.ndarray, str, list[Statement]]:
    """The auditor's recomputation of the rows from position `start` on (its cache for this
    stage holds the rows before them: none for a whole audit, it never served the stage)."""
    st = s.stages[i]
    n = s.client.max_hop_tokens
    outs: list[np.ndarray] = []
    statements: list[Statement] = []
    kernel = ""
    try:
        for lo in range(0, inputs.shape[0], n):
            part = np.ascontiguousarray(inputs[lo:lo + n])
            hop = Hop(s.session_id, s.next_replay_step(), st.stage, start + lo, part.shape[0],
                      part.tobytes())
            # The hedging grace of a step of these rows: a silent auditor (it takes the
            # request and never answers) would otherwise hold the session's end for the
            # whole request timeout.
            grace = s.verifier.silent_after(i, start + lo + part.shape[0])
            try:
                # In this task, not a task of its own (`wait_for`): Python 3.11 could leave such
                # a task cancelling for good when its deadline passed during a streamed chunk.
                async with asyncio.timeout(grace):
                    a = await s.ask(auditor, hop, keep=False)
            except TimeoutError:
                raise SilentAuditor(f"auditor {auditor.hex()[:12]} did not answer within "
                                    f"{grace:.1f} s") from None
            outs.append(a.out)
            if a.attestation is not None:
                kernel = a.attestation.kernel
                statements.append((a.attestation, hop.input_bytes, a.out_bytes))
    except (Unavailable, BadAnswer, NeedsRebuild) as exc:
        raise AuditorFailed(f"auditor {auditor.hex()[:12]} failed: {exc}") from None
    if not kernel:
        raise AuditorFailed(f"auditor {auditor.hex()[:12]} sent no attestation")
    return np.concatenate(outs), kernel, statements


async def _local(s: HiveSession, st: StageState, inputs: np.ndarray) -> tuple[np.ndarray, str]:
    """The asker's own recomputation (no spare to ask)."""
    replayer = s.client.reputation.replayer
    if replayer is None:
        raise ExecError("no spare and no model here to audit with")
    some = next(iter(st.history.values()))[-1][0]
    job = ReplayJob(some.model, st.stage.start, st.stage.end, st.stage.part, some.kv,
                    some.kernel, ((0, inputs.shape[0], inputs.tobytes()),))
    again = await s.client.local_call(replayer.replay, job)
    rows = np.frombuffer(again.output, dtype="<f4").reshape(inputs.shape[0], -1)
    return rows, again.kernel


async def _convict_worker(s: HiveSession, i: int, step: int, node: bytes) -> bool | None:
    st = s.stages[i]
    for att, data, out in st.history.get(node, []):
        if att.step == step:
            hop = Hop(s.session_id, step, st.stage, att.position, att.tokens, data)
            arr = np.frombuffer(out, dtype="<f4").reshape(att.tokens, -1)
            answer = Answer(node, arr, out, att, 0.0)
            return await s.verifier.convict(i, hop, answer, "an audit recomputed it otherwise")
    logger.warning("no signed step %d of %s to convict it on", step, node.hex()[:12])
    return None


async def _convict_auditor(s: HiveSession, i: int, auditor: bytes,
                           statements: list[Statement], row: int) -> None:
    """The worker replayed right, so the audit was wrong: convict the auditor on its steps."""
    rep = s.client.reputation
    upto = [st for st in statements if st[0].position <= row]
    if not upto or rep.replayer is None:
        rep.distrust(auditor)
        return
    ev = make_evidence([(a, d) for a, d, _ in upto], upto[-1][2], "audit contradicted a replay")
    try:
        offender = await s.client.local_call(check_evidence, ev, rep.replayer)
    except EvidenceError as exc:
        logger.warning("audit disagreement on %s unresolved: %s", s.stages[i].stage, exc)
        return
    rep.record(ev, offender)
    if s.client.publish is not None:
        s.client.publish(ev, offender)
