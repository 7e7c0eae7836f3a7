"""The player's choices that move the hive, each one signed action in the city doc.

- ``/host A-B`` (or ``A-B:attention`` / ``:mlp``): serve layers [A, B) on your node, if they fit
  the memory the machine has free now (weights as the file stores them plus a KV cache for
  `HOST_CONTEXT` tokens); your node loads them and announces what it serves (a `Hosting`
  puts it to work: the embedded hive's route, or a live node's layer-span records).
- ``/stake MC``: lock credits to referee; your node joins the referees the asker recruits when
  replicas disagree, and is paid (receipts) for each stage it recomputes.
- ``/priority MC PROMPT``: pay credits to put a prompt ahead of unpaid ones in your line.
- building on your plot is the editor's (``cadencia edit``), paid from the same balance.
- achievements are recorded when the events that earn them happened: the first verified token
  your node served (a receipt), a thousand tokens served (receipts), a liar caught (your
  node's answer agreed with the verdict that slashed it).

Every refusal is a `ChoiceRefused` with the reason, shown on the HUD; nothing is written or
spent then. Credits move only through the economy's signed spends in the city's ledger.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hive_core.base.stage import Part, Stage
from hive_core.economy import EconomyError
from hive_core.model.quant import Footprint
from world.model import Action, WorldError
from world.model.actions import THOUSAND
from world.view.game_source import GameSource
from world.view.names import short_name

HOST_CONTEXT = 2048  # tokens of KV cache a hosted span is sized for
MIN_STAKE_MC = 100
HELP = ("choices: /host A-B[:attention|:mlp] serves layers A..B-1, /stake MC referees, "
        "/priority MC PROMPT asks first; build in `cadencia edit`")


class ChoiceRefused(ValueError):
    """A choice the hive or the rules do not allow now; the message says why."""


class Hosting(Protocol):
    """What puts a host choice to work in the running hive."""

    def stages(self) -> list[Stage] | None:
        """The stages this hive can route (None: any span)."""

    async def serve(self, stage: Stage) -> None:
        """Load `stage` on the player's node and announce it; raise ChoiceRefused if not."""

    def referee(self) -> None:
        """Offer the player's node as a referee."""


@dataclass(frozen=True)
class HostPlan:
    """A parsed host choice and what it needs."""

    stage: Stage
    need_mb: float


def span_need_mb(fp: Footprint, start: int, end: int, kv: str = "fp32", context: int = HOST_CONTEXT) -> float:
    """Memory to serve layers [start, end): their weights as stored, the tensors every layer
    uses, and a KV cache for `context` tokens."""
    weights = sum(fp.layer_bytes[start:end]) + fp.shared_bytes
    cache = (end - start) * context * fp.kv_bytes_per_token_layer.get(kv, fp.kv_bytes_per_token_layer["fp32"])
    return (weights + cache) / 2**20


def free_mb() -> float:
    import psutil

    return float(psutil.virtual_memory().available) / 2**20


def parse_span(text: str, n_layers: int) -> Stage:
    """'15-30' or '0-15:attention' -> Stage; ChoiceRefused names what is wrong."""
    m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*(?::\s*(full|attention|mlp))?\s*", text)
    if m is None:
        raise ChoiceRefused(f"host what? write the layers as A-B (e.g. 0-{n_layers // 2}), got {text!r}")
    start, end = int(m[1]), int(m[2])
    if not 0 <= start < end <= n_layers:
        raise ChoiceRefused(f"layers {start}-{end} are not a span of this model's {n_layers} "
                            f"(0 <= A < B <= {n_layers})")
    return Stage(start, end, Part.from_label(m[3] or "full"))


