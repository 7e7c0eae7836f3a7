"""Helpers for world-model tests: deterministic players and a stored edit stream."""

from __future__ import annotations

import pytest

from hive_core.base.identity import Identity
from world.model import City, SignedEdit


def player(n: int) -> Identity:
    """Player n's identity, the same in every run."""
    return Identity.from_seed(bytes([n]) * 32)


class Recorder:
    """A city whose local edits are kept, in order, as they would go on the wire."""

    def __init__(self, n: int) -> None:
        self.city = City(player(n))
        self.edits: list[SignedEdit] = []
        self.city.on_local_edit(self.edits.append)


@pytest.fixture
def alice() -> Recorder:
    return Recorder(1)


@pytest.fixture
def bob() -> Recorder:
    return Recorder(2)
