"""`cadencia node`: join a hive through a sentinel (or any listening node) and serve it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "node"
HELP = "join a hive and compute for it until Ctrl-C"
DESCRIPTION = (
    "Join the hive at --join ws://HOST:PORT (a sentinel, or any node started with --listen; "
    "give several to fall back in order), open WebRTC data channels to the mesh, publish "
    "this node's Health Vector, roles and reachability in the DHT, serve the layers named by "
    "--serve, and keep the shared city (stored in --data-dir) in sync with the hive, until "
    "Ctrl-C. The node key lives in --data-dir."
)


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-world", action="store_true",
                        help="do not open or sync the city stored in the data dir")
    parser.add_argument("--world-interval", type=float, default=1.0, metavar="S",
                        help="state-vector round period of the city sync (default 1)")


def world_hooks(args: argparse.Namespace, where: Path, role: str) -> tuple[Any, Any]:
    """(started, stopping) hooks for `serve`: open the City in `where`, run MeshSync on the node.

    The node's player is the node's own key, so its district is its own to write.
    """
    if args.no_world:
        return None, None
    if not 0.05 <= args.world_interval <= 3600:
        raise ValueError("--world-interval must be between 0.05 and 3600 seconds")
    role = role if role in ("alpha", "beta", "sentinel") else "full"  # district roles
    state: dict[str, Any] = {}

    async def started(hive: Any) -> None:
        from world.model import City
        from world.model.mesh import MeshSync

        city = City.open(where, hive.node.identity)
        district = city.districts().get(city.player_id)
        if district is None or district.role != role:
            city.claim_district(role=role)
        sync = MeshSync(hive.node, city, interval_s=args.world_interval)
        sync.start()
        state.update(city=city, sync=sync)

    async def stopping(hive: Any) -> None:
        if "sync" in state:
            await state["sync"].stop()
        if "city" in state:
            state["city"].close()

    return started, stopping


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hive_core.mesh.runner import add_mesh_arguments

    parser.add_argument("--join", action="append", required=True, metavar="URL",
                        help="ws://HOST:PORT of a sentinel or listening node (repeatable)")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="also accept joiners here (port 0: any free port), so the hive "
                             "keeps an entry when the sentinel stops")
    add_mesh_arguments(parser)
    add_world_arguments(parser)
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
    started, stopping = world_hooks(args, where, args.role)
    # Peers' entry points saved by the last run come after --join: a fallback when it is gone.
    config = replace(config, join=tuple(dict.fromkeys([*args.join, *load_entries(where)])))
    setup_logging(args.verbose)
    hive = HiveNode(identity, config)
    from hive_core.exec.serve import attach_shard_server  # answers stage requests (issue 5)

    attach_shard_server(hive.node, args)
    asyncio.run(serve(hive, as_json=args.json, what="node", data_dir=where,
                      parent_pid=args.parent_pid, started=started, stopping=stopping))
    return 0
