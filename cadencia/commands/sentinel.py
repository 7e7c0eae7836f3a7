"""`cadencia sentinel`: a bootstrap node that relays WebRTC signaling and computes like any node."""

from __future__ import annotations

import argparse

NAME = "sentinel"
HELP = "run a bootstrap node: joiners reach the hive through it"
DESCRIPTION = (
    "Listen for joining nodes on a WebSocket (--listen HOST:PORT), relay their WebRTC "
    "offers and answers to mesh peers, answer DHT requests and status queries, keep the "
    "shared city in sync, and carry compute like any node (--serve layers of --model). Once "
    "nodes are in the mesh they signal through each other, so the hive keeps working when "
    "the sentinel stops."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cadencia.commands.node import add_world_arguments
    from hive_core.mesh.runner import add_mesh_arguments

    parser.add_argument("--listen", default="127.0.0.1:7700", metavar="HOST:PORT",
                        help="WebSocket address for joiners (default 127.0.0.1:7700)")
    parser.add_argument("--join", action="append", default=[], metavar="URL",
                        help="another sentinel or node to join (repeatable); none: a new hive")
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
    attach, detach = world_hooks(args, where, "sentinel")
    setup_logging(args.verbose)
    hive = HiveNode(identity, config)
    if args.serve or args.model or args.fault:  # compute like any node; else stay light
        from hive_core.exec.serve import attach_shard_server

        attach_shard_server(hive.node, args)
    asyncio.run(serve(hive, as_json=args.json, what="sentinel", parent_pid=args.parent_pid,
                      attach=attach, detach=detach))
    return 0
