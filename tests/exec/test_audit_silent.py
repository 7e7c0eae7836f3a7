"""Audits under silence and churn: a silent auditor costs a grace, not the request timeout.

Adversary: a silent node (`--fault silent`) that is a spare, so the asker picks it to audit a
stage served by one replica; it takes the audit request and never answers. Found by the soak
(`python -m bench soak`): the session's end waited for the whole request timeout (120 s by
default), so an ask hung. Now the auditor is banned as a silent replica is, and another
auditor (here: the asker itself) audits the stage.
"""

from __future__ import annotations

import asyncio
import time

from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.exec.server import ShardServer

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]


async def test_a_silent_auditor_is_banned_and_the_stage_audited_by_another(
        tiny_gguf, tiny_file) -> None:
    # One stage of one replica (audited at the end) and one spare, the silent one: the only
    # node besides the worker, so the asker's first choice of auditor.
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file,
                            faults={1: Fault.parse("silent")},
                            client_config=ClientConfig(request_timeout_s=60.0))
    silent = hive.servers[1].node.node_id
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=12, context_length=64),
                               60)
        assert all(silent not in st.nodes for st in s.stages)  # it only audits
        t0 = time.perf_counter()
        await asyncio.wait_for(s.finish(), 90)
        took = time.perf_counter() - t0
        assert took < 15, f"the silent auditor held the session's end for {took:.1f} s"
        assert all(st.audited for st in s.stages) and s.verified
        assert hive.client.reputation.banned(silent)
        assert hive.servers[1].stats.requests >= 1  # it did take the audit
    finally:
        await hive.close()


async def test_an_auditor_that_dies_mid_audit_is_replaced_and_the_answer_still_verified(
        tiny_gguf, tiny_file) -> None:
    """Adversary: churn, not malice: the only spare dies on the audit request (`--fault
    crash-after=0`), as a node killed with SIGKILL mid-audit does. The soak saw such answers
    left unverified; the asker now audits the stage itself instead."""
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file,
                            faults={1: Fault.parse("crash-after=0")})
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=12, context_length=64),
                               60)
        await asyncio.wait_for(s.finish(), 60)
        assert hive.servers[1].state is ShardServer.State.CRASHED  # on the audit's request
        assert all(st.audited for st in s.stages) and s.verified
    finally:
        await hive.close()


async def test_after_two_auditors_fail_the_asker_audits_the_stage_itself(tiny_gguf,
                                                                         tiny_file) -> None:
    """Adversaries: a silent spare and a spare that dies on the audit: the soak saw a session
    whose two auditors were the silent node and a node just killed, left unaudited."""
    hive = await build_hive(tiny_gguf, 1, spares=2, model=tiny_file,
                            faults={1: Fault.parse("silent"), 2: Fault.parse("crash-after=0")})
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=12, context_length=64),
                               60)
        await asyncio.wait_for(s.finish(), 60)
        assert hive.servers[2].state is ShardServer.State.CRASHED
        assert hive.client.reputation.banned(hive.servers[1].node.node_id)
        assert all(st.audited for st in s.stages) and s.verified
    finally:
        await hive.close()
