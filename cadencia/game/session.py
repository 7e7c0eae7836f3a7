"""Game sessions the commands run: the embedded hive answering prompts, and the player's city."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from hive_core.base.identity import Identity
from hive_core.base.paths import data_dir as resolve
from hive_core.exec.frame_gate import FrameGate
from hive_core.exec.worker_fork import ForkServer
from world.game import GameState
from world.model import City
from world.model.schema import MAX_LEVEL
from world.view.city_view import CityView
from world.view.game_source import GameSource, HudBoard, PulseReplay

from .hive_link import N_SERVERS, THREADS, AskResult, EmbeddedHive

MAX_LINE = 8  # prompts waiting for the hive at most
PLOT_SIZE = 8.0  # a new player's plot, world units (cells of 1)
SLOW_MOTION = 25.0  # the embedded hive's hops take milliseconds: played 25x slower they can be seen


def game_source(player: str = "", slow_motion: float = SLOW_MOTION, min_leg_s: float = 0.0) -> GameSource:
    """An empty game (state, pulse replay, HUD board) for the view to read."""
    return GameSource(GameState(), HudBoard(player), PulseReplay(slow_motion, min_leg_s=min_leg_s))


class HiveSession:
    """Starts the embedded hive off the frame loop's way, then answers prompts one at a time."""

    def __init__(self, source: GameSource, *, model: str | None = None, kv: str = "fp32",
                 faulty: bool = True, threads: int | None = None, host: bool = True,
                 say: Callable[[str], None] = lambda _m: None,
                 on_answer: Callable[[AskResult], None] | None = None, identity: object = None,
                 on_host: Callable[[object], None] | None = None, transport: str = "memory",
                 weights: str | None = None, verify: bool = True,
                 forks: ForkServer | None = None) -> None:
        self.transport = transport  # "memory" (emulated links) or "rtc" (aiortc on loopback)
        self.weights = weights  # packed | fp32 | bf16; None: hive_core.model.modes.DEFAULT_WEIGHTS
        self.verify = verify  # False: --no-verify, answers taken without checking them
        self.source, self.model, self.kv, self.faulty, self.threads = source, model, kv, faulty, threads
        self.host = host  # this device hosts the first server's shard (play); a spectator hosts none
        self.say, self.on_answer = say, on_answer
        self.identity = identity  # the player's key: the hosted server runs under it (play)
        self.on_host = on_host  # called with the hosted ShardServer once it is up
        self.hive = EmbeddedHive(source, say=say, forks=forks)
        self.results: list[AskResult] = []
        self._busy = asyncio.Lock()
        self.ready = asyncio.Event()  # set once the hive is up
        self.line: list[tuple[bool, int, str, int]] = []  # (unpaid, order, prompt, max tokens)
        self._served = 0  # prompts taken from the line
        self._worker: asyncio.Task[None] | None = None

    @property
    def gate(self) -> FrameGate:
        """The hive's frame gate: give it to the `WorldApp` so hosted compute waits for frames."""
        return self.hive.gate

    async def load(self) -> EmbeddedHive:
        if not self.ready.is_set():
            import torch

            torch.set_num_threads(self.threads or THREADS)  # the stage workers inherit it
            self.source.hud.set(consensus="starting the hive ...")
            await self.hive.start(self.model, kv=self.kv, faulty=self.faulty,
                                  host=self.identity if self.host else None,
                                  transport=self.transport, weights=self.weights,
                                  verify=self.verify)
            hive = self.hive._hive()
            for spare in hive.servers[N_SERVERS:]:  # they hold no stage: they referee disagreements
                self.source.roles[spare.node.node_id.hex()] = "referee"
            if self.host:  # this device hosts the first server's shard: its credits are the player's
                hosted = self.hive._hive().servers[0]
                self.source.me = hosted.node.node_id
                if self.on_host is not None:
                    self.on_host(hosted)
                self.source.hud.set(player=f"{self.source.hud.view().player} hosting {self.source.me.hex()[:6]}")
            self.source.hud.set(consensus="-")
            self.ready.set()
        return self.hive

    async def ask(self, prompt: str, max_new_tokens: int = 32) -> AskResult:
        async with self._busy:
            hive = await self.load()
            self.say(f"asking the hive: {prompt!r}")
            result = await hive.ask(prompt, max_new_tokens)
            self.results.append(result)
            self.say(f"answer: {result.text.strip()!r} ({len(result.new_ids)} tokens, "
                     f"{result.tokens_per_s:.1f} tokens/s, verified={result.verified}, "
                     f"slashed {len(result.slashed)})")
            if self.on_answer is not None:
                self.on_answer(result)
            return result

    def submit(self, prompt: str, max_new_tokens: int = 32, *, paid: bool = False) -> None:
        """From the HUD's prompt box: wait in line, then ask in the background (one at a time);
        a prompt paid for (`/priority`) goes before every unpaid one."""
        if len(self.line) >= MAX_LINE:
            self.source.hud.refuse(f"refused: {MAX_LINE} prompts are already waiting")
            return
        self._served += 1
        self.line.append((not paid, self._served, prompt, max_new_tokens))
        self.line.sort()
        if len(self.line) > 1 or self._busy.locked():
            self.source.hud.notice(f"in line: {len(self.line)} prompt(s) waiting")
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.line:
            _, _, prompt, max_new_tokens = self.line.pop(0)
            try:
                await self.ask(prompt, max_new_tokens)
            except (ValueError, RuntimeError, ConnectionError) as exc:
                self.source.hud.refuse(f"ask failed: {exc}")

    async def close(self) -> None:
        await self.hive.close()


