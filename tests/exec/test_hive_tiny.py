"""The hive on the tiny model over in-memory links: same tokens as local, verified (replicas or
audits), slashing on recomputed evidence, failover, speculative decoding, receipts, events,
the asker's own first and last layers, and refusal of bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import torch

from hive_core import events as ev
from hive_core.base.stage import Part, Stage
from hive_core.exec import ClientConfig, Fault, FaultSpecError, SpecStats, generate_hive
from hive_core.exec.generate import LocalSessionAdapter, prompt_lookup
from hive_core.exec.hive import build_hive
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory
from hive_core.model.sampling import Sampler
from hive_core.protocol.inference import KvKind, RunStage
from hive_core.trust import check_evidence

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 16
# Every layer on the servers (the tests about splitting place layers by hand), and no hedge
# on a loaded machine: these tests assert which server served what.
NO_LOCAL = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)


def local_ids(tiny_local: Any, kv: str = "fp32", seed: int = 7) -> list[int]:
    g = generate(tiny_local.new_session(kv_factory(kv)).forward, PROMPT, max_new_tokens=N,
                 context_length=64, sampler=Sampler(1.0, seed=seed))
    return g.new_ids


async def hive_ids(hive: Any, seed: int = 7, **kw: Any) -> tuple[list[int], Any]:
    s = hive.client.new_session()
    g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64,
                                             sampler=Sampler(1.0, seed=seed), **kw), 60)
    await s.finish()
    return g.new_ids, s


@pytest.mark.parametrize("weights", ["fp32", "packed"])
async def test_two_stage_hive_equals_local(tiny_gguf, tiny_file, tiny_local, weights) -> None:
    from hive_core.model.packed import PACKED, unfused
    from hive_core.model.pipeline import LocalPipeline

    kv = "fp32"  # INT4 needs head_dim >= 64: tested on the real model
    cfg = replace(NO_LOCAL, kv=KvKind.FP32 if kv == "fp32" else KvKind.INT4)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=cfg, weights=weights)
    local = tiny_local if weights == "fp32" else LocalPipeline.load_single(tiny_file, weights=weights)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(local, kv)
        # The same mode gives the same numbers, split or not, to the bit (which mode ran is
        # checked on the servers' weights below; both modes compute in float32, so on this
        # tiny model their numbers may agree to the bit too).
        steps = [PROMPT, [3], [40, 7]]
        remote, same = hive.client.new_session(), local.new_session(kv_factory(kv))
        for step in steps:
            got = await remote.forward(step)
            assert torch.equal(got, same.forward(step))
        # One replica per stage and no spare: the asker audited each stage itself.
        assert s.verified and all(st.audited for st in s.stages)
        # Each server loaded only its own layers, held in the hive's mode.
        held = [(sorted(srv.executors[0].weights.attention), sorted(srv.executors[0].weights.mlp))
                for srv in hive.servers]
        assert held == [([0, 1], [0, 1]), ([2, 3], [2, 3])]
        for srv in hive.servers:
            w = srv.executors[0].weights
            assert w.embedding is None and w.head is None
            matrices = [m for a in w.attention.values() for m in (a.q, a.k, a.v, a.o)]
            matrices += [m for f in w.mlp.values() for m in (f.gate, f.up, f.down)]
            assert all(isinstance(unfused(m), PACKED) == (weights == "packed") for m in matrices)
        # Receipts: client-signed, kept by the worker, for its own layers and for the stage it
        # audited (one prefill of the same rows).
        await asyncio.sleep(0.05)
        for srv, own, audited in zip(hive.servers, [(0, 2), (2, 4)], [(2, 4), (0, 2)], strict=True):
            got = {(r.layer_start, r.layer_end): r for r in srv.receipts}
            assert set(got) == {own, audited}
            for r in got.values():
                r.verify()
                assert r.worker_id == srv.node.node_id and r.tokens == len(PROMPT) + N - 1
    finally:
        await hive.close()


@pytest.mark.parametrize("fault", ["noise", "zero", "stale"])
async def test_three_replicas_outvote_a_faulty_node(tiny_gguf, tiny_file, tiny_local, fault) -> None:
    seen: list[Any] = []
    hive = await build_hive(tiny_gguf, 6, replicas=3, model=tiny_file,
                            faults={1: Fault.parse(fault)}, on_event=seen.append)
    try:
        ids, s = await hive_ids(hive)
        bad = hive.servers[1].node.node_id
        assert ids == local_ids(tiny_local)
        assert s.verified
        assert hive.client.reputation.slashed == [bad]
        assert hive.client.reputation.excluded(bad)
        [evidence] = hive.client.reputation.evidence
        assert check_evidence(evidence) == bad
        kinds = {type(e) for e in seen}
        assert {ev.Verified, ev.Slashed, ev.ReplicaAnswered, ev.HopSent, ev.StageStarted,
                ev.ReceiptIssued} <= kinds
        assert not hive.servers[1].receipts
    finally:
        await hive.close()


async def test_two_disagreeing_replicas_are_settled_by_recomputing(tiny_gguf, tiny_file,
                                                                  tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, model=tiny_file,
                            stages=[Stage(0, 2), Stage(2, 4)], faults={0: Fault.parse("noise")},
                            client_config=NO_LOCAL)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert hive.client.reputation.slashed == [hive.servers[0].node.node_id]
        assert s.verified and not s.tainted
    finally:
        await hive.close()


async def test_two_disagreeing_replicas_call_a_referee_where_nothing_recomputes(
        tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, model=tiny_file,
                            stages=[Stage(0, 2), Stage(2, 4)], faults={0: Fault.parse("noise")},
                            client_config=NO_LOCAL)
    hive.client.reputation.replayer = None  # an asker without the model's layers
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        bad = hive.servers[0].node.node_id
        # Outvoted, left out here; with nothing recomputed, no evidence is published.
        assert hive.client.reputation.excluded(bad) and hive.client.reputation.slashed == []
        assert s.verified and s.replays >= 1
    finally:
        await hive.close()


async def test_crash_with_a_replica_holding_kv_needs_no_replay(tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file,
                            faults={2: Fault.parse("crash-after=4")})
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.replays == 0 and s.failovers == 0
        assert hive.servers[2].node.node_id not in s.stages[1].nodes
    finally:
        await hive.close()


async def test_crash_of_the_only_replica_fails_over_to_a_spare(tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 2, spares=1, model=tiny_file,
                            faults={1: Fault.parse("crash-after=5")})
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.failovers == 1 and s.replays == 1
        # The spare is drawn per session among the nodes that can load the stage.
        [took_over] = s.stages[1].nodes
        assert took_over in (hive.servers[0].node.node_id, hive.servers[2].node.node_id)
    finally:
        await hive.close()


async def test_audits_verify_single_replicas_and_catch_a_liar(tiny_gguf, tiny_file) -> None:
    """A careless liar (zeros) alone on its stage: the end-of-session audit on a spare
    recomputes the stage in one prefill, and the liar is slashed on its own signed steps."""
    hive = await build_hive(tiny_gguf, 2, spares=2, model=tiny_file,
                            faults={1: Fault.parse("zero")})
    try:
        _, s = await hive_ids(hive)
        bad = hive.servers[1].node.node_id
        assert s.stages[0].audited and not s.stages[1].audited
        assert hive.client.reputation.slashed == [bad]
        assert s.tainted and not s.verified  # the lie was used before the audit caught it
        assert not hive.servers[1].receipts  # a slashed node is not paid for the session
        assert any(srv.stats.requests for srv in hive.servers[2:])  # a spare audited
    finally:
        await hive.close()


async def test_speculative_decoding_equals_greedy(tiny_gguf, tiny_file, tiny_local) -> None:
    prompt = [5, 9, 12, 7, 5, 9, 12, 7, 5, 9, 12, 7, 33]
    local = LocalSessionAdapter(tiny_local.new_session(kv_factory("fp32")))
    ref = await generate_hive(local, prompt, max_new_tokens=20, context_length=64)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file)
    try:
        stats = SpecStats()
        s = hive.client.new_session()
        g = await generate_hive(s, prompt, max_new_tokens=20, context_length=64, speculate=4,
                                stats=stats)
        assert g.new_ids == ref.new_ids
        assert stats.passes > 0 and stats.accepted > 0
        assert s.position == len(prompt) + 19
    finally:
        await hive.close()


def test_prompt_lookup() -> None:
    assert prompt_lookup([1, 2, 3, 4, 1, 2], 2) == [3, 4]
    assert prompt_lookup([1, 2, 3, 9, 2, 3, 7, 2, 3], 3) == [7, 2, 3]
    assert prompt_lookup([1, 2, 3], 2) == []
    assert prompt_lookup([1, 1], 0) == []


def test_fault_parsing() -> None:
    assert str(Fault.parse("crash-after=3")) == "crash-after=3"
    assert str(Fault.parse(" NOISE ")) == "noise"
    for bad in ("crash-after", "crash-after=x", "melt", ""):
        with pytest.raises(FaultSpecError):
            Fault.parse(bad)


async def test_server_refuses_bad_requests_cleanly(tiny_gguf, tiny_file) -> None:
    hive = await build_hive(tiny_gguf, 1, model=tiny_file, client_config=NO_LOCAL)
    try:
        srv, asker = hive.servers[0], hive.asker
        sid = b"q" * 16

        async def run(**kw: Any) -> Any:
            fields: dict[str, Any] = {
                "rpc_id": asker.next_rpc_id(), "session_id": sid, "step": 0, "layer_start": 0,
                "layer_end": 4, "part": Part.FULL, "position": 0, "tokens": 1,
                "kv": KvKind.FP32, "attest": True, "payload": b"garbage"}
            fields.update(kw)
            return await asker.request(srv.node.node_id, RunStage(**fields), timeout=10)

        r = await run()
        assert not r.ok and "decrypt" in r.error
        r = await run(position=5)
        assert not r.ok and "decrypt" in r.error
        r = await run(layer_end=9)
        assert not r.ok and "past the model" in r.error
        # A session the server does not hold must be rebuilt, not guessed.
        s = hive.client.new_session()
        s.position = 3
        from hive_core.exec.answer import Hop, NeedsRebuild

        with pytest.raises(NeedsRebuild):
            await s.ask(srv.node.node_id, Hop(s.session_id, 0, Stage(0, 4), 3, 1, bytes(64 * 4)))
        assert srv.stats.errors >= 4 and not srv.crashed
    finally:
        await hive.close()


async def test_idle_sessions_are_evicted(tiny_gguf, tiny_file) -> None:
    hive = await build_hive(tiny_gguf, 1, model=tiny_file)
    try:
        s = hive.client.new_session()
        await s.forward(PROMPT)
        srv = hive.servers[0]
        assert len(srv.sessions) == 1
        assert srv.evict_idle(now=1e12) == 1 and not srv.sessions
        # The client notices the loss and rebuilds the cache from its kept inputs.
        logits = await s.forward([3])
        assert s.replays == 1 and logits.shape == (tiny_file.config.vocab_size,)
    finally:
        await hive.close()


async def test_no_spare_left_is_a_clear_error(tiny_gguf, tiny_file) -> None:
    from hive_core.exec import NoReplicaError

    # One server: nobody can take over (with two, the other would load the stage itself).
    hive = await build_hive(tiny_gguf, 1, model=tiny_file, faults={0: Fault.parse("crash-after=2")})
    try:
        s = hive.client.new_session()
        with pytest.raises(NoReplicaError, match="no spare"):
            await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64),
                                   30)
        # The kept inputs hold only completed steps, ready for a retry elsewhere.
        assert all(seg[1] < s.position for st in s.stages for seg in st.segments)
    finally:
        await hive.close()



async def speculation_rolls_back_local_layers(hive) -> None:
    """Speculative rollbacks also roll back the asker's own layers' caches."""
    spec = hive.client.new_session()
    g = await generate_hive(spec, [5, 9, 12, 7, 5, 9, 12, 7, 5, 9], max_new_tokens=12,
                            context_length=64, speculate=3)
    assert all(len(c) == spec.position for c in spec.local_caches.values())
    assert len(g.new_ids) == 12

async def test_first_layers_can_stay_on_the_asker(tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 3, model=tiny_file,
                            client_config=ClientConfig(local_layers=1, local_tail_layers=0))
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert [str(st.stage) for st in s.stages] == ["1:2:full", "2:3:full", "3:4:full"]
        assert all(0 not in srv.executors[0].weights.attention for srv in hive.servers)
        await speculation_rolls_back_local_layers(hive)
    finally:
        await hive.close()


async def test_by_default_the_asker_keeps_its_first_and_last_layers(tiny_gguf, tiny_file,
                                                                    tiny_local) -> None:
    hive = await build_hive(tiny_gguf, 2, model=tiny_file)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert [str(st.stage) for st in s.stages] == ["1:2:full", "2:3:full"]
        held = {layer for srv in hive.servers for layer in srv.executors[0].weights.attention}
        assert held == {1, 2}  # no server holds layer 0 (embeddings in) or 3 (head's input)
        await speculation_rolls_back_local_layers(hive)
    finally:
        await hive.close()
