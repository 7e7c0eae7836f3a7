"""`cadencia spectate`: watch a hive's tensor flow without hosting, the camera on the active stage."""

from __future__ import annotations

import argparse
import asyncio
import json

NAME = "spectate"
HELP = "watch a hive's tensor flow without hosting; the camera follows the active stage"
DESCRIPTION = (
    "Join a hive as a spectator: no shards, no prompt box; the camera tracks the district "
    "running the stage in flight. --hive ws://127.0.0.1:PORT joins a running hive (e.g. "
    "`cadencia hive up`) through that node with a throwaway identity and shows its nodes, "
    "placed by their measured RTTs and lit by their health, refreshed every few seconds; "
    "it subscribes to every node's live event feed, so other people's asks pulse between "
    "districts (events carry node ids, opaque session ids, layers, timings and roots: never "
    "a prompt). "
    "--hive local watches this process's embedded hive answer --prompt (what `cadencia demo` runs)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.game.runner import add_view_arguments

    parser.add_argument("--hive", required=True, metavar="URL",
                        help="ws://127.0.0.1:PORT of a running hive, or 'local' for the embedded one")
    from cadencia.commands._prompt_flags import MAX_NEW_TOKENS
    from hive_core.mesh.runner import number, text

    parser.add_argument("--prompt", default="Name three colours of the rainbow.",
                        type=text("the prompt"),
                        help="with --hive local: the prompt its hive answers while you watch")
    parser.add_argument("--max-new-tokens", type=number(int, 1, MAX_NEW_TOKENS), default=24,
                        metavar="N", help="answer length cap")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")
    from hive_core.model.modes import add_weights_argument

    add_weights_argument(parser, "the embedded hive of --hive local")
    add_view_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cadencia.game.runner import check_hive_url, early_fork_server, say, view_config
    from world.view.frame import ViewError

    cfg = view_config(args)
    if args.hive != "local":
        check_hive_url(args.hive)
    if args.max_new_tokens < 1:
        raise ViewError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    # The local hive's workers fork from a server importing torch beside this process.
    forks = early_fork_server(args.model) if args.hive == "local" else None
    return asyncio.run(_spectate(args, cfg, say, forks))


async def _spectate(args: argparse.Namespace, cfg, say, forks=None) -> int:
    from cadencia.game.runner import run_view
    from cadencia.game.session import HiveSession, game_source
    from cadencia.game.spectator import MIN_LEG_S, LiveSpectator, pulses_on_screen
    from world.view.app import WorldApp

    live = args.hive != "local"
    source = game_source(player="spectator", **({"slow_motion": 1.0, "min_leg_s": MIN_LEG_S} if live else {}))
    app = WorldApp(cfg, source, mode="spectate")
    session = spectator = None
    if args.hive == "local":
        session = HiveSession(source, model=args.model, say=say, host=False, weights=args.weights,
                              forks=forks)
        app.gate = session.gate  # the local hive computes between frames
        ready = session.ready

        async def work() -> None:
            await session.ask(args.prompt, args.max_new_tokens)
    else:
        spectator = LiveSpectator(source, args.hive, say=say)
        ready = spectator.ready

        async def work() -> None:
            await spectator.run()

    try:
        report = await run_view(app, args, work=work, until_work_done=args.frames is None and session is not None,
                                ready=ready)
        in_flight = pulses_on_screen(app) if app.frames else []
        hud = app.frame.hud  # what the spectator read on screen at the end
    finally:
        app.destroy()
        if session is not None:
            await session.close()
        if spectator is not None:
            await spectator.close()
    if args.json:
        feed = spectator.feed if spectator else None
        print(json.dumps({"mode": report.mode, "frames": report.frames, "screenshot": report.screenshot,
                          "answers": [r.text for r in session.results] if session else [],
                          "polls": spectator.watcher.polls if spectator else 0,
                          "feeds": len(feed.subscribed) if feed else 0, "events": feed.events if feed else 0,
                          "rejected_events": feed.rejected if feed else 0, "pulses_in_flight": in_flight,
                          "tokens_per_s": round(hud.tokens_per_s, 3), "verified_steps": hud.verified_steps,
                          "slashed": hud.slashed, "asker": hud.asker}))
    elif report.screenshot:
        say(f"screenshot saved to {report.screenshot}")
    return 0
