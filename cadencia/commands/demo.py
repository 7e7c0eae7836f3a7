"""`cadencia demo`: an embedded hive of 4 nodes answers a prompt while the world renders it."""

from __future__ import annotations

import argparse
import asyncio
import json

NAME = "demo"
HELP = "watch an embedded 4-node hive answer a prompt in the 3D world"
DESCRIPTION = (
    "Start a hive inside this process (hive_core.exec: 4 shard servers holding 2 stages of the "
    "model on 2 replicas each, plus a referee; authenticated links over real aiortc data "
    "channels on loopback, or in-memory links with an emulated latency with --links memory; "
    "one replica cheats unless --honest), ask it a prompt, and render the "
    "world while it answers: pulses along roads, Merkle towers of replica answers, the "
    "cheater's district falling, credits raising buildings. On a screen if there is one, "
    "else offscreen to the PNG it names."
)
DEFAULT_PNG = "cadencia-demo.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.commands._prompt_flags import MAX_NEW_TOKENS
    from cadencia.game.runner import add_view_arguments
    from hive_core.mesh.runner import number, text

    parser.add_argument("prompt", nargs="?", default="What is the capital of France?",
                        type=text("the prompt", empty=True), help="what to ask")
    parser.add_argument("--max-new-tokens", type=number(int, 1, MAX_NEW_TOKENS), default=24,
                        metavar="N", help="answer length cap")
    parser.add_argument("--kv", choices=("fp32", "int4"), default="fp32", help="KV cache of the shards")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")
    from hive_core.model.modes import add_weights_argument

    add_weights_argument(parser, "the embedded hive's servers and asker")
    parser.add_argument("--honest", action="store_true", help="no cheating replica")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip verification (signed Merkle roots, replica comparison, "
                             "audits): answers from a lying node are then taken as they come")
    parser.add_argument("--links", choices=("rtc", "memory"), default="rtc",
                        help="hive links: aiortc data channels on loopback (default) or in-memory")
    add_view_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cadencia.game.runner import early_fork_server, say, view_config
    from world.view.config import has_display
    from world.view.frame import ViewError

    if not args.prompt.strip():
        raise ViewError("the prompt is empty")
    if args.max_new_tokens < 1:
        raise ViewError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not has_display() or args.offscreen:
        args.offscreen = True
        args.screenshot = args.screenshot or DEFAULT_PNG
        if args.frames is None:
            args.frames = 1_000_000  # until the answer is in (the run stops when work is done)
    cfg = view_config(args)
    forks = early_fork_server(args.model)  # imports torch beside this process, for the workers
    return asyncio.run(_demo(args, cfg, say, forks))


async def _demo(args: argparse.Namespace, cfg, say, forks=None) -> int:
    from cadencia.game.runner import run_view
    from cadencia.game.session import HiveSession, game_source
    from world.view.app import WorldApp

    source = game_source(player="asker")
    session = HiveSession(source, model=args.model, kv=args.kv, faulty=not args.honest, say=say,
                          transport=args.links, weights=args.weights, verify=not args.no_verify,
                          forks=forks)
    app = WorldApp(cfg, source, mode="play", gate=session.gate)

    async def work() -> None:
        await session.ask(args.prompt, args.max_new_tokens)

    try:
        report = await run_view(app, args, work=work, until_work_done=True, linger_frames=60)
    finally:
        app.destroy()
        await session.close()
    result = session.results[-1] if session.results else None
    if args.json:
        print(json.dumps({
            "answer": result.text if result else None,
            "tokens_per_s": round(result.tokens_per_s, 3) if result else None,
            "verified": result.verified if result else None,
            "slashed": list(result.slashed) if result else [],
            "weights": args.weights,
            "verify": not args.no_verify,
            "frames": report.frames,
            "screenshot": report.screenshot,
        }))
    else:
        if result:
            print(result.text.strip())
        if report.screenshot:
            say(f"the world, as the answer came in: {report.screenshot}")
    return 0
