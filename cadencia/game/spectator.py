"""A spectator of a live hive: its map from signed status records, its tensor flow from event feeds.

`LiveSpectator` polls the entry's status (`MeshWatcher`: districts, roads, health) and joins
the mesh to subscribe to every node's event feed (`FeedWatcher`: pulses, stages, towers,
receipts). `pulses_on_screen` says where the last frame drew its pulses in flight (for
`--json` reports and tests that read the screenshot's pixels there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from world.view.game_source import GameSource
from world.view.scene import pulse_position

from .feed_watch import FeedWatcher
from .mesh_watch import MeshWatcher

WARMUP_S = 15.0  # longest wait for a young hive's records before the view counts as live
MIN_LEG_S = 0.3  # loopback hops take well under a millisecond: each leg is drawn at least this long


class LiveSpectator:
    """Watch the hive at `url` into `source` until cancelled; `ready` once the feeds were asked."""

    def __init__(self, source: GameSource, url: str, *, timeout_s: float = 10.0,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.say = say
        self.watcher = MeshWatcher(source, url, timeout_s=timeout_s, say=say)
        self.feed = FeedWatcher(source, url, lambda: self.watcher.node_ids, timeout_s=timeout_s, say=say)
        self.ready = asyncio.Event()

    async def run(self, warmup_s: float = WARMUP_S) -> None:
        await self.watcher.poll_once()  # an unreachable hive fails here, fast and clearly
        await self.feed.start()
        me = self.feed.node_id
        if me is not None:
            self.watcher.hide.add(me.hex())
        count = await self._warm_up(warmup_s)
        self.say(f"spectating {self.watcher.url}: live feeds from {count} of "
                 f"{len(self.watcher.node_ids)} nodes")
        self.ready.set()
        await asyncio.gather(self.watcher.run(), self.feed.run(first_now=False))

    async def _warm_up(self, warmup_s: float) -> int:
        """Records of a young hive are still spreading: poll and subscribe in quick rounds until
        the map stops growing and holds every node whose feed we get (or `warmup_s` passes)."""
        loop = asyncio.get_running_loop()
        deadline, seen, count = loop.time() + warmup_s, -1, 0
        while True:
            count = await self.feed.subscribe_once()
            ids = set(self.watcher.node_ids)
            if (count and set(self.feed.subscribed) <= ids and len(ids) == seen) or loop.time() > deadline:
                return count
            seen = len(ids)
            await asyncio.sleep(0.5)
            try:
                await self.watcher.poll_once()
            except (ConnectionError, OSError) as exc:
                self.say(f"status poll failed: {exc}")

    async def close(self) -> None:
        await self.feed.close()


def pulses_on_screen(app: Any, margin: float = 0.1) -> list[dict[str, Any]]:
    """Pulses of the last frame well inside their flight (not near either end), with the pixel
    (column, row) where the scene drew each: ``[{"src", "dst", "t", "xy"}]``."""

    now = app._last  # the clock of the last step: what the shader drew with
    scene, out = app.scene, []
    for p in app.frame.pulses:
        if p.duration <= 0:
            continue
        t = (now - p.start) / p.duration
        if not margin < t < 1 - margin:
            continue
        try:
            where = pulse_position(scene.pulse_end(p.src), scene.pulse_end(p.dst), t, scene.layout.unit)
        except (KeyError, ValueError):
            continue
        xy = app.project(*where)
        if xy is not None and 0 <= xy[0] < app.cfg.width and 0 <= xy[1] < app.cfg.height:
            out.append({"src": p.src, "dst": p.dst, "t": round(t, 3), "xy": [round(xy[0]), round(xy[1])]})
    return out
