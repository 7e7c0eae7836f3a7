"""The sessions a shard server runs that their askers have not ended, by asker, bounded."""

from __future__ import annotations

from collections import OrderedDict


class OpenSessions:
    """Session ids admitted and not ended, per asker: what to drop when an asker goes.

    Bounded: at most `per_asker` sessions an asker (the host evicts its oldest beyond its own
    cap anyway) and `askers` askers (one never linked here, a cascade's, is never seen to go),
    the least recently active forgotten first.
    """

    def __init__(self, per_asker: int, askers: int) -> None:
        if per_asker < 1 or askers < 1:
            raise ValueError("open sessions need room for at least one asker and session")
        self.per_asker = per_asker
        self.askers = askers
        self._by_asker: OrderedDict[bytes, OrderedDict[bytes, None]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_asker.values())

    def opened(self, asker: bytes, session_id: bytes) -> None:
        ids = self._by_asker.setdefault(asker, OrderedDict())
        ids[session_id] = None
        ids.move_to_end(session_id)
        self._by_asker.move_to_end(asker)
        while len(ids) > self.per_asker:
            ids.popitem(last=False)
        while len(self._by_asker) > self.askers:
            self._by_asker.popitem(last=False)

    def ended(self, asker: bytes, session_id: bytes) -> None:
        ids = self._by_asker.get(asker)
        if ids is not None:
            ids.pop(session_id, None)
            if not ids:
                del self._by_asker[asker]

    def gone(self, asker: bytes) -> list[bytes]:
        """Forget `asker`: the ids of its sessions still open, oldest first."""
        return list(self._by_asker.pop(asker, ()))
