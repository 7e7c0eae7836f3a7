"""A small pycrdt city for the editor until `world.model` lands: plots, buildings, per-player undo.

Edits are one transaction each with the player as origin; each player's `UndoManager`
tracks only their own origin, so undo never reverts someone else's work. Refusals
(another's plot, an occupied cell, off the plot) raise `EditRefused` before any change.
"""

from __future__ import annotations

import itertools

from pycrdt import Doc, Map, UndoManager

from .frame import BuildingView, EditRefused, PlotView

KINDS = ("tower", "hall", "depot")


class LocalCity:
    """Implements `EditableCity` on a real pycrdt `Doc`."""

    def __init__(self, doc: Doc | None = None) -> None:
        self.doc = doc or Doc()
        self._plots = self.doc.get("plots", type=Map)
        self._buildings = self.doc.get("buildings", type=Map)
        self._undo: dict[str, UndoManager] = {}
        self._ids = itertools.count(1)
        self.version = 0  # bumped on every change, so views can skip unchanged frames
        self._cache: tuple[int, tuple[PlotView, ...], tuple[BuildingView, ...]] | None = None
        self.doc.observe(self._on_change)

    def _on_change(self, _event: object) -> None:
        self.version += 1

    def add_plot(self, plot: PlotView) -> None:
        with self.doc.transaction(origin="system"):
            self._plots[plot.plot_id] = Map({
                "owner": plot.owner, "x": plot.x, "y": plot.y,
                "width": plot.width, "depth": plot.depth, "cell": plot.cell,
            })

    def plots(self) -> tuple[PlotView, ...]:
        return self._snapshot()[1]

    def buildings(self) -> tuple[BuildingView, ...]:
        return self._snapshot()[2]

    def _snapshot(self) -> tuple[int, tuple[PlotView, ...], tuple[BuildingView, ...]]:
        if self._cache is None or self._cache[0] != self.version:
            plots = tuple(
                PlotView(pid, str(p["owner"]), float(p["x"]), float(p["y"]), int(p["width"]),
                         int(p["depth"]), float(p["cell"]))
                for pid, p in sorted(self._plots.items())
            )
            buildings = tuple(
                BuildingView(bid, str(b["plot"]), int(b["i"]), int(b["j"]), int(b["rotation"]),
                             str(b["kind"]), float(b["height"]))
                for bid, b in sorted(self._buildings.items())
            )
            self._cache = (self.version, plots, buildings)
        return self._cache

    # -- commands ---------------------------------------------------------------------

    def place(self, player: str, plot_id: str, i: int, j: int, rotation: int, kind: str) -> str:
        if kind not in KINDS:
            raise EditRefused(f"unknown building kind {kind!r}")
        self._check_cell(player, plot_id, i, j)
        self._manager(player)  # track from this player's first edit on
        bid = f"{player}-{next(self._ids)}"
        while bid in self._buildings:
            bid = f"{player}-{next(self._ids)}"
        with self.doc.transaction(origin=player):
            self._buildings[bid] = Map({"plot": plot_id, "i": i, "j": j, "rotation": rotation % 4,
                                        "kind": kind, "height": 1.0 + KINDS.index(kind)})
        return bid

    def move(self, player: str, building_id: str, i: int, j: int) -> None:
        b = self._own_building(player, building_id)
        self._check_cell(player, str(b["plot"]), i, j, ignore=building_id)
        with self.doc.transaction(origin=player):
            b["i"], b["j"] = i, j

    def rotate(self, player: str, building_id: str, rotation: int) -> None:
        b = self._own_building(player, building_id)
        with self.doc.transaction(origin=player):
            b["rotation"] = rotation % 4

    def remove(self, player: str, building_id: str) -> None:
        self._own_building(player, building_id)
        with self.doc.transaction(origin=player):
            del self._buildings[building_id]

    def undo(self, player: str) -> bool:
        return self._manager(player).undo()

    def redo(self, player: str) -> bool:
        return self._manager(player).redo()

    # -- checks -----------------------------------------------------------------------

    def _manager(self, player: str) -> UndoManager:
        if player not in self._undo:
            um = UndoManager(scopes=[self._buildings], capture_timeout_millis=0)
            um.include_origin(player)
            self._undo[player] = um
        return self._undo[player]

    def _plot(self, plot_id: str) -> Map:
        if plot_id not in self._plots:
            raise EditRefused(f"no plot {plot_id!r}")
        return self._plots[plot_id]

    def _check_cell(self, player: str, plot_id: str, i: int, j: int, ignore: str = "") -> None:
        plot = self._plot(plot_id)
        if plot["owner"] != player:
            raise EditRefused(f"plot {plot_id} belongs to {plot['owner']}: you can only build on yours")
        if not (0 <= i < int(plot["width"]) and 0 <= j < int(plot["depth"])):
            raise EditRefused(f"cell ({i}, {j}) is off plot {plot_id}")
        for bid, b in self._buildings.items():
            if bid != ignore and b["plot"] == plot_id and int(b["i"]) == i and int(b["j"]) == j:
                raise EditRefused(f"cell ({i}, {j}) is taken by {bid}")

    def _own_building(self, player: str, building_id: str) -> Map:
        if building_id not in self._buildings:
            raise EditRefused(f"no building {building_id!r}")
        b = self._buildings[building_id]
        owner = self._plot(str(b["plot"]))["owner"]
        if owner != player:
            raise EditRefused(f"{building_id} stands on {owner}'s plot: you can only edit yours")
        return b
