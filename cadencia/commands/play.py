"""`cadencia play`: the Accordion World, hosting shards of the hive while you play."""

from __future__ import annotations

import argparse
import asyncio
import json

NAME = "play"
HELP = "play the Accordion World while hosting shards of the hive"
DESCRIPTION = (
    "Open the 3D city of the hive: districts are nodes placed by measured latency, tensors "
    "pulse along roads as stages run, the HUD shows sharding, routing, KV cache and consensus. "
    "Type a prompt in the box to ask the hive. Without --hive an embedded hive runs in this "
    "process (hive_core.exec: 4 shard servers on 2 stages x 2 replicas and a referee; your "
    "device hosts the first, under your node key). With --hive ws://127.0.0.1:PORT this process "
    "joins that hive as a mesh node under your node key and the city shows its nodes by measured "
    "RTT; prompts are then asked of that hive's shard servers (found by their signed layer-span "
    "records), and this process serves layers for the hive's askers too: the --serve spans, else "
    "the whole model (--no-serve: none). Receipts the askers sign for your node's work are "
    "recorded in your city's ledger: credits you spend on your choices and buildings. "
    "Your choices move the hive (type them in the prompt box, or give --choose): /host A-B serves "
    "layers A..B-1 on your node if they fit the memory free now, /stake MC offers your node as a "
    "referee, /priority MC PROMPT puts a paid prompt first; each is a signed action every player "
    "sees in the city, paid from your credits; refusals show on screen with the reason. "
    "Keys: a/d turn, w/s tilt, q/e zoom, i/j/k/l pan."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.commands._prompt_flags import MAX_NEW_TOKENS
    from cadencia.game.runner import add_view_arguments
    from hive_core.mesh.runner import number, span_text, text

    parser.add_argument("--hive", default=None, metavar="URL", help="join a running hive at ws://127.0.0.1:PORT")
    parser.add_argument("--prompt", default=None, type=text("the prompt"),
                        help="ask the hive this prompt as soon as it is ready")
    parser.add_argument("--max-new-tokens", type=number(int, 1, MAX_NEW_TOKENS), default=32,
                        metavar="N", help="answer length cap (default 32)")
    parser.add_argument("--kv", choices=("fp32", "int4"), default="fp32", help="KV cache of the shards")
    parser.add_argument("--model", default=None, metavar="PATH", help="a llama-architecture GGUF file")
    from hive_core.model.modes import add_weights_argument

    add_weights_argument(parser, "the shards you host and your own embedding and head")
    parser.add_argument("--threads", type=number(int, 1, 1024), default=None, metavar="N",
                        help="torch threads for the shards (default 1)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="where your node key and city replica are kept")
    parser.add_argument("--serve", action="append", default=[], metavar="MODEL:START-END/N",
                        type=span_text,
                        help="with --hive: serve these layers, e.g. smollm2-135m:0-15/30 "
                             "(default: the whole --model)")
    parser.add_argument("--no-serve", action="store_true", help="with --hive: join without serving layers")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip verification (signed Merkle roots, replica comparison, "
                             "audits): answers from a lying node are then taken as they come")
    parser.add_argument("--tflops", type=number(float, 0, 1e5), default=None, metavar="X",
                        help="with --hive: report X TFLOPS instead of benchmarking the device")
    parser.add_argument("--choose", default="", metavar="CHOICES",
                        help="';'-separated choices made once the hive is up (after --prompt's "
                             "answer), e.g. 'host 15-30; stake 200; priority 100 Why is the sky blue?'")
    add_view_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cadencia.game.runner import check_hive_url, early_fork_server, say, view_config
    from world.view.frame import ViewError

    cfg = view_config(args)
    if args.max_new_tokens < 1:
        raise ViewError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.hive:
        check_hive_url(args.hive)
        return asyncio.run(_play_live(args, cfg, say))
    forks = early_fork_server(args.model)  # imports torch beside this process, for the workers
    return asyncio.run(_play(args, cfg, say, forks))


async def _play_live(args: argparse.Namespace, cfg, say) -> int:
    """Join the hive at --hive as a node (your key), and show it from the inside."""
    from cadencia.game.choices import Activity, Choices
    from cadencia.game.credits import CreditKeeper
    from cadencia.game.hive_link import COMPUTE_NICE, COMPUTE_PROCESS
    from cadencia.game.hosting import LiveHosting
    from cadencia.game.live_ask import LiveAsker
    from cadencia.game.mesh_watch import MeshWatcher
    from cadencia.game.runner import run_view
    from cadencia.game.session import Balance, city_view, game_source, open_city
    from hive_core.exec.frame_gate import FrameGate
    from hive_core.exec.serve import attach_shard_server
    from hive_core.mesh.hivenode import HiveNode
    from hive_core.mesh.runner import load_identity, node_config
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.quant import read_footprint
    from world.view.app import WorldApp

    serve = [] if args.no_serve else (args.serve or [_whole_model_span(args.model)])
    mesh = argparse.Namespace(role="auto", ice_host=None, loopback_candidate=False, connect_timeout=15.0,
                              ping_interval=2.0, dead_after=8.0, record_ttl=120.0, serve=serve,
                              tflops=args.tflops)
    config = node_config(mesh, listen=None, join=[args.hive])
    identity, _where = load_identity(args.data_dir)
    city = open_city(args.data_dir)
    source = game_source(player=city.player_id[:8])
    source.balance = Balance(city)
    node = HiveNode(identity, config)
    footprint = read_footprint(resolve_model_path(args.model))
    choices = Choices(city, source, footprint, kv=args.kv)
    choices.node = identity.node_id
    Activity(city, source)  # every player's choices, as the city doc shows them
    keeper = CreditKeeper(city, source, say=say, on_paid=choices.achieve)
    gate = FrameGate()  # held while a frame renders: the hosted shard and the asker compute between frames
    server = None
    if serve:  # host shards: this node runs those layers for the hive's askers, and is paid for it
        server = attach_shard_server(node.node, argparse.Namespace(model=args.model, fault=None, serve=serve,
                                                                   tflops=args.tflops, weights=args.weights),
                                     compute_nice=COMPUTE_NICE, compute_process=COMPUTE_PROCESS,
                                     compute_gate=gate)
        if server is not None:
            keeper.attach(server)
    source.me = identity.node_id
    choices.hosting = LiveHosting(node, server, footprint.path.rsplit("/", 1)[-1], footprint.n_layers)
    watcher = MeshWatcher(source, args.hive, say=say)
    asker = LiveAsker(node, source, model=args.model, say=say, weights=args.weights, gate=gate,
                      verify=not args.no_verify)
    app = WorldApp(cfg, source, mode="play", city=city_view(city),
                   on_prompt=_prompt_box(choices, lambda text: asker.submit(text, args.max_new_tokens)),
                   gate=gate)
    outcomes: list[str] = []

    async def work() -> None:
        say(f"joining {args.hive} as node {identity.node_id.hex()[:12]} ...")
        await node.start()
        watching = asyncio.create_task(watcher.run())
        await watcher.ready.wait()
        if args.prompt:
            await asker.ask(args.prompt, args.max_new_tokens)
            choices.check_achievements()
        await _choose(choices, args.choose, outcomes, say)
        await watching

    try:
        report = await run_view(app, args, work=work, ready=watcher.ready)
    finally:
        app.destroy()
        if server is not None:
            await server.close()  # its compute process goes with it
        await node.close()
        gate.close()
        earnings = _earnings(keeper)
        actions = _actions(city)
        city.close()
    if args.json:
        print(json.dumps({"mode": report.mode, "frames": report.frames, "screenshot": report.screenshot,
                          "node": identity.node_id.hex(), "polls": watcher.polls, "serving": serve,
                          "weights": args.weights, "choices": outcomes, "actions": actions,
                          "answers": [r.text for r in asker.results], **earnings}))
    elif report.screenshot:
        say(f"screenshot saved to {report.screenshot}")
    return 0


async def _play(args: argparse.Namespace, cfg, say, forks=None) -> int:
    from cadencia.game.choices import Activity, Choices
    from cadencia.game.credits import CreditKeeper
    from cadencia.game.hosting import EmbeddedHosting
    from cadencia.game.runner import run_view
    from cadencia.game.session import Balance, HiveSession, city_view, game_source, open_city
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.quant import read_footprint
    from world.view.app import WorldApp

    city = open_city(args.data_dir)
    source = game_source(player=city.player_id[:8])
    source.balance = Balance(city)
    choices = Choices(city, source, read_footprint(resolve_model_path(args.model)), kv=args.kv)
    Activity(city, source)  # every player's choices, as the city doc shows them
    # Your device hosts server 0 under your key: receipts the asker signs for it pay you.
    keeper = CreditKeeper(city, source, say=say, on_paid=choices.achieve)
    session = HiveSession(source, model=args.model, kv=args.kv, threads=args.threads, say=say,
                          identity=city.identity, on_host=keeper.attach, weights=args.weights,
                          on_answer=choices.achieve, verify=not args.no_verify, forks=forks)
    choices.prioritise = lambda prompt: session.submit(prompt, args.max_new_tokens, paid=True)
    app = WorldApp(cfg, source, mode="play", city=city_view(city),
                   on_prompt=_prompt_box(choices, lambda text: session.submit(text, args.max_new_tokens)),
                   gate=session.gate)
    outcomes: list[str] = []

    async def work() -> None:
        hive = await session.load()
        hosted = hive._hive().servers[0]
        choices.hosting, choices.node = EmbeddedHosting(hive._hive(), hosted, source), hosted.node.node_id
        if args.prompt:
            paid = len(keeper.receipts)
            await session.ask(args.prompt, args.max_new_tokens)
            await _receipt_after(keeper, paid)  # choices spend what that answer earned
        await _choose(choices, args.choose, outcomes, say)
        await asyncio.Event().wait()  # keep hosting until the view stops

    try:
        report = await run_view(app, args, work=work, ready=session.ready)
    finally:
        app.destroy()
        await session.close()
        earnings = _earnings(keeper)
        actions = _actions(city)
        city.close()
    if args.json:
        print(json.dumps({"mode": report.mode, "frames": report.frames, "screenshot": report.screenshot,
                          "weights": args.weights, "answers": [r.text for r in session.results],
                          "tokens_per_s": [round(r.tokens_per_s, 3) for r in session.results],
                          "choices": outcomes, "actions": actions, **earnings}))
    elif report.screenshot:
        say(f"screenshot saved to {report.screenshot}")
    return 0


def _prompt_box(choices, ask):  # -> Callable[[str], None]
    """Text from the prompt box: a '/choice' goes to the choices, anything else is asked."""
    def on_text(text: str) -> None:
        if text.startswith("/"):
            asyncio.get_running_loop().create_task(choices.command(text))
        else:
            ask(text)
    return on_text


async def _receipt_after(keeper, count: int, timeout_s: float = 10.0) -> None:
    """Wait (a little) for the asker's receipt of the answer just given to reach our server:
    it is signed and sent when the session ends, right after the answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(keeper.receipts) <= count and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def _choose(choices, script: str, outcomes: list[str], say) -> None:
    """Make the --choose choices in turn; each outcome (or refusal) is said and kept."""
    for item in filter(None, (c.strip() for c in script.split(";"))):
        outcome = await choices.command("/" + item.lstrip("/"))
        outcomes.append(outcome)
        say(outcome)


def _actions(city) -> list[dict]:  # city: world.model.City
    mine = [a for a in city.actions().values() if a.owner == city.player_id]
    return [{"kind": a.kind, **a.fields()} for a in sorted(mine, key=lambda a: (a.at_ms, a.id))]


def _whole_model_span(model: str | None) -> str:
    """``NAME:0-N/N``: every layer of the model (what `play --hive` serves by default)."""
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path

    path = resolve_model_path(model)
    n = GGUFModelFile(path).config.n_layers
    return f"{path.name[:128]}:0-{n}/{n}"


def _earnings(keeper) -> dict:  # keeper: cadencia.game.credits.CreditKeeper
    return {"receipts": len(keeper.receipts), "earned_mc": keeper.earned_mc, "raised": keeper.raised,
            "balance_mc": keeper.city.balance_mc()}
