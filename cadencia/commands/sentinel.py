"""`cadencia sentinel`: a bootstrap node that relays WebRTC signaling and computes like any node."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

NAME = "sentinel"
HELP = "run a bootstrap node: joiners reach the hive through it"
DESCRIPTION = (
    "Listen for joining nodes on a WebSocket (--listen HOST:PORT), relay their WebRTC "
    "offers and answers to mesh peers, answer DHT requests and status queries, keep the "
    "shared city in sync, and carry compute like any node (--serve layers of --model). Once "
    "nodes are in the mesh they signal through each other, so the hive keeps working when "
    "the sentinel stops. It answers STUN (--stun) so nodes behind home routers learn their "
    "outside address, and with --turn runs a TURN relay (coturn, where installed) for the "
    "routers that defeat hole punching, handing each node it admits a login that expires."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.commands.node import add_world_arguments
    from hive_core.mesh.runner import add_mesh_arguments

    parser.add_argument("--listen", default="127.0.0.1:7700", metavar="HOST:PORT",
                        help="WebSocket address for joiners (default 127.0.0.1:7700)")
    parser.add_argument("--join", action="append", default=[], metavar="URL",
                        help="another sentinel or node to join (repeatable); none: a new hive")
    parser.add_argument("--stun", type=_port, default=0, metavar="PORT",
                        help="UDP port answering STUN on the listen address (default 0: any "
                             "free port; the URL handed to nodes names it; 3478 is STUN's own)")
    parser.add_argument("--no-stun", action="store_true", help="do not answer STUN")
    parser.add_argument("--turn", action="store_true",
                        help="also run a TURN relay (coturn) for nodes whose routers defeat "
                             "hole punching")
    parser.add_argument("--turn-port", type=_port, default=0, metavar="PORT",
                        help="the TURN relay's UDP port (default 0: any free port)")
    parser.add_argument("--public-host", default=None, metavar="ADDR",
                        help="the address nodes reach this machine at, for the STUN and TURN "
                             "URLs it hands out (default: the --listen host)")
    add_mesh_arguments(parser)
    add_world_arguments(parser)
    from hive_core.exec.serve import add_serving_arguments  # --model, --fault (issue 5)

    add_serving_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import replace

    from cadencia.commands.node import world_hooks
    from hive_core.mesh.hivenode import HiveNode
    from hive_core.mesh.runner import (
        load_identity,
        node_config,
        serve,
        setup_logging,
    )

    config = node_config(args, listen=args.listen, join=args.join, sentinel=True)
    config = replace(config, spans=tuple(replace(s, weights=args.weights) for s in config.spans))
    identity, where = load_identity(args.data_dir)
    attach, detach = _with_ice(args, where, *world_hooks(args, where, "sentinel"))
    setup_logging(args.verbose)
    hive = HiveNode(identity, config)
    if args.serve or args.model or args.fault:  # compute like any node; else stay light
        from hive_core.exec.serve import attach_shard_server

        attach_shard_server(hive.node, args)
    from hive_core.exec.relay import serve_relay  # carries askers' tunnels (ask --relay)

    serve_relay(hive.node, hive=hive)
    asyncio.run(serve(hive, as_json=args.json, what="sentinel", parent_pid=args.parent_pid,
                      attach=attach, detach=detach))
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text[:20]!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {port}")
    return port


def _with_ice(args: argparse.Namespace, where: Any, attach: Any, detach: Any) -> tuple[Any, Any]:
    """World hooks wrapped with the sentinel's STUN responder and TURN relay: started before
    the hive (so the first joiner is offered them), stopped after it leaves."""
    from hive_core.mesh.ice import IceOffer
    from hive_core.mesh.stun import start_stun
    from hive_core.mesh.turn import TurnError, start_turn
    from hive_core.mesh.wschannel import parse_listen

    listen_host, _ = parse_listen(args.listen)
    public = args.public_host or listen_host
    if public in ("0.0.0.0", "::", ""):
        raise ValueError("--listen binds every address: say which one nodes reach with "
                         "--public-host ADDR")
    running: list[Any] = []

    async def start(hive: Any) -> None:
        stun_url, turn = None, None
        if not args.no_stun:
            transport, _ = await start_stun(listen_host, args.stun)
            running.append(transport.close)
            stun_url = f"stun:{public}:{transport.get_extra_info('sockname')[1]}"
        if args.turn:
            try:
                turn = await start_turn(listen_host, args.turn_port, state_dir=where / "turn")
            except TurnError as exc:
                print(f"sentinel: no TURN relay: {exc}", file=sys.stderr, flush=True)
            else:
                turn.host = public  # the URL nodes are handed; coturn listens on listen_host
                running.append(turn.close)
        hive.ice_offer = IceOffer(stun_url, turn)
        if attach is not None:
            await attach(hive)

    async def stop(hive: Any) -> None:
        try:
            if detach is not None:
                await detach(hive)
        finally:
            for close in reversed(running):
                done = close()
                if asyncio.iscoroutine(done):
                    await done

    return start, stop
