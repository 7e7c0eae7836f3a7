"""How the API reaches a hive: joined at a ws:// entry (or through a node's own mesh node), or
built in this process (`--hive local:N`). Both end in a routed `HiveClient`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hive_core.events import Consumer
from hive_core.exec.client import ClientConfig, HiveClient
from hive_core.exec.hive import InProcessHive, build_hive
from hive_core.exec.join import AskerPart, Say, connect, join_hive
from hive_core.exec.relayed import RelayedNode, connect_relayed, parse_relay
from hive_core.mesh.hivenode import HiveNode
from hive_core.model.gguf_file import GGUFModelFile


def _quiet(_message: str) -> None:
    pass


@dataclass
class LiveConnector:
    """Joins the hive at `url` once (or uses `hive`, a node's own mesh node), keeps the asker's
    part (embedding, head, local layers) loaded across reconnects, and routes on `connect`."""

    url: str
    file: GGUFModelFile
    weights: str
    replicas: int = 1
    config: ClientConfig = field(default_factory=lambda: ClientConfig(local_layers=1))
    timeout_s: float = 15.0
    hive: HiveNode | None = None
    say: Say = _quiet
    asker: AskerPart | None = None
    relay: str | None = None  # "auto" or a node id in hex: ask through that peer (--relay)
    _own_hive: bool = False
    _relayed: RelayedNode | None = None  # the throwaway node of the current route

    @property
    def node_id(self) -> bytes | None:
        return None if self.hive is None else self.hive.node_id

    async def connect(self, on_event: Consumer) -> HiveClient:
        if self.hive is None:
            self.hive = await join_hive(self.url, timeout_s=self.timeout_s, say=self.say)
            self._own_hive = True
        if self.asker is None:
            self.say(f"loading this device's part of {self.file.path.name} "
                     f"({self.weights} weights) ...")
            self.asker = await asyncio.to_thread(
                AskerPart.load, self.file, local_layers=self.config.local_layers,
                weights=self.weights, nice=self.config.compute_nice)
        if self.relay is None:
            return await connect(self.hive, self.file, self.asker, replicas=self.replicas,
                                 config=self.config, on_event=on_event,
                                 timeout_s=self.timeout_s, say=self.say)
        if self._relayed is not None:  # a new route: the old tunnels and key go
            await self._relayed.close()
            self._relayed = None
        client, self._relayed = await connect_relayed(
            self.hive, self.file, self.asker, relay=parse_relay(self.relay),
            replicas=self.replicas, config=self.config, on_event=on_event,
            timeout_s=self.timeout_s, say=self.say)
        return client

    async def close(self) -> None:
        if self._relayed is not None:
            await self._relayed.close()
            self._relayed = None
        if self.asker is not None:
            self.asker.close()
            self.asker = None
        if self._own_hive and self.hive is not None:
            await self.hive.close()
        self.hive = None


@dataclass
class InProcessConnector:
    """`n` shard servers in this process (`--hive local:N`, tests): built once, on first use."""

    file: GGUFModelFile
    n: int
    weights: str
    replicas: int = 1
    config: ClientConfig | None = None
    options: dict[str, Any] = field(default_factory=dict)  # more `build_hive` arguments
    hive: InProcessHive | None = None

    @property
    def node_id(self) -> bytes | None:
        return None if self.hive is None else self.hive.asker.node_id

    async def connect(self, on_event: Consumer) -> HiveClient:
        if self.hive is None:
            self.hive = await build_hive(self.file.path, self.n, replicas=self.replicas,
                                         model=self.file, client_config=self.config,
                                         weights=self.weights, on_event=on_event, **self.options)
        return self.hive.client

    async def close(self) -> None:
        if self.hive is not None:
            await self.hive.close()
            self.hive = None
