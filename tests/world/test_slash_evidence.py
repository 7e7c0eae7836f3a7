"""Verdicts for spectators: a real hive with a lying replica, watched over the nodes' feeds.

The asker sends each trial's verdict to the nodes that served it; their feeds carry it to
the spectator, whose game state shows the tower verified and the liar's district falling
only after re-checking the slashing's signed evidence by recomputing it on its own copy of
the model. Forged slashings are refused.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from hive_core import events as ev
from hive_core.base.stage import Part, Stage
from hive_core.events import EvidenceAssembler
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.feed import slashed_verdicts
from hive_core.exec.hive import build_hive, identity
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node
from hive_core.protocol import MAX_FRAME_BYTES, decode, encode, encode_struct
from hive_core.protocol.feed import (
    EVIDENCE_CHUNK,
    EventKind,
    evidence_chunks,
    feed_event,
)
from hive_core.protocol.trust import SlashEvidence
from hive_core.trust import attest, make_evidence
from world.game import GameState
from world.game.errors import GameEventError
from world.game.rules import FALL_S
from world.game.snapshot import TrialStatus
from world.view.game_source import GameSource, HudBoard

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
SESSION = b"s" * 16


@pytest.fixture(scope="module")
def tiny_file(tiny_gguf: Any) -> Any:
    from hive_core.model.gguf_file import GGUFModelFile

    return GGUFModelFile(tiny_gguf)


def _evidence(file: Any, steps: int = 1) -> tuple[SlashEvidence, bytes]:
    """Evidence that node "liar" signed MLP outputs of the tiny model's layers 0-2 of which the
    last is off by one (MLP steps: each stands alone, so many of them make large evidence);
    the process's replayer holds the model, so whoever checks it recomputes it."""
    import torch

    from hive_core.exec.kernel import kernel_class, model_digest
    from hive_core.exec.replay import shared_replayer
    from hive_core.model.executor import ShardExecutor

    shared_replayer(file)
    stage = Stage(0, 2, Part.MLP)
    ex = ShardExecutor.load(file, [stage])
    rng = np.random.default_rng(1)
    signed = []
    for k in range(steps):
        x = rng.standard_normal((64, file.config.hidden)).astype("<f4")
        with torch.inference_mode():
            out = ex.run_stage(stage, torch.from_numpy(x), 0, {}).numpy().astype("<f4")
        if k == steps - 1:
            out = out + np.float32(1.0)
        att = attest(identity("liar"), session_id=SESSION, step=3 + k, layer_start=0,
                     layer_end=2, part=Part.MLP, position=0, tokens=64, input_bytes=x.tobytes(),
                     output_bytes=out.tobytes(), model=model_digest(file.path), kv=1,
                     kernel=kernel_class("fp32"))
        signed.append((att, x.tobytes()))
    return make_evidence(signed, out.tobytes(), "lied"), identity("liar").node_id


def test_state_checks_a_slashings_evidence_before_the_district_falls(tiny_file: Any) -> None:
    evidence, liar = _evidence(tiny_file)
    honest = identity("w1").node_id
    state = GameState(require_evidence=True)
    with pytest.raises(GameEventError, match="carries no evidence"):
        state.apply(ev.Slashed(SESSION, 1, liar, "lied", 1.0), 1.0)
    with pytest.raises(GameEventError, match="evidence is against"):
        state.apply(ev.Slashed(SESSION, 1, honest, "lied", 1.0, evidence), 1.0)
    with pytest.raises(GameEventError, match="another session"):
        state.apply(ev.Slashed(b"t" * 16, 1, liar, "lied", 1.0, evidence), 1.0)
    tampered = replace(evidence, output=bytes(len(evidence.output)))
    with pytest.raises(GameEventError, match="does not verify"):
        state.apply(ev.Slashed(SESSION, 1, liar, "lied", 1.0, tampered), 1.0)
    assert state.snapshot(10.0).districts == () and state.snapshot(10.0).slashings == 0
    state.apply(ev.Slashed(SESSION, 1, liar, "lied", 1.0, evidence), 1.0)
    [district] = state.snapshot(1.0 + FALL_S).districts
    assert district.node_id == liar and district.fallen and district.fall_progress == 1.0
    # A game fed by its own asker may take a slashing without evidence (it made the verdict).
    local = GameState()
    local.apply(ev.Slashed(SESSION, 1, liar, "lied", 1.0), 1.0)
    assert local.snapshot(2.0).slashings == 1


