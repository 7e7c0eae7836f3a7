"""The game on a live hive: sentinel and shard-serving nodes on loopback (WebSocket + aiortc),
the player's own node asking from the game, a spectator polling signed status records."""

from __future__ import annotations

import asyncio

import pytest

from hive_core.events import HopSent
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.pipeline import LocalPipeline


@pytest.mark.net
async def test_play_asks_a_live_hive_and_spectators_see_it(tiny_gguf, live_hive) -> None:
    from cadencia.game.mesh_watch import MeshWatcher
    from cadencia.game.session import game_source

    source = game_source(slow_motion=1.0)
    heard: list[object] = []
    on_event = source.on_event
    source.on_event = lambda e, now: (heard.append(e), on_event(e, now))  # type: ignore[method-assign]
    async with live_hive(source, timeout_s=10.0) as (sentinel, servers, player, asker):
        result = await asyncio.wait_for(asker.ask("hi", max_new_tokens=3), 120)

        file = GGUFModelFile(tiny_gguf)
        from hive_core.model.modes import DEFAULT_WEIGHTS  # what the game's hive runs

        session = LocalPipeline.load_single(file, weights=DEFAULT_WEIGHTS).new_session(kv_factory("fp32"))
        from hive_core.model.chat import prompt_ids

        logits, want = session.forward(prompt_ids(file, asker.tokenizer, "hi")), []
        for _ in range(len(result.new_ids)):
            want.append(int(logits.argmax()))
            logits = session.forward([want[-1]])
        assert result.new_ids == want  # the live hive answers what the model answers
        server_ids = {servers[0].node_id, servers[1].node_id}
        hops = [e for e in heard if isinstance(e, HopSent)]
        assert hops and {h.to_node for h in hops} == server_ids and {h.from_node for h in hops} == {player.node_id}
        # the route the asker took (it keeps its first and last layers: the servers run the middle)
        sharding = source.hud.view().sharding
        assert all(n.node_id.hex()[:6] in sharding for n in servers), sharding

        watcher = MeshWatcher(source, sentinel.listen_url, timeout_s=10.0)
        await asyncio.wait_for(watcher.poll_once(), 30)
        frame = source.frame(asyncio.get_running_loop().time())
        placed = {d.node_id for d in frame.districts}
        assert {n.node_id.hex() for n in (*servers, player)} <= placed  # servers and player are districts
        assert frame.roads  # measured links between them
