"""`cadencia edit`: the city editor on your own plot (place, move, rotate, delete, undo, redo)."""

from __future__ import annotations

import argparse
import asyncio
import json

NAME = "edit"
HELP = "edit your plot of the city: place, move, rotate, delete buildings, undo/redo"
DESCRIPTION = (
    "Click an empty cell of your plot to build, click a building to select it, then: arrows "
    "move it (snapped to the grid), r turns it, Delete removes it, z undoes, y redoes, Escape "
    "deselects. Edits on another player's plot are refused with a message. The city is the "
    "CRDT doc kept in your data dir. --script runs input without a mouse, e.g. "
    "'click 2 3; key r; key arrow_right; click theirs 1 1; key z'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.game.runner import add_view_arguments
    from hive_core.mesh.runner import text

    parser.add_argument("--data-dir", default=None, metavar="DIR", help="where the city replica is stored")
    parser.add_argument("--kind", default="house", type=text("--kind", max_chars=64),
                        help="what to build (house, tower, workshop, ...)")
    parser.add_argument("--neighbour", action="store_true",
                        help="add a second local player with a plot beside yours (to see refusals)")
    parser.add_argument("--script", default="", metavar="STEPS",
                        type=text("the script", max_chars=100_000, empty=True),
                        help="';'-separated input: 'click [mine|theirs] I J' or 'key NAME'")
    add_view_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cadencia.game.runner import say, view_config
    from world.model import BUILDING_KINDS
    from world.view.frame import ViewError
    from world.view.script import parse_script

    cfg = view_config(args)
    if args.kind not in BUILDING_KINDS:
        raise ViewError(f"--kind must be one of {', '.join(sorted(BUILDING_KINDS))}, "
                        f"got {args.kind[:64]!r}")
    steps = parse_script(args.script)
    return asyncio.run(_edit(args, cfg, steps, say))


async def _edit(args: argparse.Namespace, cfg, steps, say) -> int:
    from cadencia.game.runner import run_view
    from cadencia.game.session import Balance, city_view, game_source, neighbour_city, open_city
    from world.view.app import WorldApp
    from world.view.editor import Editor
    from world.view.script import play_script

    city = open_city(args.data_dir)
    if args.neighbour and not any(p.owner != city.player_id for p in city.plots().values()):
        neighbour_city(city)
    view = city_view(city)
    editor = Editor(view, view.player, kind=args.kind)
    source = game_source(player=view.player[:8])
    source.balance = Balance(city)  # what there is to build with
    app = WorldApp(cfg, source, mode="edit", editor=editor)

    async def work() -> None:
        await play_script(app, steps)
        await asyncio.Event().wait()

    try:
        report = await run_view(app, args, work=work if steps else None)
        counts = {"buildings": len(view.buildings()), "plots": len(view.plots())}
    finally:
        app.destroy()
        city.close()
    if args.json:
        print(json.dumps({"mode": report.mode, "frames": report.frames, "screenshot": report.screenshot,
                          "message": editor.message, "refused": editor.refused, **counts}))
    else:
        if editor.message:
            say(editor.message)
        if report.screenshot:
            say(f"screenshot saved to {report.screenshot}")
    return 0
