"""The real city (`world.model.City`) as the editor and the scene see it: plots on a grid.

The city stores free positions (world units) and headings in degrees; the view snaps
them to cells of `GRID` units and quarter turns. Checks the city leaves to its
clients (a cell already taken, a cell off the plot) are made here, before any edit.
"""

from __future__ import annotations

import math

from world.model import City

from .frame import BuildingView, EditRefused, PlotView

GRID = 1.0  # cell size in world units (1 unit = 1 ms on the hive map)
DEFAULT_KIND = "house"
# What a building costs, milli-credits, paid from the credits hosting earned (a 24-token answer
# pays a node serving half of SmolLM2 about 500 mc).
PRICES = {"park": 100, "plaza": 100, "house": 200, "workshop": 300, "antenna": 300,
          "market": 400, "tower": 500, "datacenter": 800}


class CityView:
    """Implements `EditableCity` over one player's replica of the city doc."""

    def __init__(self, city: City, prices: dict[str, int] | None = None) -> None:
        """`prices`: milli-credits per building kind (default `PRICES`; {} builds for free)."""
        self.city = city
        self.prices = PRICES if prices is None else prices
        self.player = city.player_id
        self.version = 0
        self._cache: tuple[int, tuple[PlotView, ...], tuple[BuildingView, ...]] | None = None
        city.on_change(self._bump)

    def _bump(self) -> None:
        self.version += 1

    def plots(self) -> tuple[PlotView, ...]:
        return self._snapshot()[1]

    def buildings(self) -> tuple[BuildingView, ...]:
        return self._snapshot()[2]

    def _snapshot(self) -> tuple[int, tuple[PlotView, ...], tuple[BuildingView, ...]]:
        if self._cache is None or self._cache[0] != self.version:
            version = self.version
            raw_plots = self.city.plots()
            plots = tuple(
                PlotView(p.id, p.owner, p.x, p.y, max(1, int(p.width // GRID)), max(1, int(p.depth // GRID)), GRID)
                for p in sorted(raw_plots.values(), key=lambda p: p.id)
            )
            by_id = {p.plot_id: p for p in plots}
            out = []
            for b in sorted(self.city.buildings().values(), key=lambda b: b.id):
                plot = by_id.get(b.plot)
                if plot is None:
                    continue  # free-standing buildings are not on the editor's grid
                i = math.floor((b.position[0] - plot.x) / plot.cell)
                j = math.floor((b.position[1] - plot.y) / plot.cell)
                out.append(BuildingView(b.id, b.plot, i, j, round(b.rotation / 90.0) % 4, b.kind,
                                        0.6 + 0.5 * b.level))
            self._cache = (version, plots, tuple(out))
        return self._cache

    # -- commands -------------------------------------------------------------------------

    def place(self, player: str, plot_id: str, i: int, j: int, rotation: int, kind: str) -> str:
        plot = self._check_cell(player, plot_id, i, j)
        price = self.prices.get(kind, 0)
        if price:
            balance = self.city.balance_mc()
            if price > balance:
                raise EditRefused(f"a {kind} costs {price} mc and you have {balance} mc: "
                                  "host a stage in `cadencia play` to earn more")
        x, y = plot.x + (i + 0.5) * plot.cell, plot.y + (j + 0.5) * plot.cell
        return self.city.place_building(kind, (x, y, 0.0), rotation=90.0 * (rotation % 4), plot=plot_id,
                                        cost_mc=price)

    def move(self, player: str, building_id: str, i: int, j: int) -> None:
        b = self._own(player, building_id)
        plot = self._check_cell(player, b.plot_id, i, j, ignore=building_id)
        self.city.move(building_id, (plot.x + (i + 0.5) * plot.cell, plot.y + (j + 0.5) * plot.cell, 0.0))

    def rotate(self, player: str, building_id: str, rotation: int) -> None:
        self._own(player, building_id)
        self.city.rotate(building_id, 90.0 * (rotation % 4))

    def remove(self, player: str, building_id: str) -> None:
        self._own(player, building_id)
        self.city.remove(building_id)

    def undo(self, player: str) -> bool:
        self._me(player)
        return self.city.undo()

    def redo(self, player: str) -> bool:
        self._me(player)
        return self.city.redo()

    # -- checks -----------------------------------------------------------------------------

    def _me(self, player: str) -> None:
        if player != self.player:
            raise EditRefused("this replica edits only as its own player")

    def _check_cell(self, player: str, plot_id: str, i: int, j: int, ignore: str = "") -> PlotView:
        self._me(player)
        plot = next((p for p in self.plots() if p.plot_id == plot_id), None)
        if plot is None:
            raise EditRefused(f"no plot {plot_id[:8]}")
        if plot.owner != player:
            raise EditRefused(f"plot {plot_id[:8]} belongs to player {plot.owner[:8]}: build on yours")
        if not (0 <= i < plot.width and 0 <= j < plot.depth):
            raise EditRefused(f"cell ({i}, {j}) is off plot {plot_id[:8]}")
        for b in self.buildings():
            if b.building_id != ignore and b.plot_id == plot_id and (b.i, b.j) == (i, j):
                raise EditRefused(f"cell ({i}, {j}) is taken by {b.kind} {b.building_id[:8]}")
        return plot

    def _own(self, player: str, building_id: str) -> BuildingView:
        self._me(player)
        b = next((b for b in self.buildings() if b.building_id == building_id), None)
        if b is None:
            raise EditRefused(f"no building {building_id[:8]}")
        owner = next((p.owner for p in self.plots() if p.plot_id == b.plot_id), "")
        if owner != player:
            raise EditRefused(f"building {building_id[:8]} stands on player {owner[:8]}'s plot")
        return b
