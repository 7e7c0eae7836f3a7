"""The edits a peer holds, per author chain, to answer "what am I missing?" by state vector."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from .edit import SignedEdit


class EditLog:
    """Non-overlapping, sorted chains of signed edits, one chain per Yjs client id."""

    def __init__(self) -> None:
        self._chains: dict[int, list[SignedEdit]] = {}

    def add(self, edit: SignedEdit) -> list[SignedEdit]:
        """Insert `edit`; return the edits it covers, which it replaces (a compacted edit)."""
        chain = self._chains.setdefault(edit.client_id, [])
        i = bisect.bisect_left(chain, edit.start, key=lambda e: e.start)
        j = i
        while j < len(chain) and chain[j].end <= edit.end:
            j += 1
        covered = chain[i:j]
        chain[i:j] = [edit]
        return covered

    def since(self, state_vector: dict[int, int]) -> Iterator[SignedEdit]:
        """Every held edit with clocks the state vector has not reached, chain order."""
        for client, chain in self._chains.items():
            have = state_vector.get(client, 0)
            if chain and chain[-1].end <= have:
                continue
            yield from chain[bisect.bisect_right(chain, have, key=lambda e: e.end):]

    def chain(self, client: int) -> list[SignedEdit]:
        return list(self._chains.get(client, ()))

    def replace_chain(self, client: int, edits: Iterable[SignedEdit]) -> None:
        self._chains[client] = sorted(edits, key=lambda e: e.start)

    def __iter__(self) -> Iterator[SignedEdit]:
        for chain in self._chains.values():
            yield from chain

    def __len__(self) -> int:
        return sum(len(c) for c in self._chains.values())
