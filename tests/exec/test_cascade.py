"""The compute cascade on the tiny model over in-memory links: the same tokens as the star and
as local generation, a liar caught and slashed, a node dying mid-cascade failed over, and a
node refusing to forward to a peer it was not linked to or that the route does not name."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part, Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.cascade_node import sign_route
from hive_core.exec.hive import build_hive
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory
from hive_core.model.sampling import Sampler
from hive_core.protocol.inference import (
    MAX_PAYLOAD,
    CascadeHop,
    CascadeResult,
    CascadeRoute,
    KvKind,
    RunCascade,
)
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tensor import Dtype
from hive_core.trust import check_evidence

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
N = 12
# Every layer on the servers, and no hedge on a loaded machine.
STAR = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)
CASCADE = replace(STAR, topology="cascade")


async def cascade_hive(tiny_gguf: Any, tiny_file: Any, n: int, cfg: ClientConfig = CASCADE,
                       **kw: Any) -> Any:
    """A hive whose servers are linked to each other too (`build_hive` does that for a
    cascade's client)."""
    return await build_hive(tiny_gguf, n, model=tiny_file, client_config=cfg, **kw)


def local_ids(tiny_local: Any) -> list[int]:
    g = generate(tiny_local.new_session(kv_factory("fp32")).forward, PROMPT, max_new_tokens=N,
                 context_length=64, sampler=Sampler(1.0, seed=7))
    return g.new_ids


async def hive_ids(hive: Any) -> tuple[list[int], Any]:
    s = hive.client.new_session()
    g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64,
                                             sampler=Sampler(1.0, seed=7)), 60)
    await s.finish()
    return g.new_ids, s


@pytest.mark.parametrize("replicas", [1, 2])
async def test_cascade_gives_the_star_s_and_local_tokens(tiny_gguf, tiny_file, tiny_local,
                                                         replicas) -> None:
    want = local_ids(tiny_local)
    star = await cascade_hive(tiny_gguf, tiny_file, 2 * replicas, STAR, replicas=replicas)
    try:
        star_ids, _ = await hive_ids(star)
    finally:
        await star.close()
    hive = await cascade_hive(tiny_gguf, tiny_file, 2 * replicas, replicas=replicas)
    try:
        ids, s = await hive_ids(hive)
        assert ids == star_ids == want
        # Every step went node to node: no fallback, and stage 0's carrier forwarded each one.
        assert s.cascaded == N and s.fallbacks == 0
        # No amplification: only stage 0's carrier forwards, once a step to each replica of
        # stage 1; its other replica and the last stage forward nothing.
        assert [srv.cascade.forwarded for srv in hive.servers] == (
            [N * replicas] + [0] * (2 * replicas - 1))
        assert s.verified and not s.tainted
        if replicas == 2:
            assert all(st.verified_steps == st.steps == N for st in s.stages)
    finally:
        await hive.close()


async def test_an_unverified_cascade_signs_nothing_and_answers_the_same(tiny_gguf, tiny_file,
                                                                       tiny_local) -> None:
    hive = await cascade_hive(tiny_gguf, tiny_file, 4, replace(CASCADE, verify=False),
                              replicas=2)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.cascaded == N and not s.verified
        assert not any(st.history for st in s.stages)  # no statements were asked for
    finally:
        await hive.close()


async def test_a_cascade_over_servers_computing_in_child_processes(tiny_gguf, tiny_file,
                                                                   tiny_local) -> None:
    """As a game hosts its shards: each server's compute in a process of its own."""
    hive = await cascade_hive(tiny_gguf, tiny_file, 2, compute_process=True)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.cascaded == N and s.verified
    finally:
        await hive.close()


