"""The city schema: root map names and typed, validated views of each kind of entry.

Every entry is a nested pycrdt ``Map`` of primitive fields under a root ``Map`` keyed by
the entry id. Numbers come back from Yjs as floats, so the views normalise them. Owners
are player ids: the hex node id (BLAKE2b-160) of the player's Ed25519 public key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import SchemaError

DISTRICTS = "districts"
PLOTS = "plots"
BUILDINGS = "buildings"
ROADS = "roads"
PLAYERS = "players"
RECEIPTS = "receipts"  # ledger: work receipt id -> signed receipt, hex
SPENDS = "spends"  # ledger: "<account id>:<spend id>" -> signed spend, hex
ACTIONS = "actions"  # players' choices: action id -> signed by its owner, append-only
OWNED_ROOTS = (DISTRICTS, PLOTS, BUILDINGS, ROADS)
LEDGER_ROOTS = (RECEIPTS, SPENDS)
ROOTS = (*OWNED_ROOTS, PLAYERS, *LEDGER_ROOTS, ACTIONS)

BUILDING_KINDS = frozenset(
    {"house", "tower", "workshop", "datacenter", "park", "plaza", "antenna", "market"}
)
DISTRICT_ROLES = frozenset({"alpha", "beta", "full", "sentinel", "client"})
MAX_LEVEL = 10
MAX_COORD = 1.0e6
MAX_ROAD_POINTS = 64
MAX_NAME = 64
MAX_CLIENTS = 64  # foreign Yjs clients one player may adopt
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_PLAYER_ID = re.compile(r"^[0-9a-f]{40}$")


def _num(fields: dict[str, Any], key: str, what: str) -> float:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{what}: field {key!r} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or abs(value) > MAX_COORD:
        raise SchemaError(f"{what}: field {key!r} out of range: {value}")
    return value


def _str(fields: dict[str, Any], key: str, what: str, *, optional: bool = False) -> str:
    value = fields.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or len(value) > 256:
        raise SchemaError(f"{what}: field {key!r} must be a short string, got {value!r}")
    return value


def _int(fields: dict[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    value = _num(fields, key, what)
    if value != int(value) or not lo <= value <= hi:
        raise SchemaError(f"{what}: field {key!r} must be an integer in [{lo}, {hi}]")
    return int(value)


def _count(fields: dict[str, Any], key: str, what: str, hi: int = 2**53) -> int:
    """A whole number in [0, hi] (counts, amounts, times: not bounded like coordinates)."""
    value = fields.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not 0 <= value <= hi:
        raise SchemaError(f"{what}: field {key!r} must be a whole number in [0, {hi}], got {value!r}")
    return int(value)


def check_id(entry_id: str, what: str) -> str:
    if not isinstance(entry_id, str) or not _ID.match(entry_id):
        raise SchemaError(f"{what}: bad id {entry_id!r} (8-64 lowercase hex digits)")
    return entry_id


def check_player_id(player_id: str, what: str) -> str:
    if not isinstance(player_id, str) or not _PLAYER_ID.match(player_id):
        raise SchemaError(f"{what}: bad player id {player_id!r} (40 hex digits)")
    return player_id


def _fields(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SchemaError(f"{what}: entry must be a map, got {type(raw).__name__}")
    return raw


@dataclass(frozen=True)
class Building:
    """A building on the city map."""

    id: str
    kind: str  # one of BUILDING_KINDS
    position: tuple[float, float, float]  # world units; z is the height above ground
    rotation: float  # heading in degrees, [0, 360)
    level: int  # 1..MAX_LEVEL
    owner: str  # player id
    plot: str  # plot id or "" when free-standing
    spend: str  # hex id of the spend that paid for it, "" when free

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> Building:
        what = f"building {entry_id}"
        f = _fields(raw, what)
        kind = _str(f, "kind", what)
        if kind not in BUILDING_KINDS:
            raise SchemaError(f"{what}: unknown kind {kind!r}")
        rotation = _num(f, "rotation", what)
        if not 0.0 <= rotation < 360.0:
            raise SchemaError(f"{what}: rotation must be in [0, 360), got {rotation}")
        return cls(
            id=check_id(entry_id, what),
            kind=kind,
            position=(_num(f, "x", what), _num(f, "y", what), _num(f, "z", what)),
            rotation=rotation,
            level=_int(f, "level", what, 1, MAX_LEVEL),
            owner=check_player_id(_str(f, "owner", what), what),
            plot=_str(f, "plot", what, optional=True),
            spend=_str(f, "spend", what, optional=True),
        )

    def fields(self) -> dict[str, Any]:
        x, y, z = self.position
        return {"kind": self.kind, "x": x, "y": y, "z": z, "rotation": self.rotation,
                "level": self.level, "owner": self.owner, "plot": self.plot, "spend": self.spend}


@dataclass(frozen=True)
class Plot:
    """A rectangle of land in a district that one player may build on."""

    id: str
    district: str  # node id hex of the district
    owner: str
    x: float
    y: float
    width: float
    depth: float

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> Plot:
        what = f"plot {entry_id}"
        f = _fields(raw, what)
        width, depth = _num(f, "width", what), _num(f, "depth", what)
        if width <= 0 or depth <= 0:
            raise SchemaError(f"{what}: width and depth must be positive")
        return cls(check_id(entry_id, what), _str(f, "district", what),
                   check_player_id(_str(f, "owner", what), what),
                   _num(f, "x", what), _num(f, "y", what), width, depth)

    def fields(self) -> dict[str, Any]:
        return {"district": self.district, "owner": self.owner, "x": self.x, "y": self.y,
                "width": self.width, "depth": self.depth}


@dataclass(frozen=True)
class Road:
    """A polyline road laid by one player."""

    id: str
    owner: str
    points: tuple[tuple[float, float], ...]  # at least 2, at most MAX_ROAD_POINTS

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> Road:
        what = f"road {entry_id}"
        f = _fields(raw, what)
        pts = f.get("points")
        if not isinstance(pts, list) or not 2 <= len(pts) <= MAX_ROAD_POINTS:
            raise SchemaError(f"{what}: points must be a list of 2..{MAX_ROAD_POINTS} [x, y]")
        points = []
        for p in pts:
            if not isinstance(p, list) or len(p) != 2:
                raise SchemaError(f"{what}: each point must be [x, y]")
            points.append((_num({"v": p[0]}, "v", what), _num({"v": p[1]}, "v", what)))
        return cls(check_id(entry_id, what), check_player_id(_str(f, "owner", what), what),
                   tuple(points))

    def fields(self) -> dict[str, Any]:
        return {"owner": self.owner, "points": [list(p) for p in self.points]}


@dataclass(frozen=True)
class District:
    """The part of the city that stands for one hive node."""

    node_id: str  # hex node id: the district's key
    owner: str  # the player who runs the node
    role: str  # one of DISTRICT_ROLES
    health: float  # 0..1, from the node's Health Vector

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> District:
        what = f"district {entry_id}"
        f = _fields(raw, what)
        role = _str(f, "role", what)
        if role not in DISTRICT_ROLES:
            raise SchemaError(f"{what}: unknown role {role!r}")
        health = _num(f, "health", what)
        if not 0.0 <= health <= 1.0:
            raise SchemaError(f"{what}: health must be in [0, 1]")
        return cls(check_player_id(entry_id, what),
                   check_player_id(_str(f, "owner", what), what), role, health)

    def fields(self) -> dict[str, Any]:
        return {"owner": self.owner, "role": self.role, "health": self.health}


@dataclass(frozen=True)
class Player:
    """A player: display name and the public key that signs their edits."""

    id: str  # node id hex of public_key
    name: str
    public_key: str  # 64 hex digits
    edits: int  # counter bumped by every edit: each edit advances the author's Yjs clock
    clients: tuple[int, ...] = ()  # foreign Yjs client ids (e.g. a JS tab) whose items
    # this player imported and vouches for; first come, never released

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> Player:
        what = f"player {entry_id}"
        f = _fields(raw, what)
        name = _str(f, "name", what, optional=True)
        if len(name) > MAX_NAME:
            raise SchemaError(f"{what}: name longer than {MAX_NAME} characters")
        key = _str(f, "public_key", what)
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise SchemaError(f"{what}: public_key must be 64 hex digits")
        clients = f.get("clients", [])
        if not isinstance(clients, list) or len(clients) > MAX_CLIENTS:
            raise SchemaError(f"{what}: clients must be a list of at most {MAX_CLIENTS} ids")
        for c in clients:
            if isinstance(c, bool) or not isinstance(c, (int, float)) \
                    or not math.isfinite(c) or c != int(c) or not 0 <= c < 2**53:
                raise SchemaError(f"{what}: bad client id {c!r}")
        ids = tuple(int(c) for c in clients)
        return cls(check_player_id(entry_id, what), name, key,
                   _int(f, "edits", what, 0, 2**53), ids)


# What a player may choose (see world/model/actions.py for the rules each must follow).
ACTION_KINDS = frozenset({"host", "stake", "ask", "achievement"})
ACHIEVEMENTS = frozenset({"first-verified-token", "thousand-tokens", "liar-caught"})
PARTS = frozenset({"full", "attention", "mlp"})
MAX_LAYERS = 4096


@dataclass(frozen=True)
class Action:
    """One choice a player made, as every player sees it (all fields present, unused ones 0 or "").

    host: serve layers [start, end) of `model` as `part`, needing `mem_mb` of the `free_mb`
    the machine reported free; stake: lock `amount_mc` to referee (paid by the spend `spend`);
    ask: pay `amount_mc` for priority for the prompt asked (`spend`); achievement: `name`,
    earned by the real event `proof` names (a receipt id, or a slashed node and session).
    """

    id: str
    owner: str  # player id: who chose (and signed the edit)
    kind: str  # one of ACTION_KINDS
    at_ms: int  # when, ms since the Unix epoch
    model: str = ""
    start: int = 0
    end: int = 0
    n_layers: int = 0
    part: str = ""
    mem_mb: float = 0.0
    free_mb: float = 0.0
    amount_mc: int = 0
    spend: str = ""  # hex id of the spend that paid for it
    name: str = ""
    proof: str = ""

    @classmethod
    def from_entry(cls, entry_id: str, raw: Any) -> Action:
        what = f"action {entry_id}"
        f = _fields(raw, what)
        kind = _str(f, "kind", what)
        if kind not in ACTION_KINDS:
            raise SchemaError(f"{what}: unknown kind {kind!r}; one of {sorted(ACTION_KINDS)}")
        a = cls(check_id(entry_id, what), check_player_id(_str(f, "owner", what), what), kind,
                _count(f, "at_ms", what),
                model=_str(f, "model", what, optional=True),
                start=_count(f, "start", what, MAX_LAYERS),
                end=_count(f, "end", what, MAX_LAYERS),
                n_layers=_count(f, "n_layers", what, MAX_LAYERS),
                part=_str(f, "part", what, optional=True),
                mem_mb=_num(f, "mem_mb", what) if "mem_mb" in f else 0.0,
                free_mb=_num(f, "free_mb", what) if "free_mb" in f else 0.0,
                amount_mc=_count(f, "amount_mc", what),
                spend=_str(f, "spend", what, optional=True),
                name=_str(f, "name", what, optional=True),
                proof=_str(f, "proof", what, optional=True))
        a.check(what)
        return a

    def check(self, what: str) -> None:
        """The rules of its kind (SchemaError): a host choice must fit the memory it reported,
        a stake and a paid ask must name the spend that paid them."""
        if self.kind == "host":
            if not self.model or not 0 <= self.start < self.end <= self.n_layers:
                raise SchemaError(f"{what}: host needs a model and layers 0 <= start < end <= n_layers")
            if self.part not in PARTS:
                raise SchemaError(f"{what}: part must be one of {sorted(PARTS)}")
            if not 0 < self.mem_mb <= self.free_mb:
                raise SchemaError(f"{what}: hosting needs {self.mem_mb:.0f} MB but the machine "
                                  f"reported {self.free_mb:.0f} MB free")
        elif self.kind in ("stake", "ask"):
            if self.amount_mc <= 0 or not re.fullmatch(r"[0-9a-f]{32}", self.spend):
                raise SchemaError(f"{what}: a {self.kind} needs an amount and the spend paying it")
        elif self.kind == "achievement" and (self.name not in ACHIEVEMENTS or not self.proof):
            raise SchemaError(f"{what}: unknown achievement {self.name!r} or no proof")

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"owner": self.owner, "kind": self.kind, "at_ms": self.at_ms}
        for key in ("model", "start", "end", "n_layers", "part", "mem_mb", "free_mb", "amount_mc",
                    "spend", "name", "proof"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out

