"""The player's choices: each moves the hive within real limits, is one signed action others
see, and a bad one is refused on screen with its reason and nothing lost."""

from __future__ import annotations

import asyncio

import pytest

from cadencia.game.choices import Activity, ChoiceRefused, Choices, parse_span, span_need_mb
from cadencia.game.session import game_source
from hive_core.base.stage import Part, Stage
from hive_core.model.quant import read_footprint


class FakeHosting:
    """Records what the choices asked of the hive (the real ones are tested below)."""

    def __init__(self, stages: list[Stage] | None = None) -> None:
        self.routable, self.served, self.refereeing = stages, [], False

    def stages(self) -> list[Stage] | None:
        return self.routable

    async def serve(self, stage: Stage) -> None:
        self.served.append(stage)

    def referee(self) -> None:
        self.refereeing = True


@pytest.fixture
def footprint(tiny_gguf):
    return read_footprint(tiny_gguf)


def test_spans_and_their_memory(footprint) -> None:
    assert parse_span("1-3", 4) == Stage(1, 3) and parse_span(" 0-2:mlp", 4) == Stage(0, 2, Part.MLP)
    for bad in ("3-1", "0-9", "two-three", "1-2:wings"):
        with pytest.raises(ChoiceRefused):
            parse_span(bad, 4)
    one, both = span_need_mb(footprint, 0, 1), span_need_mb(footprint, 0, 4)
    assert 0 < one < both  # more layers need more memory (weights and their KV cache)


def test_choices_move_the_hive_and_are_signed_actions(cities, footprint) -> None:
    alice, bob = cities
    source = game_source()
    hosting = FakeHosting()
    asked: list[str] = []
    choices = Choices(alice, source, footprint, hosting=hosting, memory=lambda: 10_000.0,
                      prioritise=asked.append)
    balance = alice.balance_mc()
    bobs_screen = game_source()
    Activity(bob, bobs_screen)  # Bob's HUD lists every player's latest choices

    async def go() -> list[str]:
        return [await choices.command(c) for c in ("/host 2-4", "/stake 300", "/priority 200 why?")]

    outcomes = asyncio.run(go())
    assert outcomes == ["hosting layers 2-3 (" + f"{span_need_mb(footprint, 2, 4):.0f} MB)",
                        "staked 300 mc: your node referees disputes", "paid 200 mc: your prompt goes first"]
    assert hosting.served == [Stage(2, 4)] and hosting.refereeing and asked == ["why?"]
    assert alice.balance_mc() == balance - 500
    kinds = sorted((a.kind, a.amount_mc) for a in bob.actions().values())  # Bob sees them all
    assert kinds == [("ask", 200), ("host", 0), ("stake", 300)]
    host = next(a for a in bob.actions().values() if a.kind == "host")
    assert (host.start, host.end, host.n_layers, host.free_mb) == (2, 4, 4, 10_000.0)
    from world.view.names import short_name

    who = short_name(alice.player_id)
    assert bobs_screen.hud.view().activity == (
        f"{who} hosts layers 2-3", f"{who} staked 300 mc to referee", f"{who} paid 200 mc for priority")


def test_bad_choices_are_refused_on_screen_and_nothing_is_lost(cities, footprint) -> None:
    alice, bob = cities
    source = game_source()
    hosting = FakeHosting([Stage(0, 2), Stage(2, 4)])
    choices = Choices(alice, source, footprint, hosting=hosting, memory=lambda: 0.5, prioritise=None)
    balance, edits = alice.balance_mc(), alice.state_vector()

    def refused(text: str) -> str:
        outcome = asyncio.run(choices.command(text))
        assert outcome.startswith("refused: ") and source.hud.view().refused == outcome
        return outcome

    assert "need" in refused("/host 0-2") and "0 MB free" in refused("/host 0-2")  # too big for memory
    assert "routes the stages 0-2, 2-4" in refused("/host 1-3")
    assert "costs 999999 mc and you have" in refused("/stake 999999")
    assert "at least 100 mc" in refused("/stake 5")
    assert "whole number" in refused("/stake lots")
    assert "nobody here answers prompts" in refused("/priority 100 hello")
    assert "unknown choice '/fly'" in refused("/fly away")
    assert hosting.served == [] and not hosting.refereeing
    assert alice.balance_mc() == balance and alice.state_vector() == edits and bob.actions() == {}


def test_achievements_come_from_real_events(cities, footprint, pay) -> None:
    from hive_core.events import ReplicaAnswered, Slashed, Verified

    alice, bob = cities
    source = game_source()
    choices = Choices(alice, source, footprint)
    # the fixture's receipt paid 400 tokens: the first verified token, not yet a thousand
    assert sorted(a.name for a in choices.check_achievements()) == ["first-verified-token"]
    pay(alice, tokens=700)
    liar, session = b"L" * 20, b"s" * 16
    me = bytes.fromhex(alice.player_id)
    for node, digest in ((me, b"ok"), (b"W" * 20, b"ok"), (liar, b"no")):
        source.on_event(ReplicaAnswered(session, 4, node, digest, 1.0), 1.0)
    source.on_event(Verified(session, 4, (me, b"W" * 20), 1.1), 1.1)
    source.on_event(Slashed(session, 4, liar, "outside tolerance", 1.1), 1.1)
    got = sorted(a.name for a in choices.check_achievements())
    assert got == ["liar-caught", "thousand-tokens"] and choices.check_achievements() == []
    assert sorted(a.name for a in bob.actions().values() if a.kind == "achievement") == [
        "first-verified-token", "liar-caught", "thousand-tokens"]
    assert "ACHIEVEMENT: a liar caught" in source.hud.view().notices


