"""What a host or stake choice does to the running hive (the `Hosting` of `choices`).

`EmbeddedHosting`: the game's own hive. Its asker routes a fixed plan of stages over groups
of servers; hosting a stage loads it on the player's server and moves that server into the
stage's group (a stage never left without a server), so the next answers route through it and
its receipts pay for that work. A stake adds the player's server to the asker's referees.

`LiveHosting`: `play --hive`. Hosting loads the span on the player's shard server and
re-announces what the node serves (its signed layer-span record in the DHT), so askers that
look for servers find it there; a stake adds the verifier role to the node's published roles.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from hive_core.base.stage import Stage
from hive_core.mesh.dht.records import LayerSpanRecord
from hive_core.sched.planner import fixed_plan

from .choices import ChoiceRefused


class EmbeddedHosting:
    """Host choices on the embedded hive; `server` is the player's (`HiveSession` hosts it)."""

    def __init__(self, hive: Any, server: Any, source: Any = None) -> None:
        """`hive`: the InProcessHive; `server`: the player's ShardServer; `source`: the game
        source whose HUD says how the hive is sharded."""
        self.hive, self.server, self.source = hive, server, source
        self.me: bytes = server.node.node_id

    def stages(self) -> list[Stage]:
        return [ps.stage for ps in self.hive.client.plan.stages]

    async def serve(self, stage: Stage) -> None:
        plan = self.hive.client.plan
        groups = [list(ps.nodes) for ps in plan.stages]
        target = next((k for k, ps in enumerate(plan.stages) if ps.stage == stage), None)
        if target is None:
            raise ChoiceRefused(f"this hive has no stage {stage}")
        if self.me in groups[target]:
            raise ChoiceRefused(f"your node already serves layers {stage.start}-{stage.end - 1}")
        for k, group in enumerate(groups):
            honest = [n for n in group if not self.hive.client.reputation.excluded(n)]
            if self.me in group and honest == [self.me]:
                raise ChoiceRefused(f"layers {plan.stages[k].stage.start}-{plan.stages[k].stage.end - 1} "
                                    "would have no honest server left: you are their only one")
        await asyncio.to_thread(self.server.load, stage)  # the weights, off the frame loop
        self.server.config = replace(self.server.config, preload=(stage,))
        groups = [[n for n in g if n != self.me] for g in groups]
        groups[target].insert(0, self.me)
        self.hive.client.plan = fixed_plan([ps.stage for ps in plan.stages], groups)
        if self.source is not None:
            self.source.hud.set(sharding=" | ".join(
                f"L{ps.stage.start}-{ps.stage.end - 1}: " + "+".join(n.hex()[:6] for n in ps.nodes)
                for ps in self.hive.client.plan.stages))

    def referee(self) -> None:
        if self.me not in self.hive.client.spares:
            self.hive.client.spares.append(self.me)


class LiveHosting:
    """Host choices on a node of a live hive (`node`: HiveNode, `server`: its ShardServer)."""

    def __init__(self, node: Any, server: Any, model_name: str, n_layers: int) -> None:
        self.node, self.server, self.model_name, self.n_layers = node, server, model_name, n_layers
        self._publishing: set[asyncio.Task[Any]] = set()

    def stages(self) -> None:
        return None  # askers route over whatever spans the hive's nodes announce

    async def serve(self, stage: Stage) -> None:
        if self.server is None:
            raise ChoiceRefused("this node joined without serving (--no-serve): it has no shard server")
        await asyncio.to_thread(self.server.load, stage)
        self.server.config = replace(self.server.config, preload=(stage,))
        span = LayerSpanRecord(self.model_name[:128], stage.start, stage.end, self.n_layers)
        self.node.config = replace(self.node.config, spans=(span,))
        await self.node.publish()  # signed records: askers find the new span in the DHT

    def referee(self) -> None:
        if "verifier" not in self.node.config.roles:
            self.node.config = replace(self.node.config, roles=(*self.node.config.roles, "verifier"))
            task = asyncio.get_running_loop().create_task(self.node.publish())
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)