async def test_a_liar_in_the_cascade_is_slashed_on_the_star(tiny_gguf, tiny_file,
                                                            tiny_local) -> None:
    """A noisy liar carrying stage 0: its root disagrees with its replica's, the step goes to
    the star, which recomputes and slashes it; the answer stays right."""
    hive = await cascade_hive(tiny_gguf, tiny_file, 4, replicas=2, spares=1,
                              faults={0: Fault.parse("noise")})
    try:
        ids, s = await hive_ids(hive)
        bad = hive.servers[0].node.node_id
        assert ids == local_ids(tiny_local)
        assert hive.client.reputation.slashed == [bad]
        [evidence] = hive.client.reputation.evidence
        assert check_evidence(evidence) == bad
        assert s.fallbacks >= 1 and s.cascaded >= 1  # the liar gone, the cascade goes on
        assert s.verified and not s.tainted
    finally:
        await hive.close()


async def test_a_node_dying_mid_cascade_fails_over(tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await cascade_hive(tiny_gguf, tiny_file, 2, spares=1,
                              faults={1: Fault.parse("crash-after=5")})
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.failovers == 1 and s.fallbacks >= 1
        [took_over] = s.stages[1].nodes
        assert took_over != hive.servers[1].node.node_id
        assert s.cascaded >= 1  # after the failover the cascade carries on
    finally:
        await hive.close()


async def test_the_attention_mlp_split_travels_as_a_cascade(tiny_gguf, tiny_file,
                                                           tiny_local) -> None:
    """Layer 2's attention on one node (alpha), its MLP on another (beta), in one cascade."""
    stages = [Stage(0, 2), Stage(2, 3, Part.ATTENTION), Stage(2, 3, Part.MLP), Stage(3, 4)]
    hive = await cascade_hive(tiny_gguf, tiny_file, 4, stages=stages)
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.cascaded == N and s.fallbacks == 0
        assert [st.stage for st in s.stages] == stages
        assert s.verified
    finally:
        await hive.close()


async def test_replicas_of_two_kernel_classes_are_compared_by_the_star(tiny_gguf, tiny_file) -> None:
    """Roots of two classes differ honestly: the first step goes to the star, which compares
    them per row within the calibrated bound, and the route runs by the star from then on."""
    from hive_core.model.pipeline import LocalPipeline

    hive = await cascade_hive(tiny_gguf, tiny_file, 4, replicas=2, weights="packed",
                              server_kernels={1: "portable", 3: "portable"})
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(LocalPipeline.load_single(tiny_file, weights="packed"))
        assert s.cascaded == 0 and s.fallbacks == N
        assert sum(srv.cascade.forwarded for srv in hive.servers) == 2  # the first step only
        assert s.verified and not hive.client.reputation.slashed
    finally:
        await hive.close()


async def test_speculative_decoding_over_a_cascade_equals_greedy(tiny_gguf, tiny_file,
                                                                 tiny_local) -> None:
    from hive_core.exec import SpecStats
    from hive_core.exec.generate import LocalSessionAdapter

    prompt = [5, 9, 12, 7, 5, 9, 12, 7, 5, 9, 12, 7, 33]
    local = LocalSessionAdapter(tiny_local.new_session(kv_factory("fp32")))
    ref = await generate_hive(local, prompt, max_new_tokens=16, context_length=64)
    hive = await cascade_hive(tiny_gguf, tiny_file, 2)
    try:
        stats = SpecStats()
        s = hive.client.new_session()
        g = await generate_hive(s, prompt, max_new_tokens=16, context_length=64, speculate=4,
                                stats=stats)
        assert g.new_ids == ref.new_ids
        assert stats.accepted > 0 and s.fallbacks == 0 and s.cascaded == s.step
    finally:
        await hive.close()


async def test_a_node_attesting_another_input_is_dropped_and_the_cascade_resumes(
        tiny_gguf, tiny_file, tiny_local) -> None:
    """Stage 1's node computes on bytes other than those it was sent (a careless liar about
    its input): the asker cannot tell whether the carrier or the node lied, so the route goes
    to the star, which drops the node for attesting another input and fails over to the
    spare; the new route cascades again."""
    hive = await cascade_hive(tiny_gguf, tiny_file, 2, spares=1)
    liar = hive.servers[1]
    honest_step = liar.step

    def tampered(*args: Any) -> Any:
        *head, data = args
        return honest_step(*head, bytes([data[0] ^ 1]) + data[1:])

    liar.step = tampered  # type: ignore[method-assign]
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert liar.node.node_id not in s.stages[1].nodes and s.failovers == 1
        assert s.fallbacks == 1 and s.cascaded == N - 1
    finally:
        await hive.close()


async def test_a_node_serving_two_stages_in_a_row_hands_over_to_itself(
        tiny_gguf, tiny_file, tiny_local) -> None:
    hive = await cascade_hive(tiny_gguf, tiny_file, 2)
    try:
        s = hive.client.new_session()
        s.stages[1].nodes = [hive.servers[0].node.node_id]  # it loads layers 2-3 on demand
        g = await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=N, context_length=64,
                                                 sampler=Sampler(1.0, seed=7)), 60)
        assert g.new_ids == local_ids(tiny_local)
        assert s.cascaded == N and hive.servers[0].cascade.forwarded == N
        assert hive.servers[1].stats.requests == 0
    finally:
        await hive.close()


