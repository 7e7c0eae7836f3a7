"""Offscreen render of a spectator's view: the liar a real hive slashed lies fallen (red
rubble), the honest districts stand, all from events heard over the nodes' feeds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.hive import build_hive
from world.game import GameState
from world.view.game_source import GameSource, HudBoard

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
# Every layer on the servers (stages placed by hand) and no hedging on a loaded machine.
ALL_REMOTE = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)


def test_the_spectators_picture_shows_the_liar_fallen(make_app: Any, tiny_gguf: Any, spectate: Any) -> None:
    source = GameSource(GameState(), HudBoard())

    async def main() -> list[bytes]:
        hive = await build_hive(tiny_gguf, 4, replicas=2, spares=1, stages=[Stage(0, 2), Stage(2, 4)],
                                client_config=ALL_REMOTE,
                                faults={1: Fault.parse("noise")})
        spec, watcher = await spectate(hive, source)
        try:
            s = hive.client.new_session()
            await asyncio.wait_for(generate_hive(s, PROMPT, max_new_tokens=3, context_length=64), 60)
            await s.finish()
            for _ in range(200):
                if source.state.snapshot(time.monotonic()).slashings:
                    break
                await asyncio.sleep(0.02)
            assert watcher.rejected == 0
            return hive.node_ids
        finally:
            await spec.close()
            await hive.close()

    ids = asyncio.run(main())
    liar = ids[1]
    source.state.set_layout({node: (40.0 * k, 0.0) for k, node in enumerate(ids)})
    later = time.monotonic() + 5.0  # the fall has ended, no district is busy any more
    app = make_app(source, mode="spectate", clock=lambda: later)
    app.base.pixel2d.hide()  # labels over a 320x240 city may cover the walls read below
    app.step()
    app.step()
    px, lay = app.pixels(), app.scene.layout
    for node in ids:
        x, y, h = lay.top(node.hex())
        z = 0.05 * h if node == liar else 0.5 * h  # rubble is low, standing districts tall
        point = app.project(x, y, z)
        assert point is not None
        rgb = px[round(point[1]), round(point[0])].astype(int)
        if node == liar:
            assert rgb[0] > 40 and rgb[0] > 2 * rgb[2], ("fallen", rgb)
        else:
            assert int(np.max(rgb)) > 90 and not rgb[0] > 2 * rgb[2], ("standing", rgb)


def test_a_spectators_hud_tells_the_truth_while_the_answer_streams(tiny_gguf: Any, spectate: Any) -> None:
    """From the servers' feeds alone (no access to the asker), while the answer is streaming:
    its decode rate, how many stage steps were verified, and which district asked."""
    from world.view.names import short_name

    source = GameSource(GameState(), HudBoard())
    seen: list[Any] = []

    async def main() -> tuple[bytes, float]:
        hive = await build_hive(tiny_gguf, 4, replicas=2, stages=[Stage(0, 2), Stage(2, 4)],
                                client_config=ALL_REMOTE)
        source.state.set_layout({n: (10.0 * k, 0.0) for k, n in enumerate([hive.asker.node_id, *hive.node_ids])})
        spec, _watcher = await spectate(hive, source)
        try:
            s = hive.client.new_session()
            task = asyncio.create_task(generate_hive(s, PROMPT, max_new_tokens=12, context_length=64))
            while not task.done():
                seen.append(source.frame(time.monotonic()).hud)
                await asyncio.sleep(0.01)
            gen = task.result()
            await s.finish()
            return hive.asker.node_id, gen.tokens_per_s
        finally:
            await spec.close()
            await hive.close()

    asker, rate = asyncio.run(main())
    streaming = [h for h in seen if h.tokens_per_s > 0 and h.verified_steps > 0 and h.asker]
    assert streaming, seen[-1]
    last = streaming[-1]
    assert last.asker == short_name(asker.hex())  # the district that asked, by its name
    assert last.verified_steps >= 4  # both stages of several steps, each agreed by 2 replicas
    assert 0.3 * rate < last.tokens_per_s < 3.0 * rate, (last.tokens_per_s, rate)
