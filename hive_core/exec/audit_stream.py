"""Streaming audits: a single-replica stage is recomputed during the decode, chunk by chunk.

The end-of-session audit (`audit`) recomputes every accepted step of a stage no replica
checked, as one prefill, after the last token: the answer waits for it. Here the same audit
runs while the answer is decoded: as soon as the prompt's rows are accepted they go to the
stage's auditor, then every `STREAM_ROWS` decode rows the next chunk, each chunk one prefill
extending the auditor's own cache for the session's stage (its requests carry the session's
id and positions, so the rows before a chunk are already there). At the end of the session
only the rows since the last chunk remain (`AuditStream.finish`). It pays where the auditor
is a device of its own, idle between its steps; where the nodes share the asker's cores (the
in-process hives of bench_infer, 2 cores) the chunks slowed the decode by more than they
saved at the end (smaller prefills cost more per row, and two threads driving torch at once
throttle each other), so it is opt-in: `ClientConfig.stream_audits`.

Nothing checked is weakened: each chunk's rows are compared as the whole audit compares them
(`audit.check`, the same per-row bound), a lie found in a chunk convicts its worker or the
auditor as at the end, every row is recomputed exactly once, and a stage counts as audited
only once its last chunk held (`audit.settle`). A chunk is taken from the rows before the
current step only, so speculative rollbacks (which never go below the step being run) leave
it alone; a rollback below the rows audited starts the stream again from the first row. An
auditor that fails, stays silent, lies, or comes to serve the stage itself stops the stream,
and the end-of-session audit recomputes the whole stage on another node, as without
streaming.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hive_core.exec.audit import (
    MAX_AUDITORS,
    AuditorFailed,
    Statement,
    audit_stage,
    auditor_for,
    check,
    draw_term,
    due,
    failed,
    keep_warm,
    remote,
    rows_of,
    settle,
)
from hive_core.exec.errors import ExecError
from hive_core.trust import TrustError

if TYPE_CHECKING:
    from hive_core.exec.client import HiveSession

logger = logging.getLogger(__name__)
# Decode rows a chunk waits for (the prompt's rows go in the first chunk whatever their
# number): fewer leaves less for the session's end but costs more, as a chunk is a prefill
# and small ones are dear (SmolLM2, 7 fp32 layers: 72 rows in chunks of 8 took 3x one 72-row
# prefill, one row at a time 15x).
STREAM_ROWS = 16


class Outcome(enum.Enum):
    """Where one stage's stream stands."""

    LIVE = "live"  # every chunk so far held
    BROKEN = "broken"  # the auditor failed, lied or serves the stage: the whole audit at the end
    CONVICTED = "convicted"  # a worker lied (or no one could be judged): the stage is not audited


@dataclass
class _Stream:
    """One stage's audit so far: rows [0, done) recomputed on `auditor` and found right."""

    auditor: bytes
    done: int = 0
    kernel: str = ""
    statements: list[Statement] = field(default_factory=list)  # the auditor's signed chunks
    outcome: Outcome = Outcome.LIVE
    warm: bool = False  # the auditor was asked to keep the stage loaded (`audit.keep_warm`)
    task: asyncio.Task[None] | None = None  # the chunk in flight


