"""Taking edits in: remote signed edits (checked on a scratch copy), imports, compaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, merge_updates

from .authority import advanced_clients, apply_foreign, check_adoption, check_entry, clip
from .edit import MAX_UPDATE_BYTES, SignedEdit
from .errors import EditError
from .schema import LEDGER_ROOTS, PLAYERS, ROOTS

if TYPE_CHECKING:
    from .city import City, Outcome

log = logging.getLogger(__name__)
COMPACT_GROUP_BYTES = MAX_UPDATE_BYTES // 2
IMPORT_BATCH = 200  # entries per local edit when a big import is replayed
IMPORT_WHOLE_BYTES = MAX_UPDATE_BYTES // 2  # bigger imports are replayed entry by entry


def receive(city: City, data: SignedEdit | bytes) -> Outcome:
    """Check and apply one remote edit; then any held-back edits it unblocks."""
    from .city import Outcome

    try:
        edit = data if isinstance(data, SignedEdit) else SignedEdit.parse(data)
        if edit.end <= city._sv.get(edit.client_id, 0):
            return Outcome.DUPLICATE  # held already: skip the signature check (gossip repeats)
        edit.verify()
        if edit.client_id == city.client_id and edit.author != city.identity.public_key:
            raise EditError("author's Yjs client id collides with ours")
    except EditError as exc:
        log.warning("rejected edit: %s", exc)
        city.rejected += 1
        return Outcome.REJECTED
    outcome = _receive_one(city, edit)
    if outcome is Outcome.ACCEPTED:
        early = city._early.get(edit.client_id)
        while early:
            have = city._sv.get(edit.client_id, 0)
            ready = [e for e in early.values() if e.start <= have]
            if not ready:
                break
            for e in ready:
                del early[e.start]
            for e in sorted(ready, key=lambda e: e.start):
                _receive_one(city, e)
    return outcome


def _receive_one(city: City, edit: SignedEdit) -> Outcome:
    from .city import MAX_EARLY, REMOTE, Outcome

    sv = city._sv
    have = sv.get(edit.client_id, 0)
    if edit.end <= have:
        return Outcome.DUPLICATE
    if edit.start > have:
        held = city._early.setdefault(edit.client_id, {})
        if sum(len(h) for h in city._early.values()) < MAX_EARLY:
            held[edit.start] = edit
        return Outcome.EARLY
    try:
        advanced = city._gate.check(edit, sv)
    except EditError as exc:
        log.warning("rejected edit by %s [%d, %d): %s", edit.author_id[:12], edit.start,
                    edit.end, exc)
        city._gate.reset()
        city.rejected += 1
        return Outcome.REJECTED
    try:
        with city.doc.transaction(origin=REMOTE):
            apply_foreign(city.doc, edit.update)
    except EditError as exc:  # the scratch copy took it: should not happen, but never fatal
        log.error("edit by %s [%d, %d) passed the check but not the live doc: %s",
                  edit.author_id[:12], edit.start, edit.end, exc)
        city._gate.reset()
        city.rejected += 1
        return Outcome.REJECTED
    sv.update(advanced)  # the scratch check found exactly these clocks moved
    covered = city.log.add(edit)
    if city._store is not None:
        city._store.append(edit, covered)
    city._changed()
    return Outcome.ACCEPTED


def compact(city: City) -> int:
    """Merge this player's own edits into few re-signed ones and rewrite the store.

    Others' edits are kept as their authors signed them (only an author can re-sign).
    Returns the number of stored edits afterwards.
    """
    chain = city.log.chain(city.client_id)
    groups: list[list[SignedEdit]] = []
    size = 0
    for edit in chain:
        if not groups or size + len(edit.update) > COMPACT_GROUP_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(edit)
        size += len(edit.update)
    merged = [
        g[0] if len(g) == 1 else SignedEdit.create(
            city.identity, g[0].start, g[-1].end, merge_updates(*(e.update for e in g)))
        for g in groups
    ]
    city.log.replace_chain(city.client_id, merged)
    if city._store is not None:
        city._store.rewrite(city.log)
    city._own_since_compact = 0
    return len(city.log)


@dataclass(frozen=True)
class _LocalAuthor:
    """Stands in for a SignedEdit in `check_entry` when the author is the local player."""

    author: bytes
    author_id: str


def import_update(city: City, update: bytes) -> int:
    """Merge a Yjs update as the local player's own edit, validated like a remote edit.

    The update is applied to a scratch copy; every entry it changes must be one this
    player may write, and any foreign Yjs client whose items it carries (a JavaScript
    tab, say) must not be another player's. Then the update itself is applied, with the
    foreign clients recorded as adopted by this player, and the whole signed as one edit:
    the foreign peer and every mesh peer end with the same items. An update too big for
    one edit is instead replayed entry by entry as this player's writes. Returns the
    number of entries changed.
    """
    scratch: Doc = Doc()
    scratch.apply_update(city.doc.get_update())
    apply_foreign(scratch, bytes(update), "not a Yjs update")
    try:
        return _import_checked(city, scratch, bytes(update))
    except EditError:
        raise
    except Exception as exc:  # noqa: BLE001 - an entry that trips a check is refused
        raise EditError(f"update could not be checked: {type(exc).__name__}: "
                        f"{clip(str(exc), 200)}") from None


def _import_checked(city: City, scratch: Doc, update: bytes) -> int:
    from .lib0 import decode_state_vector

    extra = set(scratch.keys()) - set(ROOTS)
    if extra:
        raise EditError(f"update writes unknown roots {clip(sorted(extra))}")
    me = _LocalAuthor(city.identity.public_key, city.player_id)
    changes: list[tuple[str, str, Any]] = []
    for root in ROOTS:
        before = city.doc.get(root, type=Map).to_py()
        after = scratch.get(root, type=Map).to_py()
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                check_entry(root, key, before.get(key), after.get(key), me)  # type: ignore[arg-type]
                changes.append((root, key, after.get(key)))
    sv_after = decode_state_vector(scratch.get_state())
    carried = advanced_clients(city._sv, sv_after, update, own=city.client_id)
    if city.client_id in {c for c, k in sv_after.items() if k != city._sv.get(c, 0)}:
        raise EditError("update carries items of this player's own client id")
    if len(update) > IMPORT_WHOLE_BYTES:
        return _replay(city, changes)
    players = scratch.get(PLAYERS, type=Map).to_py()
    mine = players.get(city.player_id) or {}
    adopted = sorted(set(mine.get("clients", [])) | carried)
    players[city.player_id] = {**mine, "clients": adopted}
    check_adoption(players, city.player_id, city.client_id, carried)
    if not carried and not changes:
        return 0
    with city._edit(), city.doc.transaction(origin=city._origin):
        city.doc.apply_update(bytes(update))
        if carried:
            _adopt(city, adopted)
    return len(changes)


def _adopt(city: City, clients: list[int]) -> None:
    players = city.doc.get(PLAYERS, type=Map)
    entry = players.get(city.player_id)
    if isinstance(entry, Map):
        entry["clients"] = clients
    else:
        players[city.player_id] = Map({"name": "", "edits": 0, "clients": clients,
                                       "public_key": city.identity.public_key.hex()})


def _replay(city: City, changes: list[tuple[str, str, Any]]) -> int:
    for i in range(0, len(changes), IMPORT_BATCH):
        with city._txn():
            for root, key, value in changes[i:i + IMPORT_BATCH]:
                _write(city.doc.get(root, type=Map), root, key, value)
    return len(changes)


def _write(root_map: Map, root: str, key: str, value: Any) -> None:
    if value is None:
        del root_map[key]
    elif root in LEDGER_ROOTS or not isinstance(value, dict):
        root_map[key] = value
    else:
        current = root_map.get(key)
        if isinstance(current, Map):
            for field in set(current.keys()) - set(value):
                del current[field]
            for field, v in value.items():
                if current.get(field) != v:
                    current[field] = v
        else:
            root_map[key] = Map(value)