def test_evidence_is_cut_into_chunks_and_joined_whatever_their_order(tiny_file: Any) -> None:
    evidence, liar = _evidence(tiny_file, steps=40)  # 40 inputs of 16 KB: more than one frame
    body = encode_struct(evidence)
    parts = evidence_chunks(body)
    assert len(parts) == math.ceil(len(body) / EVIDENCE_CHUNK) > 1
    events = [feed_event(EventKind.SLASHED, liar, session_id=SESSION,
                         step=evidence.offender.step, layer_start=0,
                         layer_end=2, part=Part.MLP, reason="lied", chunk=k, chunks=len(parts),
                         evidence=p)
              for k, p in enumerate(parts)]
    for e in events:  # every chunk travels in one frame (aiortc's 256 KiB message)
        assert decode(encode(e)) == e and len(encode(e)) <= MAX_FRAME_BYTES
    for v in slashed_verdicts(evidence, liar, "lied"):  # and so does the asker's verdict
        assert decode(encode(v)) == v and len(encode(v)) <= MAX_FRAME_BYTES
    joiner = EvidenceAssembler()
    got = [joiner.add(b"\x07" * 20, e) for e in reversed(events)]
    assert got[:-1] == [None] * (len(parts) - 1) and got[-1] == body
    from hive_core.events import from_feed

    slashed = from_feed(events[0], b"\x07" * 20, 10.0, body)
    assert slashed.node_id == liar and slashed.evidence == evidence
    state = GameState(require_evidence=True)
    state.apply(slashed, 10.0)
    assert state.snapshot(10.0 + FALL_S).districts[0].fallen


async def test_a_spectator_sees_the_tower_verified_and_the_liar_fall(
        tiny_gguf: Any, tiny_file: Any, caplog: pytest.LogCaptureFixture, spectate: Any) -> None:
    # Two replicas per stage and a referee: server 1 lies on stage 0 and is outvoted.
    hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, model=tiny_file,
                            stages=[Stage(0, 2), Stage(2, 4)], faults={1: Fault.parse("noise")},
                            client_config=ClientConfig(local_layers=0, local_tail_layers=0,
                                                       hedge_floor_s=60.0))
    source = GameSource(GameState(), HudBoard())
    spec, watcher = await spectate(hive, source)
    liar = hive.servers[1].node.node_id
    loop = asyncio.get_running_loop()
    try:
        s = hive.client.new_session()
        await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=4, context_length=64), 60)
        await s.finish()
        for _ in range(200):
            snap = source.state.snapshot(loop.time())
            if snap.slashings and snap.verified_trials >= 2:
                break
            await asyncio.sleep(0.02)
        assert hive.client.reputation.slashed == [liar]
        assert watcher.rejected == 0
        snap = source.state.snapshot(loop.time() + FALL_S)
        fallen = [d.node_id for d in snap.districts if d.fallen]
        assert fallen == [liar]
        towers = source.state.snapshot(loop.time()).towers
        verified = [t for t in towers if t.status is TrialStatus.VERIFIED]
        assert verified and all(liar not in t.slashed or t.agreeing >= 2 for t in verified)
        assert any(t.convergence == 1.0 and t.agreeing >= 2 for t in verified)
        assert any(liar in t.slashed for t in towers)  # the lie shows on its trial's tower

        # A forged slashing of an honest server, relayed by a server (its evidence proves
        # the real liar wrong, not the node it names): refused, logged, never shown.
        honest = hive.servers[0]
        [real] = [e for e in hive.client.reputation.evidence]
        body = encode_struct(real)
        forged = [feed_event(EventKind.SLASHED, honest.node.node_id, session_id=real.offender.session_id,
                             step=real.offender.step, layer_start=0, layer_end=2, reason="forged",
                             chunk=k, chunks=n, evidence=p)
                  for n in [len(evidence_chunks(body))] for k, p in enumerate(evidence_chunks(body))]
        garbage = feed_event(EventKind.SLASHED, hive.servers[2].node.node_id, session_id=SESSION,
                             layer_start=0, layer_end=2, reason="no proof", chunk=0, chunks=1,
                             evidence=b"\x00" * 64)
        caplog.set_level(logging.WARNING, logger="cadencia.game.feed_watch")
        sender = hive.servers[3].node
        for e in [*forged, garbage]:
            await sender.send(spec.node_id, e)
        for _ in range(100):
            if watcher.rejected >= 2:
                break
            await asyncio.sleep(0.02)
        assert watcher.rejected == 2
        refusals = [r.getMessage() for r in caplog.records if "refused a SLASHED" in r.getMessage()]
        assert len(refusals) == 2 and "evidence is against" in refusals[0]
        snap = source.state.snapshot(loop.time() + FALL_S)
        assert [d.node_id for d in snap.districts if d.fallen] == [liar]
    finally:
        await spec.close()
        await hive.close()


async def test_a_node_relays_verdicts_only_from_the_asker_of_a_session_it_served(
        tiny_gguf: Any, tiny_file: Any) -> None:
    from hive_core.exec.feed import verified_verdict

    hive = await build_hive(tiny_gguf, 2, model=tiny_file)
    stranger = Node(identity("stranger"))
    server = hive.servers[0]
    a, b = memory_pair()
    await asyncio.gather(stranger.attach(a, kind="memory", expect=server.node.node_id),
                         server.node.attach(b, kind="memory", expect=stranger.node_id))
    try:
        me = server.node.node_id
        await stranger.send(me, verified_verdict(SESSION, 0, 0, 2, Part.FULL, [me]))
        await asyncio.sleep(0.05)
        assert server.feed.stats.verdicts_refused == 1 and server.feed.stats.verdicts == 0
    finally:
        await stranger.close()
        await hive.close()
