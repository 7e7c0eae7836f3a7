"""The city: a pycrdt Doc with typed accessors, commands, per-player undo and signed edits.

Every command runs in one transaction with this player's origin, then becomes one
`SignedEdit` that is stored (if the city has a store) before the command returns and is
handed to listeners (sync providers). Remote edits come in through `receive`, which
checks them on a scratch copy first (see `authority`).
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pycrdt import Doc, Map, UndoManager, merge_updates

from hive_core.base.identity import Identity
from hive_core.economy import Ledger, Spend, WorkReceipt, check_claim

from . import ingest
from .actions import choose as choose_action
from .authority import Gate, spend_key
from .edit import SignedEdit, client_id_of, player_id_of
from .errors import NotOwnerError, SchemaError, UnknownEntryError, WorldError
from .lib0 import decode_state_vector
from .log import EditLog
from .schema import (
    ACTIONS,
    BUILDING_KINDS,
    BUILDINGS,
    DISTRICTS,
    PLAYERS,
    PLOTS,
    RECEIPTS,
    ROADS,
    ROOTS,
    SPENDS,
    Action,
    Building,
    District,
    Player,
    Plot,
    Road,
)
from .store import Store

log = logging.getLogger(__name__)
REMOTE = "remote"  # origin of transactions that apply checked remote edits
MAX_EARLY = 4096  # edits held while waiting for earlier ones of the same author
COMPACT_EVERY = 256  # own edits stored between two compactions of the store

V = TypeVar("V", Building, Plot, Road, District, Player, Action)
EditListener = Callable[[SignedEdit], None]


class Outcome(enum.Enum):
    """What `City.receive` did with an edit."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # already held
    EARLY = "early"  # an earlier edit of the same author is missing: held back
    REJECTED = "rejected"  # malformed, forged or not permitted: live doc untouched