class AuditStream:
    """A session's streaming audits (`ClientConfig.stream_audits`): `tick` before and after each
    step, `finish` at the session's end."""

    def __init__(self, session: HiveSession) -> None:
        self.s = session
        self.streams: dict[int, _Stream] = {}
        self.refused: dict[int, list[bytes]] = {}  # per stage: auditors that stopped a stream
        self._term_drawn = False

    def draw_term(self) -> None:
        """Re-draw the client's auditors at most once per session (`audit.draw_term`)."""
        if not self._term_drawn:
            self._term_drawn = True
            draw_term(self.s)

    def tick(self, after: bytes | None = None) -> None:
        """Send each due stage's rows accepted since its last chunk to its auditor, where no
        chunk is in flight and enough rows wait (the prompt's at once).

        A node computes in request order, so a chunk holds up the auditor's own next step if
        it serves a stage of the session: its chunks go when it has just answered a step
        (`after`, the node that did), with a whole step of the others before its next; the
        chunks of an auditor serving none go before each step (`after` None), as do all in a
        cascade (whose steps do not come back node by node)."""
        s = self.s
        if not (s.client.config.verify and s.client.config.stream_audits):
            return
        upto = s.position  # rows of steps already taken: no rollback reaches below them
        serving: set[bytes] = set() if s.client.config.topology == "cascade" else {
            n for st in s.stages for n in st.nodes}
        for i in range(len(s.stages)):
            stream = self.streams.get(i)
            if stream is not None and (stream.outcome is not Outcome.LIVE
                                       or (stream.task is not None and not stream.task.done())):
                continue
            if not due(s, i):
                continue
            if stream is None:
                self.draw_term()
                stream = self._start(i)
                if stream is None:
                    continue
            goes_now = stream.auditor == after if stream.auditor in serving else after is None
            if not goes_now:
                continue
            if upto <= stream.done or (stream.done and upto - stream.done < STREAM_ROWS):
                continue
            stream.task = s.client.node.spawn(self._chunk(i, stream, upto),
                                              name=f"audit chunk of {s.stages[i].stage}")

    def _start(self, i: int) -> _Stream | None:
        st = self.s.stages[i]
        workers = {seg[4] for seg in st.segments}
        auditor = auditor_for(self.s, i, [*workers, *self.refused.get(i, [])])
        if auditor is None:  # no spare: the asker audits the whole stage at the end
            return None
        stream = self.streams[i] = _Stream(auditor)
        return stream

    def rollback(self, position: int) -> None:
        """Rows from `position` on are forgotten: a stream that audited any of them starts
        again (a chunk of forgotten rows still in flight is judged all the same: a lie in it
        was signed)."""
        for i, stream in list(self.streams.items()):
            if stream.outcome is Outcome.LIVE and stream.done > position:
                self.streams[i] = _Stream(stream.auditor, warm=stream.warm)

    async def _chunk(self, i: int, stream: _Stream, hi: int) -> None:
        """Recompute rows [stream.done, hi) on the stream's auditor and judge them."""
        s = self.s
        lo = stream.done
        try:
            inputs, outputs, spans = rows_of(s.stages[i], lo, hi)
            if stream.auditor in {node for *_, node in spans} or \
                    s.client.reputation.excluded(stream.auditor):
                stream.outcome = Outcome.BROKEN  # it serves the stage now, or was banned
                return
            try:
                audit, kernel, statements = await remote(s, i, stream.auditor, inputs, lo)
            except AuditorFailed as exc:
                failed(s, i, stream.auditor, exc)
                stream.outcome = Outcome.BROKEN
                return
            if stream.kernel and kernel != stream.kernel:
                raise ExecError(f"auditor {stream.auditor.hex()[:12]} changed kernel class "
                                f"mid-audit ({stream.kernel} -> {kernel})")
            stream.kernel = kernel
            stream.statements.extend(statements)
            verdict = await check(s, i, spans, outputs, audit, kernel, stream.auditor,
                                  stream.statements, lo)
            if verdict is None:  # the auditor lied and was convicted
                stream.outcome = Outcome.BROKEN
            elif not verdict:
                stream.outcome = Outcome.CONVICTED
            else:
                stream.done = hi
                if not stream.warm:
                    stream.warm = True
                    await keep_warm(s, i, stream.auditor, inputs[:1])
        except (ExecError, TrustError) as exc:
            logger.warning("streaming audit of %s stopped: %s", s.stages[i].stage, exc)
            stream.outcome = Outcome.BROKEN
        except BaseException:
            stream.outcome = Outcome.BROKEN  # cancelled (the node closes) or a bug: judged whole
            raise
        finally:
            if stream.outcome is Outcome.BROKEN:
                self.refused.setdefault(i, []).append(stream.auditor)

    async def finish(self, i: int) -> bool:
        """Audit what is left of stage `i`: the rows since the last chunk on its stream's
        auditor, or, if the stream stopped, the whole stage (`audit.audit_stage`). True if
        every accepted step held."""
        s = self.s
        stream = self.streams.get(i)
        if stream is not None and stream.task is not None:
            await asyncio.wait([stream.task])  # its failure is logged and marks the stream
        stream = self.streams.get(i)  # a rollback may have started it again
        if stream is not None and stream.outcome is Outcome.LIVE:
            end = s.position
            if end > stream.done:
                stream.task = s.client.node.spawn(self._chunk(i, stream, end),
                                                  name=f"audit chunk of {s.stages[i].stage}")
                await asyncio.wait([stream.task])
            if stream.outcome is Outcome.LIVE and stream.done == end:
                settle(s, i, stream.auditor)
                return True
        if stream is not None and stream.outcome is Outcome.CONVICTED:
            return False
        refused = self.refused.get(i, [])
        return await audit_stage(s, i, refused, first=min(len(refused), MAX_AUDITORS))
