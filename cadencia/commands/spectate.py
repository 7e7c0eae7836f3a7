"""`cadencia spectate`: watch a hive's tensor flow without hosting, the camera on the active stage."""

from __future__ import annotations

import argparse
import asyncio
import json

NAME = "spectate"
HELP = "watch a hive's tensor flow without hosting; the camera follows the active stage"
DESCRIPTION = (
    "Join a hive as a spectator: no shards, no prompt box; the camera tracks the district "
    "running the stage in flight. --hive local watches the embedded 4-node hive of this "
    "process answer --prompt (what `cadencia demo` runs)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from world.view.runner import add_view_arguments

    parser.add_argument("--hive", required=True, metavar="URL",
                        help="ws://127.0.0.1:PORT of a running hive, or 'local' for the embedded one")
    parser.add_argument("--prompt", default="Name three colours of the rainbow.",
                        help="with --hive local: the prompt its hive answers while you watch")
    parser.add_argument("--max-new-tokens", type=int, default=24, metavar="N", help="answer length cap")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")
    add_view_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from world.view.frame import ViewError
    from world.view.runner import check_hive_url, say, view_config

    cfg = view_config(args)
    if args.hive != "local":
        check_hive_url(args.hive)
        raise ViewError("spectating a running hive needs its event feed from hive_core.exec, which this "
                        "build's view does not read yet; try --hive local")
    return asyncio.run(_spectate(args, cfg, say))


async def _spectate(args: argparse.Namespace, cfg, say) -> int:
    from world.view.app import WorldApp
    from world.view.runner import run_view
    from world.view.session import HiveSession, game_source

    source = game_source(player="spectator")
    session = HiveSession(source, model=args.model, say=say)
    app = WorldApp(cfg, source, mode="spectate")

    async def work() -> None:
        await session.ask(args.prompt, args.max_new_tokens)

    try:
        report = await run_view(app, args, work=work, until_work_done=args.frames is None,
                                ready=session.ready)
    finally:
        app.destroy()
        await session.close()
    if args.json:
        print(json.dumps({"mode": report.mode, "frames": report.frames, "screenshot": report.screenshot,
                          "answers": [r.text for r in session.results]}))
    elif report.screenshot:
        say(f"screenshot saved to {report.screenshot}")
    return 0