def open_city(data_dir: str | None):  # -> world.model.City
    """The player's city replica (SQLite store in the data dir), with a plot of their own."""

    city = City.open(Path(resolve(data_dir)))
    ensure_plot(city)
    return city


def ensure_plot(city, x: float = -4.0, y: float = -14.0) -> str:  # city: world.model.City
    """The player's first plot, created (with their district) on first play."""
    mine = [p for p in city.plots().values() if p.owner == city.player_id]
    if mine:
        return mine[0].id
    if not city.players().get(city.player_id):
        city.join("player")
    district = city.claim_district()
    return city.add_plot(district, x, y, PLOT_SIZE, PLOT_SIZE)


def neighbour_city(city, x: float = 6.0, y: float = -14.0):  # -> world.model.City
    """A second player's replica, synced both ways with `city` through signed edits,
    owning a plot beside the player's: somewhere the editor must refuse to build."""

    other = City(Identity.generate())
    other.on_local_edit(city.receive)
    city.on_local_edit(other.receive)
    for edit in city.edits_since({}):
        other.receive(edit)
    other.join("neighbour")
    other.add_plot(other.claim_district(), x, y, PLOT_SIZE, PLOT_SIZE)
    return other


def city_view(city) -> CityView:
    return CityView(city)


class Balance:
    """The player's spendable credits, re-read from the city's ledger only after it changed
    (the HUD asks every frame)."""

    def __init__(self, city) -> None:  # city: world.model.City
        self.city = city
        self._value: int | None = None
        city.on_change(self._changed)

    def _changed(self) -> None:
        self._value = None

    def __call__(self) -> int:
        if self._value is None:
            self._value = self.city.balance_mc()
        return self._value


UPGRADE_MC = 100  # milli-credits to raise a building one level


def build_with_credits(city, receipts, cost_mc: int = UPGRADE_MC) -> int:  # city: world.model.City
    """Record the receipts that pay this player, then spend the balance raising their buildings
    (lowest first; a first tower on their plot if they have none). Returns levels raised."""

    me = bytes.fromhex(city.player_id)
    for receipt in receipts:
        if receipt.worker_id == me:
            city.record_receipt(receipt)
    raised = 0
    while city.balance_mc() >= cost_mc:
        mine = sorted((b for b in city.buildings().values() if b.owner == city.player_id and b.level < MAX_LEVEL),
                      key=lambda b: (b.level, b.id))
        if mine:
            city.upgrade(mine[0].id, cost_mc=cost_mc)
        else:
            plot = next((p for p in city.plots().values() if p.owner == city.player_id), None)
            if plot is None or any(b.owner == city.player_id for b in city.buildings().values()):
                break  # nowhere to build, or everything is at the top level
            city.place_building("tower", (plot.x + 0.5, plot.y + 0.5, 0.0), plot=plot.id, cost_mc=cost_mc)
        raised += 1
    return raised
