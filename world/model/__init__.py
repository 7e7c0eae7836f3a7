"""The city as a CRDT doc: schema, commands, signed edits, permissions, persistence, sync.

Reading (what the 3D view needs), all typed, frozen views re-read on each call:
    city = City.open(data_dir)              # or City(identity) in memory
    city.buildings() -> {id: Building}      # kind, position (x, y, z), rotation, level, owner
    city.plots(), city.roads(), city.districts(), city.players()
    city.ledger(), city.balance_mc(player_id)
    city.on_change(callback)                # after any accepted local or remote change
Commands (each one transaction + one signed, stored edit; NotOwnerError/SchemaError on
bad input, nothing written):
    join, claim_district, add_plot, place_building, move, rotate, upgrade, remove,
    add_road, remove_road, record_receipt, undo, redo   (undo/redo: own commands only)
    choose(kind, cost_mc=..., ...)          # a player's choice, shown to all (see actions)
Sync: `SyncProvider(city, channel)` on a "crdt" data channel; `city.receive(edit)` for
edits from elsewhere; `import_update` / `export_update` for plain Yjs.
"""

from .city import City, Outcome
from .edit import SignedEdit, client_id_of, player_id_of
from .errors import (
    EditError,
    NotOwnerError,
    ProtocolError,
    SchemaError,
    StoreError,
    UnknownEntryError,
    WorldError,
)
from .provider import SyncProvider
from .schema import (
    ACHIEVEMENTS,
    ACTION_KINDS,
    BUILDING_KINDS,
    DISTRICT_ROLES,
    Action,
    Building,
    District,
    Player,
    Plot,
    Road,
)
from .store import Store

__all__ = [
    "ACHIEVEMENTS",
    "ACTION_KINDS",
    "BUILDING_KINDS",
    "DISTRICT_ROLES",
    "Action",
    "Building",
    "City",
    "District",
    "EditError",
    "NotOwnerError",
    "Outcome",
    "Player",
    "Plot",
    "ProtocolError",
    "Road",
    "SchemaError",
    "SignedEdit",
    "Store",
    "StoreError",
    "SyncProvider",
    "UnknownEntryError",
    "WorldError",
    "client_id_of",
    "player_id_of",
]