async def test_a_silent_node_in_the_cascade_is_hedged_by_the_star(tiny_gguf, tiny_file,
                                                                   tiny_local) -> None:
    """A node that takes the work and never answers: the step waits out its patience, the star
    hedges it to a spare, and the cascade carries on over the spare."""
    cfg = replace(CASCADE, hedge_floor_s=0.2)
    hive = await cascade_hive(tiny_gguf, tiny_file, 2, cfg, spares=1,
                              faults={1: Fault.parse("silent")})
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.hedges == 1 and hive.servers[1].node.node_id not in s.stages[1].nodes
        assert s.fallbacks == 1 and s.cascaded == N - 1
    finally:
        await hive.close()


async def test_a_route_without_links_between_servers_runs_by_the_star(
        tiny_gguf, tiny_file, tiny_local) -> None:
    """Stage 0's carrier is told to forward to a node it has no link to: it refuses with a
    typed code, and every step runs by the star."""
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, client_config=STAR)  # no links
    hive.client.config = CASCADE
    try:
        ids, s = await hive_ids(hive)
        assert ids == local_ids(tiny_local)
        assert s.cascaded == 0 and s.fallbacks == N
        assert hive.servers[0].cascade.forwarded == 0
        # Refused once: the asker then knows this route cannot cascade and uses the star.
        assert hive.servers[0].cascade.refused == 1
    finally:
        await hive.close()