class Choices:
    """One player's choices on `city` (their replica), shown in `source`'s HUD."""

    def __init__(self, city: Any, source: GameSource, footprint: Footprint, *,
                 hosting: Hosting | None = None, memory: Callable[[], float] = free_mb,
                 prioritise: Callable[[str], None] | None = None, kv: str = "fp32") -> None:
        self.city, self.source, self.fp, self.hosting, self.memory = city, source, footprint, hosting, memory
        self.prioritise, self.kv = prioritise, kv
        self.me = bytes.fromhex(city.player_id)
        self.node: bytes = self.me  # the node whose work earns achievements (the hosted server's)
        self.made: list[Action] = []

    # -- the choices -------------------------------------------------------------------------

    def plan_host(self, text: str) -> HostPlan:
        stage = parse_span(text, self.fp.n_layers)
        routable = self.hosting.stages() if self.hosting is not None else None
        if routable is not None and (stage.start, stage.end) not in {(s.start, s.end) for s in routable}:
            spans = ", ".join(f"{s.start}-{s.end}" for s in routable)
            raise ChoiceRefused(f"this hive routes the stages {spans}: host one of them")
        need, free = span_need_mb(self.fp, stage.start, stage.end, self.kv), self.memory()
        if need > free:
            raise ChoiceRefused(f"layers {stage.start}-{stage.end} need {need:.0f} MB; "
                                f"this machine has {free:.0f} MB free")
        return HostPlan(stage, need)

    async def host(self, text: str) -> Action:
        plan = self.plan_host(text)
        if self.hosting is not None:
            await self.hosting.serve(plan.stage)
        action = self._record("host", model=self.fp.path.rsplit("/", 1)[-1][:128], start=plan.stage.start,
                              end=plan.stage.end, n_layers=self.fp.n_layers, part=plan.stage.part.label,
                              mem_mb=max(round(plan.need_mb, 3), 0.001), free_mb=round(self.memory(), 3))
        self.source.hud.notice(f"hosting layers {plan.stage.start}-{plan.stage.end - 1} "
                               f"({plan.need_mb:.0f} MB)")
        return action

    def stake(self, text: str) -> Action:
        amount = self._amount(text, "stake")
        if amount < MIN_STAKE_MC:
            raise ChoiceRefused(f"a stake is at least {MIN_STAKE_MC} mc, got {amount}")
        action = self._record("stake", cost_mc=amount)
        if self.hosting is not None:
            self.hosting.referee()
        self.source.hud.notice(f"staked {amount} mc: your node referees disputes")
        return action

    def priority(self, text: str) -> Action:
        amount_text, _, prompt = text.strip().partition(" ")
        amount = self._amount(amount_text, "priority")
        if not prompt.strip():
            raise ChoiceRefused("priority for what? write /priority MC PROMPT")
        if self.prioritise is None:
            raise ChoiceRefused("nobody here answers prompts (spectators do not ask)")
        action = self._record("ask", cost_mc=amount)
        self.prioritise(prompt.strip())
        self.source.hud.notice(f"paid {amount} mc: your prompt goes first")
        return action

    async def command(self, text: str) -> str:
        """Run a '/choice ARGS' typed in the prompt box; the outcome is shown on the HUD.
        Returns the outcome's text (a refusal's reason too: it never raises)."""
        word, _, rest = text.strip().partition(" ")
        try:
            if word == "/host":
                await self.host(rest)
            elif word == "/stake":
                self.stake(rest)
            elif word == "/priority":
                self.priority(rest)
            else:
                raise ChoiceRefused(f"unknown choice {word!r}; {HELP}")
        except (ChoiceRefused, WorldError, EconomyError) as exc:
            reason = f"refused: {exc}"
            self.source.hud.refuse(reason)
            return reason
        return self.source.hud.view().notices[-1]

    # -- achievements ----------------------------------------------------------------------

    def achieve(self, *_: object) -> None:
        """`check_achievements` as a callback (after an answer, after a receipt)."""
        self.check_achievements()

    def check_achievements(self) -> list[Action]:
        """Record the achievements the ledger and the game now prove (each once)."""
        held = {a.name for a in self.city.actions().values()
                if a.owner == self.city.player_id and a.kind == "achievement"}
        ledger = self.city.ledger()
        mine = sorted((r for r in ledger.receipts if r.worker_id == self.me), key=lambda r: r.timestamp_ms)
        earned: list[tuple[str, str, str]] = []
        if mine and "first-verified-token" not in held:
            earned.append(("first-verified-token", mine[0].receipt_id, "first verified token served"))
        if sum(r.tokens for r in mine) >= THOUSAND and "thousand-tokens" not in held:
            earned.append(("thousand-tokens", "ledger", "a thousand tokens served"))
        caught = sorted(self.source.state.caught(self.node))
        if caught and "liar-caught" not in held:
            liar, session = caught[0]
            earned.append(("liar-caught", f"{liar.hex()}:{session.hex()}", "a liar caught"))
        out = []
        for name, proof, text in earned:
            try:
                out.append(self._record("achievement", name=name, proof=proof))
            except WorldError as exc:  # the doc disagrees (e.g. a receipt not recorded yet)
                self.source.hud.refuse(f"achievement {name} not proven: {exc}")
                continue
            self.source.hud.notice(f"ACHIEVEMENT: {text}")
        return out

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _amount(text: str, what: str) -> int:
        if not text.strip().isdigit() or int(text) <= 0:
            raise ChoiceRefused(f"{what} how much? give milli-credits as a whole number, got {text.strip()!r}")
        return int(text)

    def _record(self, kind: str, *, cost_mc: int = 0, **fields: Any) -> Action:
        if cost_mc > 0:
            balance = self.city.balance_mc()
            if cost_mc > balance:
                raise ChoiceRefused(f"{kind} costs {cost_mc} mc and you have {balance} mc: "
                                    "host a stage to earn more")
        action = self.city.choose(kind, cost_mc=cost_mc, **fields)
        self.made.append(action)
        self.source.hud.set(credits_mc=self.city.balance_mc())
        return action


def describe(action: Action) -> str:
    """One line for a player's choice, as other players read it."""
    if action.kind == "host":
        return f"hosts layers {action.start}-{action.end - 1}"
    if action.kind == "stake":
        return f"staked {action.amount_mc} mc to referee"
    if action.kind == "ask":
        return f"paid {action.amount_mc} mc for priority"
    return "earned: " + action.name.replace("-", " ")


class Activity:
    """Every player's latest choices, in the HUD, kept current as the city doc changes (local
    edits and other players' signed edits alike)."""

    def __init__(self, city: Any, source: GameSource, keep: int = 4) -> None:
        self.city, self.source, self.keep = city, source, keep
        city.on_change(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        latest = sorted(self.city.actions().values(), key=lambda a: (a.at_ms, a.id))[-self.keep:]
        self.source.hud.set(activity=tuple(f"{short_name(a.owner)} {describe(a)}" for a in latest))

