"""Weights modes over the hive: a stage's replicas share one mode and agree to the bit; a
plan mixing modes in one stage is refused with the reason; spares, referees and auditors come
from the stage's own mode; routes group servers by the mode they report; and a packed hive
gives a packed local run's numbers, over memory links, aiortc, and the real model."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
import torch

from hive_core import events as ev
from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, ExecError, Fault, NoReplicaError, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.exec.remote import discover, route, weights_of
from hive_core.model.executor import ShardExecutor
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed import PACKED, unfused
from hive_core.model.pipeline import LocalPipeline
from hive_core.protocol.inference import ShardInfo, WeightsKind

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
STEPS = [PROMPT, [3], [40, 7], [12]]
# Every layer on the servers (these tests place them by hand), no hedging on a loaded machine.
NO_LOCAL = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)


async def forward_all(session: Any, steps: list[list[int]] = STEPS) -> list[torch.Tensor]:
    out = []
    for step in steps:
        out.append(await asyncio.wait_for(session.forward(step), 30))
    return out


def local_all(pipeline: LocalPipeline, steps: list[list[int]] = STEPS) -> list[torch.Tensor]:
    s = pipeline.new_session(kv_factory("fp32"))
    return [s.forward(step) for step in steps]


def digests_by_trial(seen: list[Any]) -> dict[tuple[bytes, int], set[bytes]]:
    out: dict[tuple[bytes, int], set[bytes]] = defaultdict(set)
    for e in seen:
        if isinstance(e, ev.ReplicaAnswered):
            out[(e.session_id, e.step)].add(e.digest)
    return out


def assert_holds_only(server: Any, stage: Stage, packed: bool) -> None:
    """The server's weights: exactly `stage`'s layers, no embedding or head, packed or not."""
    [ex] = server.executors
    w = ex.weights
    assert sorted(w.attention) == list(stage.layers) and sorted(w.mlp) == list(stage.layers)
    assert w.embedding is None and w.head is None
    matrices = [m for a in w.attention.values() for m in (a.q, a.k, a.v, a.o)]
    matrices += [m for f in w.mlp.values() for m in (f.gate, f.up, f.down)]
    assert all(isinstance(unfused(m), PACKED) == packed for m in matrices)


async def test_a_stage_whose_replicas_mix_modes_is_refused(tiny_gguf, tiny_file) -> None:
    with pytest.raises(ExecError, match=r"stage 0:2:full: its replicas hold weights in "
                                        r"different modes \(fp32, packed\).*honest nodes"):
        await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file, server_weights={1: "packed"},
                         client_config=NO_LOCAL)


async def test_stages_in_different_modes_verify_exactly_and_slash_nobody(tiny_gguf, tiny_file) -> None:
    seen: list[Any] = []
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file, on_event=seen.append,
                            server_weights={0: "packed", 1: "packed"}, client_config=NO_LOCAL)
    try:
        infos = await discover(hive.asker, timeout=5)
        modes = weights_of(infos)
        assert [modes[n] for n in hive.node_ids] == ["packed", "packed", "fp32", "fp32"]
        assert infos[hive.node_ids[0]].weights is WeightsKind.PACKED
        s = hive.client.new_session()
        got = await forward_all(s)
        assert s.verified and hive.client.reputation.slashed == []
        assert [r["weights"] for r in s.route()] == ["packed", "fp32"]
        # Two replicas of one mode answer the same bits: one Merkle root per trial.
        trials = digests_by_trial(seen)
        assert len(trials) == 2 * len(STEPS) and all(len(d) == 1 for d in trials.values())
        # The same numbers as a local chain of a packed first half and an fp32 second half.
        client = ShardExecutor.load(tiny_file, (), embed=True, head=True)
        first, second = Stage(0, 2), Stage(2, 4)
        chain = LocalPipeline(client, [(ShardExecutor.load(tiny_file, [first], weights="packed"), first),
                                       (ShardExecutor.load(tiny_file, [second]), second)])
        for a, b in zip(got, local_all(chain), strict=True):
            assert torch.equal(a, b)
        assert_holds_only(hive.servers[1], first, packed=True)
        assert_holds_only(hive.servers[3], second, packed=False)
    finally:
        await hive.close()


async def test_spares_and_referees_come_from_the_stage_mode(tiny_gguf, tiny_file) -> None:
    # One packed worker; spare 1 is fp32, spare 2 packed: the audit must use spare 2.
    hive = await build_hive(tiny_gguf, 1, spares=2, model=tiny_file, weights="packed",
                            server_weights={1: "fp32"}, client_config=NO_LOCAL)
    try:
        s = hive.client.new_session()
        await forward_all(s)
        await s.finish()
        assert s.verified and s.stages[0].audited and hive.client.reputation.slashed == []
        assert hive.servers[1].stats.requests == 0 and hive.servers[2].stats.requests > 0
    finally:
        await hive.close()
    # Only an fp32 spare: the asker audits itself rather than against another mode; no
    # failover to it either.
    hive = await build_hive(tiny_gguf, 1, spares=1, model=tiny_file, weights="packed",
                            server_weights={1: "fp32"}, faults={0: Fault.parse("crash-after=3")},
                            client_config=NO_LOCAL)
    try:
        s = hive.client.new_session()
        await forward_all(s, STEPS[:2])
        from hive_core.exec.audit import audit_session

        await audit_session(s)
        assert s.stages[0].audited and hive.client.reputation.slashed == []
        with pytest.raises(NoReplicaError, match="no spare node with packed weights is left"):
            await forward_all(s, STEPS[2:])
        assert hive.servers[1].stats.requests == 0
    finally:
        await hive.close()


def info(start: int, end: int, weights: WeightsKind, n_layers: int = 4) -> ShardInfo:
    return ShardInfo(1, "tiny-llama.gguf", n_layers, 64, start, end, 1.0, 1000.0, True, weights)


def test_routes_give_each_stage_replicas_of_one_mode(tiny_file) -> None:
    cfg, name = tiny_file.config, "tiny-llama.gguf"
    packed, fp32 = WeightsKind.PACKED, WeightsKind.FP32
    infos = {b"a": info(0, 4, packed), b"b": info(0, 4, fp32), b"c": info(0, 4, packed)}
    [stage] = route(infos, cfg, name, 2, {}).stages
    assert set(stage.nodes) == {b"a", b"c"}
    # One server per mode: the asker's own mode wins the tie.
    two = {b"a": info(0, 4, packed), b"b": info(0, 4, fp32)}
    assert route(two, cfg, name, 2, {}, prefer="fp32").stages[0].nodes == (b"b",)
    assert route(two, cfg, name, 2, {}, prefer="packed").stages[0].nodes == (b"a",)
    # Spans by mode: 0-2 packed x2 then 2-4 fp32 x2; a lone fp32 0-4 does not join stage 0.
    spans = {b"p1": info(0, 2, packed), b"p2": info(0, 2, packed), b"f1": info(2, 4, fp32),
             b"f2": info(2, 4, fp32), b"f0": info(0, 4, fp32)}
    plan = route(spans, cfg, name, 2, {})
    assert [(str(s.stage), set(s.nodes)) for s in plan.stages] == [
        ("0:2:full", {b"p1", b"p2"}), ("2:4:full", {b"f1", b"f2"})]
    # Nothing preloaded: the planner routes over the most common mode only.
    idle = {b"a": info(0, 0, fp32), b"b": info(0, 0, packed), b"c": info(0, 0, packed),
            b"d": info(0, 0, packed)}
    planned = route(idle, cfg, name, 2, {}, prefer="fp32")
    assert planned.nodes and set(planned.nodes) <= {b"b", b"c", b"d"}


@pytest.mark.net
async def test_packed_hive_over_aiortc_equals_a_packed_local_run(tiny_gguf, tiny_file) -> None:
    hive = await build_hive(tiny_gguf, 2, model=tiny_file, transport="rtc", weights="packed")
    try:
        got = await forward_all(hive.client.new_session())
        want = local_all(LocalPipeline.load_single(tiny_file, weights="packed"))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert all(link.kind == "rtc" for link in hive.asker.peers.all())
    finally:
        await hive.close()


@pytest.mark.real_model
async def test_real_model_packed_hive_equals_packed_local_and_replicas_agree(smollm) -> None:
    from hive_core.model.chat import encode_chat
    from hive_core.model.generation import generate

    tok, file = smollm.tokenizer, smollm.file
    ids = encode_chat(file, tok, [{"role": "user", "content": "What is the capital of France?"}])
    local = LocalPipeline.load_single(file, weights="packed")
    want = generate(local.new_session(kv_factory("fp32")).forward, ids, max_new_tokens=10,
                    context_length=file.config.context_length, stop_ids=tok.stop_ids).new_ids
    seen: list[Any] = []
    stages = [Stage(0, 10), Stage(10, 20), Stage(20, 30)]
    hive = await build_hive(smollm.path, 6, replicas=2, stages=stages, model=file,
                            weights="packed", on_event=seen.append, client_config=NO_LOCAL)
    try:
        s = hive.client.new_session()
        g = await asyncio.wait_for(generate_hive(
            s, ids, max_new_tokens=10, context_length=file.config.context_length,
            stop_ids=tok.stop_ids), 180)
        await s.finish()
        assert g.new_ids == want
        assert s.verified and hive.client.reputation.slashed == []
        # Split over the hive or not, the same mode gives the same logits to the bit.
        got = await hive.client.new_session().forward(ids)
        assert torch.equal(got, local.new_session(kv_factory("fp32")).forward(ids))
        assert all(len(d) == 1 for d in digests_by_trial(seen).values())
        for k, server in enumerate(hive.servers):
            assert_holds_only(server, stages[k // 2], packed=True)
        # A packed shard holds its third of the layers in well under a third of fp32's bytes.
        fp32_third = ShardExecutor.load(file, [stages[0]]).weights.nbytes()
        assert hive.servers[0].executors[0].weights.nbytes() < fp32_third / 3
    finally:
        await hive.close()


async def test_a_node_serves_in_the_mode_its_flags_name(tiny_gguf, tiny_file) -> None:
    import argparse

    from cadencia.cli import build_parser
    from hive_core.exec.hive import identity
    from hive_core.exec.serve import attach_shard_server
    from hive_core.mesh.node import Node

    args = build_parser().parse_args(["node", "--join", "ws://127.0.0.1:9", "--model", str(tiny_gguf),
                                      "--serve", f"{tiny_gguf.name}:1-3/4", "--weights", "packed"])
    node = Node(identity("flags"))
    server = attach_shard_server(node, args)
    assert server is not None
    try:
        assert server.config.weights == "packed"
        assert_holds_only(server, Stage(1, 3), packed=True)
    finally:
        await server.close()
        await node.close()
    with pytest.raises(ValueError, match="weights mode must be one of"):
        attach_shard_server(Node(identity("bad")), argparse.Namespace(
            model=str(tiny_gguf), fault=None, serve=[], tflops=None, weights="int3"))
