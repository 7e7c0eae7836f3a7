"""Streaming audits: a single-replica stage is recomputed chunk by chunk during the decode.

Adversary: a noisy liar alone on its stage (`Fault.crafted`: a visible shift of its output on
the steps the test picks), with one honest spare that audits it. A lie in an early chunk is
caught (and its worker slashed) before the session ends; a lie in the rows after the last
streamed chunk is caught by the session's end; an honest answer counts as verified only once
the last chunk held.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import torch

from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.audit_stream import Outcome, rows_of
from hive_core.exec.errors import ExecError
from hive_core.exec.hive import build_hive
from hive_core.exec.session_types import StageState

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 20  # new tokens: N - 1 one-row decode steps after the prompt's prefill
ROWS = len(PROMPT) + N - 1  # rows each stage computed (the last token is never fed)
CFG = ClientConfig(hedge_floor_s=60.0, stream_audits=True)  # no hedging: the spare audits


def lie_on(pick: Any) -> Fault:
    """A fault shifting the output of the requests `pick(rows, k)` picks (k: how many one-row
    requests came before this one)."""
    lock = threading.Lock()
    seen = [0]

    def perturb(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        with lock:
            k = seen[0]
            if out.shape[0] == 1:
                seen[0] += 1
        return out + 1.0 if pick(out.shape[0], k) else out

    return Fault.crafted(perturb)


async def decode(hive: Any) -> Any:
    """A session's answer, its in-flight audit chunk waited for, not yet finished."""
    s = hive.client.new_session()
    await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64), 60)
    stream = s.audit_stream.streams[0]
    if stream.task is not None:
        await asyncio.wait_for(asyncio.wait([stream.task]), 30)
    return s


async def test_an_answer_is_verified_only_once_its_last_chunk_held(tiny_gguf, tiny_file) -> None:
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=CFG)
    try:
        s = await decode(hive)
        stream = s.audit_stream.streams[0]
        assert stream.auditor == hive.servers[1].node.node_id
        assert stream.outcome is Outcome.LIVE
        assert len(PROMPT) <= stream.done < ROWS  # chunks held during the decode...
        assert not s.stages[0].audited and not s.verified  # ...yet not verified before the last
        await asyncio.wait_for(s.finish(), 30)
        assert stream.done == ROWS and s.stages[0].audited and s.verified
        await asyncio.sleep(0.2)  # receipts reach the nodes
        # Every row was recomputed once: the auditor is paid for exactly the session's rows.
        [receipt] = hive.servers[1].receipts
        assert receipt.tokens == ROWS
    finally:
        await hive.close()


async def test_a_lie_in_an_early_chunk_is_caught_during_the_decode(tiny_gguf, tiny_file) -> None:
    """The liar shifts its prefill's rows (the first chunk): slashed before the session ends,
    the answer not verified."""
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=CFG,
                            faults={0: lie_on(lambda rows, k: rows > 1)})
    bad = hive.servers[0].node.node_id
    try:
        s = await decode(hive)
        assert hive.client.reputation.slashed == [bad]  # before `finish`
        assert s.audit_stream.streams[0].outcome is Outcome.CONVICTED
        assert s.tainted and not s.verified
        await asyncio.wait_for(s.finish(), 30)
        assert not s.stages[0].audited and s.tainted and not s.verified
        assert hive.client.reputation.slashed == [bad]
    finally:
        await hive.close()


async def test_a_lie_in_the_last_chunk_is_caught_at_the_end(tiny_gguf, tiny_file) -> None:
    """The liar shifts only its last decode step, after the last chunk streamed: nothing is
    found during the decode, and the session's end catches it."""
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=CFG,
                            faults={0: lie_on(lambda rows, k: rows == 1 and k == N - 2)})
    bad = hive.servers[0].node.node_id
    try:
        s = await decode(hive)
        stream = s.audit_stream.streams[0]
        # The rows before the last step streamed and held; the lie (the last row) did not stream.
        assert stream.outcome is Outcome.LIVE and len(PROMPT) <= stream.done < ROWS
        assert hive.client.reputation.slashed == [] and not s.tainted
        await asyncio.wait_for(s.finish(), 30)
        assert hive.client.reputation.slashed == [bad]
        assert s.tainted and not s.stages[0].audited and not s.verified
    finally:
        await hive.close()


