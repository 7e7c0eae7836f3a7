"""Who may write what: checks an edit's effect on a scratch copy before the live doc sees it.

Rules (the author is the key that signed the edit):
- buildings, plots, roads, districts: an entry may be created, changed or removed only
  by its owner, and only ever owned by the author (no handing things to others); a
  district is keyed by its node's id and written only by that node;
- players: each player writes only their own entry, with their own public key;
- ledger (receipts, spends): append-only; an entry must verify, a spend must be the
  author's own, a receipt must be signed by the author or pay the author;
- actions (players' choices): append-only, the author's own, paid by a spend in the same
  doc where they cost credits (see `actions.check_action`);
- no other root may be written.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pycrdt import Doc, Map, Subscription, get_state

from hive_core.economy import EconomyError, Spend, WorkReceipt

from .actions import check_action
from .edit import SignedEdit, client_id_of
from .errors import EditError, SchemaError
from .lib0 import decode_state_vector
from .schema import (
    ACTIONS,
    BUILDINGS,
    DISTRICTS,
    LEDGER_ROOTS,
    OWNED_ROOTS,
    PLAYERS,
    PLOTS,
    RECEIPTS,
    ROADS,
    ROOTS,
    SPENDS,
    Building,
    District,
    Player,
    Plot,
    Road,
)

log = logging.getLogger(__name__)

_VIEWS: dict[str, Any] = {BUILDINGS: Building, PLOTS: Plot, ROADS: Road, DISTRICTS: District}


def spend_key(spend: Spend) -> str:
    """The ledger key of a spend: one account cannot record the same spend id twice."""
    return f"{spend.account_id.hex()}:{spend.spend_id_hex}"


def check_entry(root: str, key: str, before: Any, after: Any, edit: SignedEdit,
                roots: dict[str, Any] | None = None) -> None:
    """Raise EditError unless `edit`'s author may turn `before` into `after` at root/key.

    `roots`: the doc's roots with the edit applied, for the rules that look across entries
    (an action and the spend paying it); without them such entries are refused."""
    author = edit.author_id
    if root == ACTIONS:
        check_action(key, before, after, author, roots)
        return
    if root == DISTRICTS and key != author:
        raise EditError(f"district {key[:12]} can only be written by that node")
    if root in OWNED_ROOTS:
        old_owner = before.get("owner") if isinstance(before, dict) else None
        if before is not None and old_owner != author:
            raise EditError(f"{root} {clip(key)} belongs to {str(old_owner)[:12]}, "
                            f"not to the author {author[:12]}")
        if after is not None:
            try:
                view = _VIEWS[root].from_entry(key, after)
            except SchemaError as exc:
                raise EditError(f"invalid entry: {_short(exc)}") from None
            if view.owner != author:
                raise EditError(f"{root} {clip(key)} would be owned by someone else than its author")
        return
    if root == PLAYERS:
        if key != author:
            raise EditError(f"player entry {key[:12]} written by {author[:12]}")
        if after is None:
            raise EditError("a player entry cannot be removed")
        try:
            player = Player.from_entry(key, after)
        except SchemaError as exc:
            raise EditError(f"invalid entry: {_short(exc)}") from None
        if player.public_key != edit.author.hex():
            raise EditError("player entry names another public key")
        if before is not None and not set(before.get("clients", [])) <= set(player.clients):
            raise EditError("adopted client ids cannot be released")
        return
    if root in LEDGER_ROOTS:
        if before is not None:
            raise EditError(f"ledger entry {key[:16]} cannot be changed or removed")
        if not isinstance(after, str):
            raise EditError(f"ledger entry {key[:16]} must be a hex string")
        try:
            raw = bytes.fromhex(after)
        except ValueError:
            raise EditError(f"ledger entry {key[:16]} is not hex") from None
        try:
            _check_ledger(root, key, raw, edit)
        except EconomyError as exc:
            raise EditError(f"ledger entry {key[:16]}: {exc}") from None
        return
    raise EditError(f"unknown root {clip(root)}")


def _check_ledger(root: str, key: str, raw: bytes, edit: SignedEdit) -> None:
    author = bytes.fromhex(edit.author_id)
    if root == SPENDS:
        spend = Spend.parse(raw)
        spend.verify()
        if key != spend_key(spend):
            raise EditError(f"spend recorded under the wrong key {key[:16]}")
        if spend.account_id != author:
            raise EditError("a spend can only be recorded by the account that pays")
        return
    assert root == RECEIPTS
    receipt = WorkReceipt.parse(raw)
    receipt.verify()
    if key != receipt.receipt_id:
        raise EditError(f"receipt recorded under the wrong key {key[:16]}")
    if author not in (receipt.client_id, receipt.worker_id):
        raise EditError("a receipt can only be recorded by its client or its worker")


def advanced_clients(before: dict[int, int], after: dict[int, int], update: bytes,
                     own: int) -> set[int]:
    """Clients other than `own` whose clock the update moved; EditError if any of its
    content is left pending (it depends on items this replica lacks)."""
    for c, clock in decode_state_vector(get_state(update)).items():
        if after.get(c, 0) < clock:
            raise EditError(f"update depends on content this replica lacks (client {c})")
    return {c for c, clock in after.items() if c != own and clock != before.get(c, 0)}


def check_adoption(players: dict[str, Any], author_id: str, own: int, carried: set[int]) -> None:
    """Items of foreign Yjs clients may ride in an edit only if its author adopted them.

    A client id that is a player's own, or that another player adopted, cannot be
    adopted: nobody may write (or squat the clock of) someone else's client.
    """
    mine = players.get(author_id) or {}
    adopted = set(mine.get("clients", []) if isinstance(mine, dict) else [])
    if not carried <= adopted:
        raise EditError(f"update carries items of clients {sorted(carried - adopted)} "
                        "that its author has not adopted")
    if not adopted:
        return
    if own in adopted:
        raise EditError("a player cannot adopt its own client id")
    for pid, entry in players.items():
        if pid == author_id or not isinstance(entry, dict):
            continue
        theirs = set(entry.get("clients", []))
        key = entry.get("public_key")
        if isinstance(key, str) and len(key) == 64:
            theirs.add(client_id_of(bytes.fromhex(key)))
        if adopted & theirs:
            raise EditError(f"client ids {sorted(adopted & theirs)} belong to player {pid[:12]}")


class Gate:
    """A scratch replica of the live doc: edits are applied here first, then checked."""

    def __init__(self, live: Doc) -> None:
        self._live = live
        self._touched: set[tuple[str, str]] = set()
        self._subs: list[tuple[Map, Subscription]] = []
        self._live_roots = {name: live.get(name, type=Map) for name in ROOTS}
        self._shadow_roots: dict[str, Map] = {}
        self._shadow = self._copy()

    def _copy(self) -> Doc:
        for root, sub in self._subs:
            root.unobserve(sub)
        shadow: Doc = Doc()
        shadow.apply_update(self._live.get_update())
        self._subs = []
        self._shadow_roots = {name: shadow.get(name, type=Map) for name in ROOTS}
        for name, root in self._shadow_roots.items():
            self._subs.append((root, root.observe_deep(self._on_events(name))))
        return shadow

    def _on_events(self, name: str) -> Any:
        def record(events: list[Any]) -> None:
            for ev in events:
                path = list(ev.path)
                if path:
                    self._touched.add((name, str(path[0])))
                else:
                    for key in ev.keys:
                        self._touched.add((name, str(key)))
        return record

    def reset(self) -> None:
        """Resync the scratch copy from the live doc (after a rejected edit tainted it)."""
        self._shadow = self._copy()

    def follow(self, update: bytes) -> None:
        """Apply a change the live doc already took without a check (a local edit)."""
        self._shadow.apply_update(update)
        self._touched = set()

    def check(self, edit: SignedEdit, live_sv: dict[int, int]) -> dict[int, int]:
        """Apply `edit` to the scratch copy and raise EditError if the live doc must not take it.

        On success the scratch copy holds the edit, as the live doc will once the caller
        applies it, and the clocks it advances are returned; on failure the caller must
        `reset()`.
        """
        self._touched = set()
        apply_foreign(self._shadow, edit.update, "undecodable update")
        try:
            return self._check(edit, live_sv)
        except EditError:
            raise
        except Exception as exc:  # noqa: BLE001 - an entry that trips a check is refused
            raise EditError(f"edit could not be checked: {type(exc).__name__}: "
                            f"{_short(exc)}") from None

    def _check(self, edit: SignedEdit, live_sv: dict[int, int]) -> dict[int, int]:
        sv = decode_state_vector(self._shadow.get_state())
        client = edit.client_id
        if sv.get(client, 0) != edit.end:
            raise EditError(f"update does not bring the author's clock to {edit.end} "
                            f"(content missing, pending or mislabelled)")
        carried = advanced_clients(live_sv, sv, edit.update, own=client)
        extra = set(self._shadow.keys()) - set(ROOTS)
        if extra:
            raise EditError(f"update writes unknown roots {clip(sorted(extra))}")
        adopting = bool(carried)
        with self._live.transaction(), self._shadow.transaction():
            for root, key in sorted(self._touched):
                before = _entry(self._live_roots[root], key)
                after = _entry(self._shadow_roots[root], key)
                if before != after:
                    check_entry(root, key, before, after, edit, self._shadow_roots)
                    if root == PLAYERS and (before or {}).get("clients") != after.get("clients"):
                        adopting = True
            if adopting:  # reading every player is costly: only when adoption is at stake
                players = self._shadow_roots[PLAYERS].to_py() or {}
                check_adoption(players, edit.author_id, client, carried)
        return {c: sv[c] for c in (client, *carried)}


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def clip(value: object, limit: int = 60) -> str:
    """`value` for an error message, cut short: a hostile name may be megabytes long."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def apply_foreign(doc: Doc, update: bytes, what: str = "update refused") -> None:
    """Apply a Yjs update that came from a peer or a file; EditError on whatever pycrdt raises.

    pycrdt raises ValueError on undecodable bytes, RuntimeError on an inconsistent update
    ("block parent ... must be deleted or shared ref type"), and a panic of the Rust library
    comes out as pyo3's PanicException, which is a BaseException. After any of them the doc
    must be thrown away or rebuilt (`Gate.reset`).
    """
    try:
        doc.apply_update(update)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises, the update is refused
        raise EditError(f"{what}: {type(exc).__name__}: {_short(exc)}") from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise  # cancellation, KeyboardInterrupt, SystemExit: not about the update
        raise EditError(f"{what}: the CRDT library failed on it: {_short(exc)}") from None


def _entry(root: Map, key: str) -> Any:
    value = root.get(key)
    # The JSON text is much faster to get than to_py(); numbers may come back as ints.
    return json.loads(str(value)) if isinstance(value, Map) else value
