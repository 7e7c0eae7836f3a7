"""Many short strings kept in one buffer: the vocabulary's texts and bytes, by token id."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import accumulate


class PackedBytes:
    """Many short byte strings in one buffer, indexed by position: a fraction of the memory
    of a list of bytes objects (a vocabulary of 49,152 tokens takes under 1 MB)."""

    def __init__(self, items: Iterable[bytes]) -> None:
        parts = list(items)
        self._offsets = array("Q", accumulate(map(len, parts), initial=0))
        self._blob = b"".join(parts)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> bytes:
        n = len(self._offsets) - 1
        i = index + n if index < 0 else index
        if not 0 <= i < n:
            raise IndexError(f"token {index} is outside a vocabulary of {n}")
        return self._blob[self._offsets[i]:self._offsets[i + 1]]


class TokenTexts:
    """The vocabulary's token strings, by id, kept packed as UTF-8."""

    def __init__(self, items: Iterable[str]) -> None:
        self._packed = PackedBytes(t.encode("utf-8") for t in items)

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, index: int) -> str:
        return self._packed[index].decode("utf-8")
