"""Three players edit concurrently and converge under shuffled, duplicated, delayed and lost
delivery, healed by state-vector rounds (hypothesis drives the edits and the network)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from world.model import City, Outcome, SignedEdit

from .conftest import Recorder

OPS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(
        ["place", "move", "rotate", "upgrade", "remove", "undo", "redo", "road", "deliver"]),
        st.integers(0, 1000)),
    min_size=1, max_size=40)


def _apply(city: City, op: str, arg: int) -> None:
    mine = sorted(b for b, v in city.buildings().items() if v.owner == city.player_id)
    if op == "place" or (not mine and op in ("move", "rotate", "upgrade", "remove")):
        city.place_building("house", (float(arg % 50), float(arg // 50), 0.0))
    elif op == "move":
        city.move(mine[arg % len(mine)], (float(arg), 1.0, 0.0))
    elif op == "rotate":
        city.rotate(mine[arg % len(mine)], float(arg))
    elif op == "upgrade":
        b = mine[arg % len(mine)]
        if city.building(b).level < 10:
            city.upgrade(b)
    elif op == "remove":
        city.remove(mine[arg % len(mine)])
    elif op == "undo":
        city.undo()
    elif op == "redo":
        city.redo()
    elif op == "road":
        city.add_road([(0.0, float(arg)), (1.0, float(arg))])


class Network:
    """Per-link queues of edits that a seeded RNG shuffles, duplicates, delays and drops."""

    def __init__(self, peers: list[Recorder], rng: random.Random) -> None:
        self.peers = peers
        self.rng = rng
        self.queues: dict[tuple[int, int], list[SignedEdit]] = {
            (i, j): [] for i in range(len(peers)) for j in range(len(peers)) if i != j}
        self.sent = [0] * len(peers)

    def collect(self) -> None:
        """Push each peer's new local edits onto its outgoing links (local edits only)."""
        for i, p in enumerate(self.peers):
            for edit in p.edits[self.sent[i]:]:
                for j in range(len(self.peers)):
                    if j != i and self.rng.random() > 0.3:  # 30 % lost
                        self.queues[(i, j)].append(edit)
                        if self.rng.random() < 0.2:  # 20 % duplicated
                            self.queues[(i, j)].append(edit)
            self.sent[i] = len(p.edits)

    def deliver(self) -> None:
        """Deliver a random part of each queue in random order; the rest stays delayed."""
        for (_, j), q in self.queues.items():
            self.rng.shuffle(q)
            k = self.rng.randint(0, len(q))
            for edit in q[:k]:
                assert self.peers[j].city.receive(edit) is not Outcome.REJECTED
            del q[:k]

    def heal(self) -> None:
        """State-vector rounds until quiet: each asks each other for what it lacks."""
        for _ in range(4):
            for a in self.peers:
                for b in self.peers:
                    if a is not b:
                        for edit in b.city.edits_since(a.city.state_vector()):
                            a.city.receive(edit)


@given(OPS, st.randoms(use_true_random=False))
@settings(max_examples=60, deadline=None)
def test_three_peers_converge(ops: list[tuple[int, str, int]], rng: random.Random) -> None:
    peers = [Recorder(n) for n in (11, 12, 13)]
    net = Network(peers, rng)
    for who, op, arg in ops:
        if op == "deliver":
            net.collect()
            net.deliver()
        else:
            _apply(peers[who].city, op, arg)
    net.collect()
    net.deliver()
    net.heal()
    views = [p.city.to_json() for p in peers]
    assert views[0] == views[1] == views[2]
    svs = [p.city.state_vector() for p in peers]
    assert svs[0] == svs[1] == svs[2]
    for p in peers:  # nothing left pending, nobody rejected anything
        assert p.city.rejected == 0
        assert not any(p.city._early.get(c) for c in svs[0])
    # Every player's own surviving work is visible everywhere, owned by them.
    for p in peers:
        mine = {b for b, v in p.city.buildings().items() if v.owner == p.city.player_id}
        for q in peers:
            assert mine == {b for b, v in q.city.buildings().items()
                            if v.owner == p.city.player_id}
