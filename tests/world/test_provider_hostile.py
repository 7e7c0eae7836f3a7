"""A player who signs malformed Yjs updates with their own key cannot silence a sync link.

Adversary: a careful player. Any player may sign anything with their own key, so the edits
here are the attacker's real edits with their Yjs update mutated (bit flips, truncations,
splices with another of its updates) inside a validly signed edit. Some of these make
pycrdt raise RuntimeError ("block parent ... must be deleted or shared ref type") and some
make the Rust library panic (pyo3's PanicException, a BaseException); before the fix one of
them killed the victim's receive loop, the next honest edit on that link was never applied
and stopping the provider raised. Each is refused like any invalid edit; the link serves on.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hive_core.mesh.memchannel import MemoryChannel, memory_pair
from world.model import City, SignedEdit
from world.model.errors import EditError
from world.model.provider import SyncProvider
from world.model.yproto import Edits, encode

from .conftest import player

OPS = ("flip", "truncate", "splice")
# (edit index, op, seed) that pycrdt turns into a RuntimeError or a Rust panic (found by a
# seeded search over 6,000 mutations of ATTACKER_EDITS: 7 RuntimeErrors and 5 panics).
RUNTIME_ERRORS = [(4, "flip", 504), (1, "flip", 651), (1, "flip", 1941), (1, "flip", 2886)]
PANICS = [(3, "splice", 1373), (3, "splice", 3128), (3, "splice", 3878), (3, "splice", 4943)]


def attacker_edits() -> list[SignedEdit]:
    """Player 9's real edits, the same bytes in every run (building ids made deterministic)."""
    ids = itertools.count(1)
    with mock.patch("world.model.city.os.urandom", lambda n: next(ids).to_bytes(n, "big")):
        city = City(player(9))
        edits: list[SignedEdit] = []
        city.on_local_edit(edits.append)
        city.join("mallory")
        house = city.place_building("house", (1.0, 2.0, 0.0))
        city.move(house, (3.0, 2.0, 0.0))
        city.remove(house)
        city.place_building("tower", (5.0, 2.0, 0.0))
    return edits


ATTACKER_EDITS = attacker_edits()