def test_paid_prompts_go_first_in_the_line() -> None:
    from cadencia.game.session import HiveSession

    source = game_source()
    session = HiveSession(source)
    order: list[str] = []

    async def ask(prompt: str, max_new_tokens: int = 32) -> None:
        order.append(prompt)
        await asyncio.sleep(0)

    session.ask = ask  # type: ignore[method-assign]

    async def go() -> None:
        for p in ("one", "two", "three"):
            session.submit(p)
        session.submit("paid", paid=True)
        while session.line or session._worker is not None and not session._worker.done():
            await asyncio.sleep(0.01)

    asyncio.run(go())
    assert order == ["paid", "one", "two", "three"]


async def test_hosting_a_stage_moves_the_players_server_in_the_embedded_hive(tiny_gguf, tmp_path) -> None:
    """The player's server leaves its stage for the other one: the next answer routes through
    it there, and the asker's receipts pay it for those layers."""
    from cadencia.game.credits import CreditKeeper
    from cadencia.game.hosting import EmbeddedHosting
    from cadencia.game.session import HiveSession, open_city

    city = open_city(str(tmp_path))
    me = bytes.fromhex(city.player_id)
    source = game_source()
    keeper = CreditKeeper(city, source)
    session = HiveSession(source, model=str(tiny_gguf), identity=city.identity, on_host=keeper.attach,
                          faulty=False)
    try:
        hive = (await session.load())._hive()
        server = hive.servers[0]
        choices = Choices(city, source, read_footprint(tiny_gguf), hosting=EmbeddedHosting(hive, server))
        choices.node = me
        (first,) = [ps.stage for ps in hive.client.plan.stages if me in ps.nodes]
        other = next(ps.stage for ps in hive.client.plan.stages if ps.stage != first)
        outcome = await choices.command(f"/host {other.start}-{other.end}")
        assert outcome.startswith(f"hosting layers {other.start}-{other.end - 1}"), outcome
        assert [ps.stage for ps in hive.client.plan.stages if me in ps.nodes] == [other]
        assert all(ps.nodes for ps in hive.client.plan.stages)
        assert "already serves" in await choices.command(f"/host {other.start}-{other.end}")
        result = await session.ask("hi", max_new_tokens=3)
        mine = {(r.layer_start, r.layer_end) for r in result.receipts if r.worker_id == me}
        # The stage it left kept one replica, so it is audited, and the player's node may be
        # drawn as that audit's auditor (paid for it too); the stage it serves pays it surely.
        assert (other.start, other.end) in mine and mine <= {(other.start, other.end), (first.start, first.end)}
        assert server.config.preload == (other,)
    finally:
        await session.close()
        city.close()


def test_hosting_never_leaves_a_stage_without_an_honest_server() -> None:
    """Moving the player's server to another stage is refused when the stage it leaves would
    keep only a node the asker has excluded (a slashed liar): its reason is on screen."""
    from types import SimpleNamespace

    from cadencia.game.hosting import EmbeddedHosting
    from hive_core.sched.planner import fixed_plan

    me, liar, a, b = b"m" * 20, b"l" * 20, b"a" * 20, b"b" * 20
    stages = [Stage(1, 15), Stage(15, 29)]
    client = SimpleNamespace(plan=fixed_plan(stages, [[me, liar], [a, b]]), spares=[],
                             reputation=SimpleNamespace(excluded=lambda n: n == liar))
    hosting = EmbeddedHosting(SimpleNamespace(client=client), SimpleNamespace(node=SimpleNamespace(node_id=me)))
    with pytest.raises(ChoiceRefused, match="layers 1-14 would have no honest server left"):
        asyncio.run(hosting.serve(Stage(15, 29)))
    assert [list(ps.nodes) for ps in client.plan.stages] == [[me, liar], [a, b]]  # nothing moved
    hosting.referee()
    assert client.spares == [me]


def test_a_refused_choice_shows_in_red_on_screen(make_app, cities, footprint) -> None:
    alice, _bob = cities
    source = game_source()
    choices = Choices(alice, source, footprint, memory=lambda: 1.0)
    app = make_app(source, mode="play")
    outcome = asyncio.run(choices.command("/host 0-4"))
    app.step()
    assert app.hud.message.getText() == outcome and outcome.startswith("refused: layers 0-4 need")
    assert tuple(app.hud.message.textNode.get_text_color()) == pytest.approx((1, 0.3, 0.25, 1))