async def test_a_node_refuses_forged_replayed_and_unlisted_routes(tiny_gguf, tiny_file) -> None:
    hive = await cascade_hive(tiny_gguf, tiny_file, 2)
    asker, ident = hive.asker, hive.client.node.identity
    got: list[CascadeResult] = []
    asker.on(CascadeResult, lambda peer, msg: got.append(msg))
    first, second = (s.node for s in hive.servers)
    stranger = Identity.from_seed(bytes(range(32)))

    def route(hops: tuple[CascadeHop, ...], step: int = 0, signer: Identity = ident) -> CascadeRoute:
        r = CascadeRoute(signer.public_key, b"c" * 16, step, 0, 1, KvKind.FP32, True, Dtype.F32,
                         hops, bytes(64))
        return sign_route(signer, r)

    async def answer(msg: RunCascade, to: Any = first) -> CascadeResult:
        got.clear()
        await asker.send(to.node_id, msg)
        for _ in range(200):
            if got:
                return got[0]
            await asyncio.sleep(0.01)
        raise AssertionError("no report")

    hop0 = CascadeHop(0, 2, Part.FULL, (first.identity.public_key,))
    try:
        # The next hop names a node the carrier has no link to: refused before computing.
        r = await answer(RunCascade(route((hop0, CascadeHop(2, 4, Part.FULL, (stranger.public_key,)))),
                                    0, b"x"))
        assert r.code is ErrorCode.NOT_FOUND and "no link to" in r.error
        # A route whose signature is not the asker's.
        good = route((hop0, CascadeHop(2, 4, Part.FULL, (second.identity.public_key,))), step=1)
        forged = replace(good, hops=(hop0, CascadeHop(2, 4, Part.FULL, (first.identity.public_key,))))
        r = await answer(RunCascade(forged, 0, b"x"))
        assert r.code is ErrorCode.UNAUTHENTICATED and "not signed" in r.error
        # A hop that does not name the receiver, and a hop sent by someone the route does not
        # name as its sender (the asker sends hop 1 to the second node itself).
        r = await answer(RunCascade(good, 0, b"x"), to=second)
        assert r.code is ErrorCode.UNAUTHENTICATED and "does not name this node" in r.error
        r = await answer(RunCascade(good, 1, b"x"), to=second)
        assert r.code is ErrorCode.UNAUTHENTICATED and "does not name as its sender" in r.error
        # A well-formed hop whose payload is not sealed for the node, then the same hop again.
        r = await answer(RunCascade(good, 0, b"x"))
        assert r.code is ErrorCode.UNAUTHENTICATED
        r = await answer(RunCascade(good, 0, b"x"))
        assert r.code is ErrorCode.REPLAYED
        assert hive.servers[0].cascade.forwarded == 0
        assert not any(s.crashed for s in hive.servers)
    finally:
        await hive.close()


def test_wire_dtypes_round_trip_exactly() -> None:
    from hive_core.exec.wire import WireError, attested_kv, from_wire, round_wire, split_kv, to_wire

    rows = np.random.default_rng(3).normal(size=(3, 64)).astype("<f4") * 100
    for wire, size in ((Dtype.F32, 4), (Dtype.F16, 2), (Dtype.BF16, 2)):
        data = to_wire(rows, wire)
        assert len(data) == rows.size * size
        back = from_wire(data, 3, 64, wire)
        assert np.array_equal(back, round_wire(rows, wire))
        assert to_wire(back, wire) == data  # what is received is what was sent, bit for bit
        assert split_kv(attested_kv(int(KvKind.INT4), wire)) == (int(KvKind.INT4), wire)
    err = np.abs(round_wire(rows, Dtype.BF16) - rows) / np.abs(rows)
    assert 0 < err.max() <= 2 ** -8
    assert attested_kv(int(KvKind.FP32), Dtype.F32) == int(KvKind.FP32)  # fp32 reads as before
    with pytest.raises(WireError, match="past float16's 65504"):
        to_wire(np.full((1, 4), 7e4, dtype="<f4"), Dtype.F16)
    with pytest.raises(WireError, match="do not fit"):
        from_wire(b"\x00" * 10, 1, 4, Dtype.F16)


@pytest.mark.parametrize("wire", ["fp16", "bf16"])
async def test_a_16_bit_wire_verifies_and_slashes_like_fp32(tiny_gguf, tiny_file, wire) -> None:
    """Replicas fed the same 16-bit bytes agree to the bit; a liar among three is slashed on
    evidence whose replay rounds its output the same way."""
    cfg = replace(CASCADE, wire=wire)
    hive = await cascade_hive(tiny_gguf, tiny_file, 6, cfg, replicas=3,
                              faults={4: Fault.parse("noise")})
    try:
        _, s = await hive_ids(hive)
        bad = hive.servers[4].node.node_id
        assert hive.client.reputation.slashed == [bad]
        assert s.verified and s.cascaded >= 1
        # Half the bytes a row: a frame carries twice the rows (the tiny model is 64 wide).
        assert hive.client.max_hop_tokens == (MAX_PAYLOAD - 64) // (64 * 2)
        # Judged late, the liar may still be on the next step's route: one conviction a step.
        assert hive.client.reputation.evidence
        assert {check_evidence(e) for e in hive.client.reputation.evidence} == {bad}
    finally:
        await hive.close()