async def test_speculative_rollbacks_keep_every_row_audited_once(tiny_gguf, tiny_file) -> None:
    prompt = [5, 9, 12, 7, 5, 9, 12, 7, 5, 9, 12, 7, 33]
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=CFG)
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, prompt, max_new_tokens=20, context_length=64,
                                             speculate=4), 60)
        await asyncio.wait_for(s.finish(), 30)
        assert s.verified and s.stages[0].audited
        assert s.audit_stream.streams[0].done == s.position
    finally:
        await hive.close()


def test_rows_of_takes_the_rows_of_a_range_and_refuses_a_gap() -> None:
    st = StageState(Stage(1, 3), [b"w"])
    rows = np.arange(12, dtype="<f4").reshape(6, 2)
    st.segments = [(0, 0, rows[:3], -rows[:3], b"a"), (1, 3, rows[3:4], -rows[3:4], b"b"),
                   (2, 4, rows[4:6], -rows[4:6], b"a")]
    ins, outs, spans = rows_of(st, 2, 5)
    assert ins.tolist() == rows[2:5].tolist() and outs.tolist() == (-rows[2:5]).tolist()
    assert spans == [(0, 2, 3, b"a"), (1, 3, 4, b"b"), (2, 4, 5, b"a")]
    with pytest.raises(ExecError, match="end at 6, not 7"):
        rows_of(st, 4, 7)
    st.segments.pop(1)
    with pytest.raises(ExecError, match="gap at position 3"):
        rows_of(st, 0, 6)


async def test_by_default_the_whole_audit_runs_at_the_end(tiny_gguf, tiny_file) -> None:
    cfg = ClientConfig(hedge_floor_s=60.0)
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=cfg)
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64), 60)
        assert s.audit_stream.streams == {} and hive.servers[1].stats.requests == 0
        await asyncio.wait_for(s.finish(), 30)
        assert s.verified and s.stages[0].audited and hive.servers[1].stats.requests > 0
    finally:
        await hive.close()


async def test_a_silent_auditor_stops_the_stream_and_another_audits(tiny_gguf, tiny_file) -> None:
    """Adversary: a silent spare (`--fault silent`) drawn as the auditor: its first chunk goes
    unanswered, it is banned, and the asker audits the whole stage at the end, within a grace
    of the chunk (not the request timeout)."""
    cfg = ClientConfig(request_timeout_s=60.0, stream_audits=True)
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, client_config=cfg,
                            faults={1: Fault.parse("silent")})
    silent = hive.servers[1].node.node_id
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64), 60)
        assert s.audit_stream.streams[0].auditor == silent
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(s.finish(), 60)
        assert asyncio.get_running_loop().time() - t0 < 15
        assert s.audit_stream.streams[0].outcome is Outcome.BROKEN
        assert hive.client.reputation.banned(silent)
        assert s.stages[0].audited and s.verified
    finally:
        await hive.close()


async def test_auditors_serving_the_other_stage_stream_between_their_steps(tiny_gguf,
                                                                          tiny_file) -> None:
    """Two stages, no spare: each node audits the other's stage, its chunks sent as it answers
    its own step; both stages verified, each row audited once."""
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=CFG)
    try:
        s = await decode(hive)
        for i, st in enumerate(s.stages):
            stream = s.audit_stream.streams[i]
            assert stream.auditor != st.nodes[0] and stream.auditor in s.stages[1 - i].nodes
            assert stream.outcome is Outcome.LIVE and stream.done >= len(PROMPT)
        await asyncio.wait_for(s.finish(), 30)
        assert s.verified and all(st.audited for st in s.stages)
        await asyncio.sleep(0.2)
        for srv in hive.servers:  # its own stage's rows and the other stage's audit
            assert sorted(r.tokens for r in srv.receipts) == [ROWS, ROWS]
    finally:
        await hive.close()
