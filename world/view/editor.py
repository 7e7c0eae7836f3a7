"""The city editor's logic: picking cells, selecting, and turning clicks and keys into city commands.

Pure (no panda3d): it takes world points from the picker and keys from the input map,
calls the `EditableCity`, and keeps the message the HUD shows. Refusals never raise out
of here: they become a visible message and a red cursor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .frame import BuildingView, EditableCity, PlotView

MOVES = {"arrow_left": (-1, 0), "arrow_right": (1, 0), "arrow_up": (0, 1), "arrow_down": (0, -1)}


@dataclass(frozen=True)
class Cell:
    """A snapped grid cell of a plot."""

    plot: PlotView
    i: int
    j: int


def cell_at(plots: tuple[PlotView, ...] | list[PlotView], x: float, y: float) -> Cell | None:
    """The plot cell under world point (x, y), snapped to the grid; None off every plot."""
    for p in plots:
        i, j = math.floor((x - p.x) / p.cell), math.floor((y - p.y) / p.cell)
        if 0 <= i < p.width and 0 <= j < p.depth:
            return Cell(p, i, j)
    return None


class Editor:
    """One player's editing session on the city."""

    def __init__(self, city: EditableCity, player: str, kind: str = "house") -> None:
        self.city = city
        self.player = player
        self.kind = kind
        self.rotation = 0  # quarter turns for the next placement
        self.selected: str | None = None
        self.hover: Cell | None = None
        self.message = ""  # last outcome; refusals start with "refused:"
        self.refused = False

    def own_plot(self) -> PlotView | None:
        return next((p for p in self.city.plots() if p.owner == self.player), None)

    def building_at(self, cell: Cell) -> BuildingView | None:
        for b in self.city.buildings():
            if b.plot_id == cell.plot.plot_id and b.i == cell.i and b.j == cell.j:
                return b
        return None

    def hover_at(self, x: float, y: float) -> Cell | None:
        self.hover = cell_at(tuple(self.city.plots()), x, y)
        return self.hover

    def hover_ok(self) -> bool:
        return self.hover is not None and self.hover.plot.owner == self.player

    def click(self, x: float, y: float) -> None:
        """Select the building under the point; on an empty cell of your plot, build there
        (the new building is selected, so arrows, r and Delete act on it next)."""
        cell = self.hover_at(x, y)
        if cell is None:
            self._refuse("refused: that is not on any plot")
            return
        here = self.building_at(cell)
        if here is not None:
            self.selected = here.building_id
            self._ok(f"selected {here.kind} {here.building_id[:8]}")
        elif cell.plot.owner != self.player:
            self._refuse(f"refused: plot {cell.plot.plot_id[:8]} belongs to player {cell.plot.owner[:8]}")
        else:
            def place() -> None:
                self.selected = self.city.place(self.player, cell.plot.plot_id, cell.i, cell.j,
                                                self.rotation, self.kind)
            self._do(place, f"placed a {self.kind} at ({cell.i}, {cell.j})")

    def key(self, name: str) -> None:
        """Keyboard: arrows move, r rotates, delete removes, z/y undo/redo, escape deselects."""
        if name in MOVES:
            self._nudge(*MOVES[name])
        elif name == "r":
            self._rotate()
        elif name in ("delete", "backspace", "x"):
            if self.selected is None:
                self._refuse("refused: select a building to delete")
            else:
                gone = self.selected
                self._do(lambda: self.city.remove(self.player, gone), f"deleted {gone}")
                if not self.refused:
                    self.selected = None
        elif name in ("z", "control-z"):
            self._ok("undone" if self.city.undo(self.player) else "nothing to undo")
        elif name in ("y", "control-y"):
            self._ok("redone" if self.city.redo(self.player) else "nothing to redo")
        elif name == "escape":
            self.selected = None
            self._ok("selection cleared")

    def _nudge(self, di: int, dj: int) -> None:
        b = self._selected_building()
        if b is None:
            self._refuse("refused: select a building to move")
            return
        self._do(lambda: self.city.move(self.player, b.building_id, b.i + di, b.j + dj),
                 f"moved {b.building_id} to ({b.i + di}, {b.j + dj})")

    def _rotate(self) -> None:
        b = self._selected_building()
        if b is None:
            self.rotation = (self.rotation + 1) % 4
            self._ok(f"next building turned {90 * self.rotation} degrees")
            return
        self._do(lambda: self.city.rotate(self.player, b.building_id, (b.rotation + 1) % 4),
                 f"turned {b.building_id}")

    def _selected_building(self) -> BuildingView | None:
        if self.selected is None:
            return None
        found = next((b for b in self.city.buildings() if b.building_id == self.selected), None)
        if found is None:
            self.selected = None  # undone or removed meanwhile
        return found

    def _do(self, action, success: str) -> None:  # action: Callable[[], None]
        try:
            action()
        except ValueError as exc:
            self._refuse(f"refused: {exc}")
        else:
            self._ok(success)

    def _ok(self, text: str) -> None:
        self.message, self.refused = text, False

    def _refuse(self, text: str) -> None:
        self.message, self.refused = text, True
