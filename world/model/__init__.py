"""The city as a CRDT doc: schema, commands, signed edits, permissions, persistence, sync."""

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
from .schema import BUILDING_KINDS, DISTRICT_ROLES, Building, District, Player, Plot, Road
from .store import Store

__all__ = [
    "BUILDING_KINDS",
    "DISTRICT_ROLES",
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
    "UnknownEntryError",
    "WorldError",
    "client_id_of",
    "player_id_of",
]
