"""The game's embedded hive in the weights mode the player picks: every shard server and the
asker hold packed matrices, the HUD says so, and the answer is a packed local run's."""

from __future__ import annotations

import asyncio


async def test_embedded_hive_runs_in_the_chosen_weights_mode(tiny_gguf) -> None:
    from cadencia.game.hive_link import N_SERVERS
    from cadencia.game.session import HiveSession, game_source
    from hive_core.model.chat import prompt_ids
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.packed import PACKED, RowTable, unfused
    from hive_core.model.pipeline import LocalPipeline

    source = game_source()
    session = HiveSession(source, model=str(tiny_gguf), faulty=False, host=False, weights="packed")
    session.hive.compute_process = False  # shards on threads here, so their executors can be read
    try:
        result = await asyncio.wait_for(session.ask("hi", max_new_tokens=4), 60)
        hive = session.hive._hive()
        assert [s.config.weights for s in hive.servers] == ["packed"] * (N_SERVERS + 1)
        for server in hive.servers[:N_SERVERS]:
            [ex] = server.executors
            assert all(isinstance(unfused(a.q), PACKED) for a in ex.weights.attention.values())
        assert isinstance(hive.client.local.weights.embedding, RowTable)  # the asker's, from blocks
        assert "packed weights" in source.hud.view().sharding
        assert result.verified and not result.slashed

        file = GGUFModelFile(tiny_gguf)
        local = LocalPipeline.load_single(file, weights="packed").new_session(kv_factory("fp32"))
        logits, want = local.forward(prompt_ids(file, session.hive.tokenizer, "hi")), []
        for _ in range(len(result.new_ids)):
            want.append(int(logits.argmax()))
            logits = local.forward([want[-1]])
        assert result.new_ids == want
    finally:
        await session.close()