class City:
    """One player's replica of the shared city."""

    def __init__(self, identity: Identity, *, store: Store | None = None) -> None:
        self.identity = identity
        self.player_id = player_id_of(identity.public_key)
        self.client_id = client_id_of(identity.public_key)
        self.doc: Doc = Doc(client_id=self.client_id)
        self._roots = {name: self.doc.get(name, type=Map) for name in ROOTS}
        self._origin = f"player:{self.player_id}"
        self._meta_origin = f"meta:{self.player_id}"
        self._undo = UndoManager(scopes=[self._roots[n] for n in (BUILDINGS, PLOTS, ROADS)],
                                 capture_timeout_millis=0)
        self._undo.include_origin(self._origin)
        self._buf: list[bytes] | None = None
        self.doc.observe(self._on_transaction)
        self.log = EditLog()
        self._early: dict[int, dict[int, SignedEdit]] = {}
        self._edit_listeners: list[EditListener] = []
        self._change_listeners: list[Callable[[], None]] = []
        self._store = store
        self._own_since_compact = 0
        self.rejected = 0  # remote edits refused since start (forged, unauthorised, malformed)
        self._sv: dict[int, int] = {}  # the doc's state vector, kept as edits are applied
        if store is not None:
            self._load(store.load())
        self._gate = Gate(self.doc)

    @classmethod
    def open(cls, data_dir: Path, identity: Identity | None = None) -> City:
        """The city persisted in `data_dir` (created if absent), as the node's player."""
        identity = identity or Identity.load_or_create(Path(data_dir))
        return cls(identity, store=Store.in_dir(Path(data_dir)))

    def _load(self, edits: list[SignedEdit]) -> None:
        if not edits:
            return
        for edit in edits:
            self.log.add(edit)
        with self.doc.transaction(origin=REMOTE):
            self.doc.apply_update(merge_updates(*(e.update for e in edits)))
        self._sv = decode_state_vector(self.doc.get_state())

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    # ---- remote edits, imports, compaction (see ingest) ------------------------------
    def receive(self, edit: SignedEdit | bytes) -> Outcome:
        """Check a remote edit on the scratch copy; apply and store it only if permitted."""
        return ingest.receive(self, edit)

    def edits_since(self, state_vector: dict[int, int]) -> list[SignedEdit]:
        """The held edits a peer with `state_vector` lacks (the sync step 2 answer)."""
        return list(self.log.since(state_vector))

    def import_update(self, update: bytes) -> int:
        """Merge a Yjs update as this player's own edits; raises EditError if not allowed."""
        return ingest.import_update(self, update)

    def export_update(self) -> bytes:
        """The whole doc as one Yjs update (what `Y.applyUpdate` takes)."""
        return self.doc.get_update()

    def compact(self) -> int:
        """Merge own edits in the log and the store; returns the stored edit count."""
        return ingest.compact(self)

    # ---- listeners -----------------------------------------------------------------
    def on_local_edit(self, callback: EditListener) -> Callable[[], None]:
        """Call `callback(edit)` after each local edit is stored; returns an unsubscriber."""
        self._edit_listeners.append(callback)
        return lambda: self._edit_listeners.remove(callback)

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback()` after any accepted change, local or remote (for the view)."""
        self._change_listeners.append(callback)
        return lambda: self._change_listeners.remove(callback)

    # ---- reading ------------------------------------------------------------------
    def _views(self, root: str, view: type[V]) -> dict[str, V]:
        out = {}
        for key, value in self._roots[root].to_py().items():
            try:
                out[key] = view.from_entry(key, value)
            except SchemaError as exc:
                log.warning("skipped invalid entry: %s", exc)
        return out

    def buildings(self) -> dict[str, Building]:
        return self._views(BUILDINGS, Building)

    def plots(self) -> dict[str, Plot]:
        return self._views(PLOTS, Plot)

    def roads(self) -> dict[str, Road]:
        return self._views(ROADS, Road)

    def districts(self) -> dict[str, District]:
        return self._views(DISTRICTS, District)

    def players(self) -> dict[str, Player]:
        return self._views(PLAYERS, Player)

    def actions(self) -> dict[str, Action]:
        """Every player's choices (hosting, stakes, paid asks, achievements)."""
        return self._views(ACTIONS, Action)

    def building(self, building_id: str) -> Building:
        raw = self._roots[BUILDINGS].get(building_id)
        if not isinstance(raw, Map):
            raise UnknownEntryError(f"no building {building_id!r}")
        return Building.from_entry(building_id, raw.to_py())

    def ledger(self) -> Ledger:
        """The credit ledger derived from the doc's verified receipts and spends."""
        receipts = [bytes.fromhex(v) for v in self._roots[RECEIPTS].to_py().values()]
        spends = [bytes.fromhex(v) for v in self._roots[SPENDS].to_py().values()]
        return Ledger.from_entries(receipts, spends)

    def balance_mc(self, player_id: str | None = None) -> int:
        return self.ledger().balance_mc(bytes.fromhex(player_id or self.player_id))

    def to_json(self) -> dict[str, Any]:
        """The doc's JSON view (what Yjs `toJSON()` gives for each root map)."""
        return {name: self._roots[name].to_py() for name in ROOTS}

    def state_vector(self) -> dict[int, int]:
        """Client id -> clock: how much of each author's edits this replica holds."""
        return dict(self._sv)

    def counts(self) -> dict[str, int]:
        return {name: len(self._roots[name]) for name in ROOTS}

    # ---- local edits --------------------------------------------------------------
    def _on_transaction(self, event: Any) -> None:
        if self._buf is not None:
            self._buf.append(event.update)

    @contextmanager
    def _edit(self) -> Iterator[None]:
        """Collect this player's transactions into one signed, stored edit."""
        if self._buf is not None:
            raise WorldError("edits cannot nest")
        start = self._sv.get(self.client_id, 0)
        self._buf = []
        try:
            yield
        finally:
            # Whatever reached the doc is signed and stored, even if the command failed
            # half-way: an unsigned change would leave a gap in our chain for good.
            if self._buf:
                with self.doc.transaction(origin=self._meta_origin):
                    self._bump()
            bufs, self._buf = self._buf, None
            if bufs:
                self._sv = decode_state_vector(self.doc.get_state())  # own + adopted clocks
                end = self._sv[self.client_id]
                update = bufs[0] if len(bufs) == 1 else merge_updates(*bufs)
                self._commit(SignedEdit.create(self.identity, start, end, update))

    def _bump(self) -> None:
        """Count the edit in our player entry: every edit then advances our clock."""
        players = self._roots[PLAYERS]
        me = players.get(self.player_id)
        if not isinstance(me, Map):
            players[self.player_id] = Map({"name": "", "public_key": self.identity.public_key.hex(),
                                           "edits": 1})
        else:
            me["edits"] = int(me.get("edits", 0)) + 1

    def _commit(self, edit: SignedEdit) -> None:
        covered = self.log.add(edit)
        if self._store is not None:
            self._store.append(edit, covered)
        self._gate.follow(edit.update)
        for cb in list(self._edit_listeners):
            _notify(cb, edit)
        self._changed()
        self._own_since_compact += 1
        if self._store is not None and self._own_since_compact >= COMPACT_EVERY:
            self.compact()

    def _changed(self) -> None:
        for cb in list(self._change_listeners):
            _notify(cb)

    @contextmanager
    def _txn(self) -> Iterator[None]:
        with self._edit(), self.doc.transaction(origin=self._origin):
            yield

    def _owned(self, root: str, entry_id: str) -> Map:
        raw = self._roots[root].get(entry_id)
        if not isinstance(raw, Map):
            raise UnknownEntryError(f"no {root[:-1]} {entry_id!r}")
        if raw.get("owner") != self.player_id:
            raise NotOwnerError(f"{root[:-1]} {entry_id} belongs to {str(raw.get('owner'))[:12]}")
        return raw

    def join(self, name: str) -> None:
        """Write (or rename) this player's entry: name and public key."""
        Player.from_entry(self.player_id, {"name": name, "edits": 0,
                                           "public_key": self.identity.public_key.hex()})
        with self._txn():
            me = self._roots[PLAYERS].get(self.player_id)
            if isinstance(me, Map):
                me["name"] = name
            else:
                self._roots[PLAYERS][self.player_id] = Map(
                    {"name": name, "public_key": self.identity.public_key.hex(), "edits": 0})

    def claim_district(self, node_id: str | None = None, role: str = "full",
                       health: float = 1.0) -> str:
        """Create or update this node's district (keyed by its id, which is the player's).

        Only a node writes its own district, so two players can never race for one key.
        """
        node_id = node_id or self.player_id
        if node_id != self.player_id:
            raise NotOwnerError(f"district {node_id[:12]} can only be written by that node")
        District.from_entry(node_id, {"owner": self.player_id, "role": role, "health": health})
        current = self._roots[DISTRICTS].get(node_id)
        with self._txn():
            if isinstance(current, Map):
                current["role"], current["health"] = role, float(health)
            else:
                self._roots[DISTRICTS][node_id] = Map(
                    {"owner": self.player_id, "role": role, "health": float(health)})
        return node_id

    def add_plot(self, district: str, x: float, y: float, width: float, depth: float) -> str:
        plot = Plot(os.urandom(8).hex(), district, self.player_id, x, y, width, depth)
        Plot.from_entry(plot.id, plot.fields())
        with self._txn():
            self._roots[PLOTS][plot.id] = Map(plot.fields())
        return plot.id

    def place_building(self, kind: str, position: tuple[float, float, float], *,
                       rotation: float = 0.0, plot: str = "", cost_mc: int = 0) -> str:
        """Raise a building; with `cost_mc` > 0 it is paid by a signed spend in the ledger."""
        if kind not in BUILDING_KINDS:
            raise SchemaError(f"unknown building kind {kind!r}; one of {sorted(BUILDING_KINDS)}")
        if plot:
            self._owned(PLOTS, plot)
        building_id = os.urandom(8).hex()
        spend = self._spend(cost_mc, f"building:{building_id}") if cost_mc else None
        b = Building(building_id, kind, tuple(float(v) for v in position),  # type: ignore[arg-type]
                     float(rotation) % 360.0, 1, self.player_id, plot,
                     spend.spend_id_hex if spend else "")
        Building.from_entry(b.id, b.fields())
        with self._txn():
            self._roots[BUILDINGS][b.id] = Map(b.fields())
            if spend is not None:
                self._roots[SPENDS][spend_key(spend)] = bytes(spend).hex()
        return building_id

    def move(self, building_id: str, position: tuple[float, float, float]) -> None:
        entry = self._owned(BUILDINGS, building_id)
        x, y, z = (float(v) for v in position)
        Building.from_entry(building_id, {**(entry.to_py() or {}), "x": x, "y": y, "z": z})
        with self._txn():
            entry["x"], entry["y"], entry["z"] = x, y, z

    def rotate(self, building_id: str, degrees: float) -> None:
        entry = self._owned(BUILDINGS, building_id)
        with self._txn():
            entry["rotation"] = float(degrees) % 360.0

    def upgrade(self, building_id: str, *, cost_mc: int = 0) -> int:
        """Raise the building one level (paid if `cost_mc` > 0); returns the new level."""
        entry = self._owned(BUILDINGS, building_id)
        level = int(entry.get("level", 1)) + 1
        Building.from_entry(building_id, {**(entry.to_py() or {}), "level": level})
        spend = self._spend(cost_mc, f"upgrade:{building_id}:{level}") if cost_mc else None
        with self._txn():
            entry["level"] = level
            if spend is not None:
                self._roots[SPENDS][spend_key(spend)] = bytes(spend).hex()
        return level

    def remove(self, building_id: str) -> None:
        self._owned(BUILDINGS, building_id)
        with self._txn():
            del self._roots[BUILDINGS][building_id]

    def add_road(self, points: list[tuple[float, float]]) -> str:
        road = Road(os.urandom(8).hex(), self.player_id,
                    tuple((float(x), float(y)) for x, y in points))
        Road.from_entry(road.id, road.fields())
        with self._txn():
            self._roots[ROADS][road.id] = Map(road.fields())
        return road.id

    def remove_road(self, road_id: str) -> None:
        self._owned(ROADS, road_id)
        with self._txn():
            del self._roots[ROADS][road_id]

    def choose(self, kind: str, *, cost_mc: int = 0, **fields: Any) -> Action:
        """Record one of this player's choices as one signed edit, paid by a spend written with
        it when `cost_mc` > 0 (see `actions`); a refused choice writes nothing."""
        return choose_action(self, kind, cost_mc=cost_mc, **fields)

    def record_receipt(self, receipt: WorkReceipt) -> None:
        """Add a verified work receipt (this player must be its client or its worker). It moves
        credits from its client to its worker only as the ledger settles it (`Ledger`): a
        receipt its client cannot pay, or one claiming impossible work, moves nothing; one
        claiming impossible work is refused here (ReceiptError)."""
        receipt.verify()
        check_claim(receipt)
        me = bytes.fromhex(self.player_id)
        if me not in (receipt.client_id, receipt.worker_id):
            raise NotOwnerError("only the receipt's client or worker records it")
        if receipt.receipt_id in self._roots[RECEIPTS]:
            return
        with self._txn():
            self._roots[RECEIPTS][receipt.receipt_id] = bytes(receipt).hex()

    def _spend(self, amount_mc: int, purpose: str) -> Spend:
        ledger = self.ledger()
        # Spends settle in (timestamp, id) order: a new one must sort after this player's
        # earlier ones, even within the same millisecond, or it could void one of them.
        latest = max((st.spend.timestamp_ms
                      for st in ledger.settle(bytes.fromhex(self.player_id))), default=-1)
        spend = Spend.create(self.identity, amount_mc=amount_mc, purpose=purpose,
                             timestamp_ms=max(time.time_ns() // 1_000_000, latest + 1))
        return ledger.check_spend(spend)

    # ---- undo / redo (this player's own commands only) ----------------------------
    def can_undo(self) -> bool:
        return self._undo.can_undo()

    def can_redo(self) -> bool:
        return self._undo.can_redo()

    def undo(self) -> bool:
        if not self._undo.can_undo():
            return False
        with self._edit():
            return bool(self._undo.undo())

    def redo(self) -> bool:
        if not self._undo.can_redo():
            return False
        with self._edit():
            return bool(self._undo.redo())


def _notify(callback: Callable[..., Any], *args: Any) -> None:
    """Call a listener; its failure is logged, never allowed to break the model."""
    try:
        callback(*args)
    except Exception:
        log.exception("world listener %r failed", callback)
