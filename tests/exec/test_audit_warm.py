"""Kept auditors: a client's audits stop reloading stages after its first session, every
stage is still audited every session, and the one-row session that keeps an auditor warm is
not billed."""

from __future__ import annotations

import asyncio
from typing import Any

from hive_core.base.stage import Part, Stage
from hive_core.exec import ClientConfig, generate_hive
from hive_core.exec import audit as audit_mod
from hive_core.exec.hive import build_hive
from hive_core.model.config import LlamaConfig
from hive_core.model.sampling import Sampler

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 6
CFG = ClientConfig(hedge_floor_s=60.0)


async def session(hive: Any) -> Any:
    s = hive.client.new_session()
    await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64,
                                         sampler=Sampler(1.0, seed=5)), 60)
    await asyncio.wait_for(s.finish(), 60)
    return s


def loads(hive: Any) -> int:
    return sum(len(srv.stats.loaded_stages) for srv in hive.servers)


async def test_audits_reload_nothing_after_the_first_session(tiny_gguf, tiny_file,
                                                             monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "AUDITOR_TERM", 1 << 60)  # no re-draw in this test
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=CFG)
    try:
        start = loads(hive)
        first = await session(hive)
        assert first.verified and all(st.audited for st in first.stages)
        after_first = loads(hive)
        assert after_first - start == 2  # each server loaded the stage it audits
        kept = dict(audit_mod.auditors_of(hive.client).kept)
        assert {st.stage: st.nodes[0] for st in first.stages}.keys() == kept.keys()
        assert all(kept[st.stage] != st.nodes[0] for st in first.stages)  # never the worker
        for _ in range(2):
            s = await session(hive)
            assert s.verified and all(st.audited for st in s.stages)
        assert loads(hive) == after_first  # kept warm: no load, yet audited each time
        assert audit_mod.auditors_of(hive.client).kept == kept
        # The keep-warm row is not billed: each receipt is what the session ran.
        await asyncio.sleep(0.1)
        for srv in hive.servers:
            for r in srv.receipts:
                assert r.tokens == len(PROMPT) + N - 1
    finally:
        await hive.close()


async def test_a_kept_auditor_that_can_no_longer_audit_is_replaced(tiny_gguf, tiny_file,
                                                                  monkeypatch) -> None:
    monkeypatch.setattr(audit_mod, "AUDITOR_TERM", 1 << 60)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=CFG, spares=1)
    try:
        first = await session(hive)
        kept = audit_mod.auditors_of(hive.client).kept
        stage = first.stages[0].stage
        gone = kept[stage]
        hive.client.reputation.ban(gone, "test: gone")
        s = await session(hive)
        assert s.verified and all(st.audited for st in s.stages)
        assert kept.get(stage) not in (None, gone)
    finally:
        await hive.close()



async def test_a_stage_too_big_to_hold_beside_its_own_is_not_kept_warm(tiny_gguf, tiny_file,
                                                                      monkeypatch) -> None:
    """Over `WARM_MAX_WEIGHTS` an auditor lets the stage go after each audit (its memory is
    for its own layers), so every session loads it again, and is still audited."""
    monkeypatch.setattr(audit_mod, "AUDITOR_TERM", 1 << 60)
    monkeypatch.setattr(audit_mod, "WARM_MAX_WEIGHTS", 0.0)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=CFG)
    try:
        start = loads(hive)
        for n in (1, 2):
            s = await session(hive)
            assert s.verified and all(st.audited for st in s.stages)
            await asyncio.sleep(0.2)  # the session's end reaches the auditors
            assert loads(hive) - start == 2 * n  # each audit loaded its stage again
    finally:
        await hive.close()


def test_stage_weights_counts_each_part() -> None:
    cfg = LlamaConfig(n_layers=32, hidden=4096, ffn=14336, n_heads=32, n_kv_heads=8,
                      vocab_size=128256, context_length=8192, rope_base=5e5, rms_eps=1e-5)
    full = audit_mod.stage_weights(cfg, Stage(0, 8))
    assert full == 8 * (4096 * 128 * 80 + 3 * 4096 * 14336)  # a quarter of Llama-3-8B's layers
    assert full > audit_mod.WARM_MAX_WEIGHTS
    assert (audit_mod.stage_weights(cfg, Stage(0, 8, Part.ATTENTION))
            + audit_mod.stage_weights(cfg, Stage(0, 8, Part.MLP))) == full
