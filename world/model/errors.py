"""Errors of the world model; all are ValueErrors so the CLI prints them as one line."""

from __future__ import annotations


class WorldError(ValueError):
    """Base class: something about the city doc, an edit or a sync message is wrong."""


class SchemaError(WorldError):
    """An entry of the doc (building, plot, road...) has missing or ill-typed fields."""


class NotOwnerError(WorldError):
    """The player tried to change something another player owns."""


class UnknownEntryError(WorldError, KeyError):
    """No building, plot, road or district with that id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown entry"


class EditError(WorldError):
    """A signed edit is malformed, forged, or touches what its author does not own."""


class ProtocolError(WorldError):
    """A sync message from a peer is malformed (bad framing, sizes, or types)."""


class StoreError(WorldError):
    """The world's SQLite file is unreadable or holds a corrupt row."""
