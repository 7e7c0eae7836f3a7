"""`cadencia node`: join a hive through a sentinel (or any listening node) and serve it."""

from __future__ import annotations

import argparse

NAME = "node"
HELP = "join a hive and compute for it until Ctrl-C"
DESCRIPTION = (
    "Join the hive at --join ws://HOST:PORT (a sentinel, or any node started with --listen; "
    "give several to fall back in order), open WebRTC data channels to the mesh, publish "
    "this node's Health Vector, roles and reachability in the DHT, and serve until Ctrl-C. "
    "The node key lives in --data-dir."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hive_core.mesh.runner import add_mesh_arguments

    parser.add_argument("--join", action="append", required=True, metavar="URL",
                        help="ws://HOST:PORT of a sentinel or listening node (repeatable)")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="also accept joiners here (port 0: any free port), so the hive "
                             "keeps an entry when the sentinel stops")
    add_mesh_arguments(parser)
    from hive_core.exec.serve import add_serving_arguments  # --model, --fault (issue 5)

    add_serving_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio
    from dataclasses import replace

    from hive_core.mesh.hivenode import HiveNode
    from hive_core.mesh.runner import (
        load_entries,
        load_identity,
        node_config,
        serve,
        setup_logging,
    )

    config = node_config(args, listen=args.listen, join=args.join)  # fail before touching disk
    identity, where = load_identity(args.data_dir)
    # Peers' entry points saved by the last run come after --join: a fallback when it is gone.
    config = replace(config, join=tuple(dict.fromkeys([*args.join, *load_entries(where)])))
    setup_logging(args.verbose)
    hive = HiveNode(identity, config)
    from hive_core.exec.serve import attach_shard_server  # answers stage requests (issue 5)

    attach_shard_server(hive.node, args)
    asyncio.run(serve(hive, as_json=args.json, what="node", data_dir=where))
    return 0
