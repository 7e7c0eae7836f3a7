"""A server's per-session state goes when the session ends, not minutes later at idle eviction.

The soak (`bench/bench_soak.py`) grew its serving nodes' RSS by ~9 MB a minute: every session
a node ran and was never told had ended kept its KV caches (a 64-position buffer per layer,
~2.7 MB for SmolLM2's 28 served layers, even for a one-row session) for the 5-minute idle
eviction. Sessions went untold when the asker skipped the node at payment (a slashed liar, a
replica a hedge outran before it answered a step) and when the asker dropped its mesh node
(a throwaway key per few asks) with sessions open on it (a failed ask, the auditor's warm row).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hive_core.exec import Fault, generate_hive
from hive_core.exec import audit as audit_mod
from hive_core.exec import server as server_mod
from hive_core.exec.hive import build_hive
from hive_core.exec.open_sessions import OpenSessions

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 6


async def ask(hive: Any, finish: bool = True) -> Any:
    s = hive.client.new_session()
    await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64), 60)
    if finish:
        await asyncio.wait_for(s.finish(), 60)
    return s


async def settled(cond: Any, within_s: float = 5.0) -> bool:
    """Whether `cond()` holds within `within_s` (messages and compute-thread jobs land)."""
    end = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_a_slashed_liar_is_told_the_session_ended(tiny_gguf, tiny_file) -> None:
    """A careless liar (zeros) alone on its stage is slashed by the audit and gets no receipt;
    it is still told the session ended, so its caches go now (before: kept until idle
    eviction)."""
    hive = await build_hive(tiny_gguf, 2, spares=2, model=tiny_file,
                            faults={1: Fault.parse("zero")})
    try:
        s = await ask(hive)
        liar = hive.servers[1]
        assert hive.client.reputation.slashed == [liar.node.node_id] and s.tainted
        assert not liar.receipts

        def of_the_ask() -> list[Any]:
            return [k for srv in hive.servers for k in srv.sessions if k[1] == s.session_id]

        assert await settled(lambda: not of_the_ask()), of_the_ask()
        # What stays is the client's one-row warm session on its auditors, on purpose.
        warm = audit_mod.auditors_of(hive.client).warm_session
        assert all(k[1] == warm for srv in hive.servers for k in srv.sessions)
    finally:
        await hive.close()


async def test_sessions_of_an_asker_whose_links_went_are_dropped_at_once(tiny_gguf,
                                                                         tiny_file) -> None:
    """An asker that leaves with sessions open (an ask that failed half-way; a client closed
    for a new key) costs its servers nothing after its last link goes."""
    hive = await build_hive(tiny_gguf, 2, model=tiny_file)
    try:
        for _ in range(3):
            await ask(hive, finish=False)
        assert all(len(srv.sessions) >= 3 for srv in hive.servers)  # and the audits' ones
        assert all(srv.config.idle_evict_s >= 300 for srv in hive.servers)
        for srv in hive.servers:
            await srv.node.drop(hive.asker.node_id, "the asker left")
        assert await settled(lambda: not any(srv.sessions for srv in hive.servers))
        assert all(srv.stats.evicted == 0 for srv in hive.servers)  # ended, not idle-evicted
        assert all(not srv.open_sessions and not srv._boxes for srv in hive.servers)
    finally:
        await hive.close()


async def test_sessions_through_a_node_leave_its_tables_bounded(tiny_gguf, tiny_file,
                                                                monkeypatch) -> None:
    """N finished sessions leave no session state on the servers, and the receipts a server
    keeps for status stay under their cap (its hooks see every one)."""
    monkeypatch.setattr(server_mod, "KEPT_RECEIPTS", 2)
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file)
    hooked: list[Any] = []
    for srv in hive.servers:
        srv.receipt_hooks.append(hooked.append)
    try:
        sessions = [await ask(hive) for _ in range(7)]
        assert await settled(lambda: len(hooked) == 7 * len(hive.servers))
        assert await settled(lambda: not any(srv.sessions for srv in hive.servers))
        for srv in hive.servers:
            assert not srv.open_sessions
            assert 2 <= len(srv.receipts) <= 4
            assert srv.receipts[-1].session_id == sessions[-1].session_id
    finally:
        await hive.close()


def test_open_sessions_are_bounded_and_forgotten_with_their_asker() -> None:
    o = OpenSessions(per_asker=2, askers=2)
    for asker in (b"a", b"b", b"c"):
        for k in range(3):
            o.opened(asker, bytes([k]))
    assert len(o) == 4  # 2 askers (a, the least recent, forgotten) x their 2 newest
    assert o.gone(b"a") == []
    o.ended(b"b", b"\x01")
    assert o.gone(b"b") == [b"\x02"] and o.gone(b"b") == []
    o.opened(b"c", b"\x01")  # active again: the newest
    assert o.gone(b"c") == [b"\x02", b"\x01"] and len(o) == 0
    with pytest.raises(ValueError, match="at least one"):
        OpenSessions(per_asker=0, askers=1)
