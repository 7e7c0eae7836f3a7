"""Asking a live hive from inside the game: the player's own mesh node is the asker.

For each prompt: find the nodes whose signed layer-span records serve this model, link
to them, ask what they hold, route over their spans (or the planner), and run the
session with `hive_core.exec`'s client; its events feed the game state, so the pulses,
towers and falls are the live hive's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from hive_core.exec.client import ClientConfig
from hive_core.exec.join import AskerPart, connect
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.locate import resolve_model_path
from hive_core.model.modes import DEFAULT_WEIGHTS
from hive_core.model.tokenizer import GGUFTokenizer
from world.view.game_source import GameSource

from .hive_link import COMPUTE_NICE, AskResult, ask_through


class LiveAsker:
    """Prompts from the HUD, answered by the hive the player's `HiveNode` has joined."""

    def __init__(self, hive_node: Any, source: GameSource, *, model: str | None = None, replicas: int = 2,
                 timeout_s: float = 10.0, say: Callable[[str], None] = lambda _m: None,
                 weights: str | None = None, gate: Any = None, verify: bool = True) -> None:
        """`gate`: the game's `FrameGate`; the embedding and head compute between frames.
        `verify` False (--no-verify) takes the servers' answers unchecked."""

        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.hive_node, self.source, self.replicas, self.timeout_s, self.say = (
            hive_node, source, replicas, timeout_s, say)
        self.path = resolve_model_path(model)
        self.file = GGUFModelFile(self.path)
        self.tokenizer = GGUFTokenizer(self.file)
        self.weights = weights or DEFAULT_WEIGHTS  # how the embedding and head are held
        self._asker: Any = None  # embedding + head on their compute thread, loaded on the first ask
        self.gate = gate
        self.verify = verify
        self._busy = asyncio.Lock()
        self.results: list[AskResult] = []

    async def _client(self) -> Any:
        if self._asker is None:  # loaded on the thread that computes with it, for every ask
            self._asker = await asyncio.to_thread(
                AskerPart.load, self.file, weights=self.weights, nice=COMPUTE_NICE, gate=self.gate)
        client = await connect(self.hive_node, self.file, self._asker, replicas=self.replicas,
                               config=ClientConfig(verify=self.verify),
                               on_event=lambda e: self.source.on_event(e, time.monotonic()),
                               timeout_s=self.timeout_s)
        self.source.hud.set(sharding=" | ".join(
            f"L{ps.stage.start}-{ps.stage.end - 1}: " + "+".join(n.hex()[:6] for n in ps.nodes)
            for ps in client.plan.stages))
        return client

    async def ask(self, prompt: str, max_new_tokens: int = 32) -> AskResult:
        async with self._busy:
            self.say(f"asking the live hive: {prompt!r}")
            client = await self._client()
            try:
                result = await ask_through(client, self.file, self.tokenizer, self.source, prompt, max_new_tokens)
            finally:
                client.close()
            self.results.append(result)
            self.say(f"answer: {result.text.strip()!r} ({len(result.new_ids)} tokens, "
                     f"verified={result.verified}, slashed {len(result.slashed)})")
            return result

    def submit(self, prompt: str, max_new_tokens: int = 32) -> None:
        """From the HUD's prompt box: ask in the background, one at a time; failures show on the HUD."""
        if self._busy.locked():
            self.source.hud.set(consensus="busy: one ask at a time")
            return

        async def go() -> None:
            try:
                await self.ask(prompt, max_new_tokens)
            except (ValueError, RuntimeError, ConnectionError) as exc:
                self.source.hud.set(consensus=f"ask failed: {exc}")

        asyncio.get_running_loop().create_task(go())
