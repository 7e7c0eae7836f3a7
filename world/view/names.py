"""Short, pronounceable district names made from node ids: the same id reads the same for everyone.

A node id is 20 random-looking bytes; people remember "Varo" better than "3fa2b1". The name
is three syllables picked by the id's first bytes (16 x 5 x 16 x 5 x 16 x 5: about 5 million
names), so two nodes of one city rarely share one; `unique_names` adds the id's first hex
digits where they do.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "j"]
_VOWELS = ["a", "e", "i", "o", "u"]


@functools.lru_cache(maxsize=8192)
def short_name(node_id_hex: str) -> str:
    """'Tavoki' for a hex node id (any id that is not hex is named by its own first letters)."""
    try:
        raw = bytes.fromhex(node_id_hex[:8].ljust(8, "0"))
    except ValueError:
        return (node_id_hex[:6] or "?").capitalize()
    word = ""
    for k in range(3):
        word += _ONSETS[raw[k] % len(_ONSETS)] + _VOWELS[(raw[k] >> 4) % len(_VOWELS)]
    return word.capitalize()


def unique_names(node_ids: Iterable[str]) -> dict[str, str]:
    """A name per id; ids whose names collide get their first hex digits appended."""
    ids = list(dict.fromkeys(node_ids))
    names = {n: short_name(n) for n in ids}
    groups: dict[str, list[str]] = {}
    for n, name in names.items():
        groups.setdefault(name, []).append(n)
    for name, same in groups.items():
        if len(same) > 1:  # as many hex digits as tell them apart (at least four)
            k = next((k for k in range(4, 41) if len({n[:k] for n in same}) == len(same)), 40)
            for n in same:
                names[n] = f"{name}-{n[:k]}"
    return names