def mutated(k: int, op: str, seed: int) -> SignedEdit:
    """Edit `k` of the attacker with its update mutated, signed by the attacker itself."""
    real = ATTACKER_EDITS[k]
    other = ATTACKER_EDITS[(k + 1) % len(ATTACKER_EDITS)].update
    rng = random.Random(seed)
    update = bytearray(real.update)
    if op == "flip":
        for _ in range(rng.randint(1, 3)):
            update[rng.randrange(len(update))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        update = update[:rng.randrange(1, len(update))]
    else:
        cut = rng.randrange(len(update))
        update = update[:cut] + other[rng.randrange(len(other)):]
    return SignedEdit.create(player(9), real.start, real.end, bytes(update) or b"\0")


class Victim:
    """Player 1's city synced with a live provider over one channel; `send` is the attacker's
    end of that channel, where honest player 2's edits come in too."""

    def __init__(self) -> None:
        self.city = City(player(1))
        ours, self.theirs = memory_pair("crdt", seed=1)
        self.provider = SyncProvider(self.city, ours, interval_s=0.05)
        self.honest = City(player(2))
        self.honest_edits: list[SignedEdit] = []
        self.honest.on_local_edit(self.honest_edits.append)

    async def send(self, *edits: SignedEdit) -> None:
        await self.theirs.send(encode(Edits(tuple(bytes(e) for e in edits))))

    async def honest_edit(self) -> str:
        building = self.honest.place_building("house", (float(len(self.honest_edits)), 9.0, 0.0))
        await self.send(self.honest_edits[-1])
        return building

    async def arrived(self, buildings: set[str], timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not buildings <= set(self.city.buildings()):
            assert loop.time() < deadline, "an honest edit never arrived"
            await asyncio.sleep(0.01)

    def loops_alive(self) -> bool:
        return all(not task.done() for task in self.provider._tasks)


def refused_by_pycrdt(k: int, op: str, seed: int) -> str:
    """What applying the mutated update to a replica holding the attacker's earlier edits does
    (the kind of exception pycrdt raises, or "ok")."""
    from pycrdt import Doc

    doc = Doc()
    for edit in ATTACKER_EDITS[:k]:
        doc.apply_update(edit.update)
    try:
        doc.apply_update(mutated(k, op, seed).update)
    except BaseException as exc:  # noqa: BLE001 - a Rust panic is a BaseException
        return type(exc).__name__
    return "ok"


@pytest.mark.parametrize(("k", "op", "seed"), RUNTIME_ERRORS[:1] + PANICS[:1])
def test_the_regression_inputs_still_make_pycrdt_fail(k: int, op: str, seed: int) -> None:
    """The inputs below do hit the library errors they are named for (else they test nothing)."""
    expected = "RuntimeError" if (k, op, seed) in RUNTIME_ERRORS else "PanicException"
    assert refused_by_pycrdt(k, op, seed) == expected


async def test_every_mutation_is_refused_and_the_same_link_keeps_delivering() -> None:
    """On one live link: the attacker's chain in order, each step preceded by mutated versions
    of it (the RuntimeError and panic ones included), each followed by an honest edit."""
    victim = Victim()
    rng = random.Random(18)
    mutations = RUNTIME_ERRORS + PANICS + [
        (rng.randrange(len(ATTACKER_EDITS)), rng.choice(OPS), rng.randrange(2**32))
        for _ in range(120)]
    honest: set[str] = set()
    victim.provider.start()
    try:
        for k, real in enumerate(ATTACKER_EDITS):
            for mk, op, seed in sorted(m for m in mutations if m[0] == k):
                bad = mutated(mk, op, seed)
                if bad.update == real.update:
                    continue
                await victim.send(bad)
                honest.add(await victim.honest_edit())
            await victim.send(real)  # the attacker's own valid edit still gets in afterwards
            await victim.arrived(honest)
        assert victim.loops_alive()
        attacker = City(player(8))  # what the attacker's valid chain alone builds
        for edit in ATTACKER_EDITS:
            attacker.receive(edit)
        assert set(victim.city.buildings()) == honest | set(attacker.buildings())
        assert victim.provider.stats.rejected >= len(RUNTIME_ERRORS + PANICS)
        assert victim.city.state_vector()[ATTACKER_EDITS[0].client_id] == ATTACKER_EDITS[-1].end
    finally:
        await victim.provider.stop()  # raised before the fix, re-raising the loop's error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(0, len(ATTACKER_EDITS) - 1), op=st.sampled_from(OPS),
       seed=st.integers(0, 2**32 - 1))
@example(*RUNTIME_ERRORS[0])
@example(*PANICS[0])
def test_a_mutated_signed_edit_never_stops_later_edits_on_its_link(
    k: int, op: str, seed: int,
) -> None:
    async def scenario() -> None:
        victim = Victim()
        victim.provider.start()
        try:
            await victim.send(*ATTACKER_EDITS[:k])
            await victim.send(mutated(k, op, seed))
            buildings = {await victim.honest_edit(), await victim.honest_edit()}
            await victim.arrived(buildings)
            assert victim.loops_alive()
        finally:
            await victim.provider.stop()

    asyncio.run(scenario())


def test_an_import_that_breaks_the_library_is_one_edit_error() -> None:
    """`world import` of such an update: refused with one short EditError, the city intact."""
    for k, op, seed in RUNTIME_ERRORS[:1] + PANICS[:1]:
        city = City(player(8))
        for edit in ATTACKER_EDITS[:k]:
            city.receive(edit)
        before = city.to_json()
        with pytest.raises(EditError, match="not a Yjs update") as caught:
            city.import_update(mutated(k, op, seed).update)
        assert len(str(caught.value)) < 400 and "\n" not in str(caught.value)
        assert city.to_json() == before


async def test_stopping_a_provider_whose_loop_failed_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Defence in depth: even a loop that died of a bug ends quietly at stop (and is logged)."""
    channel, _ = memory_pair("crdt")
    provider = SyncProvider(City(player(1)), channel, interval_s=0.05)
    provider.start()

    async def boom() -> None:
        raise RuntimeError("a bug in a loop")

    provider._tasks.append(asyncio.ensure_future(boom()))
    await asyncio.sleep(0.01)
    await provider.stop()
    assert "had failed" in caplog.text
    assert isinstance(channel, MemoryChannel)
