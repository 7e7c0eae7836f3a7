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
    "--serve (matrices held as --weights says; askers compare replicas of one mode only), and keep the shared city (stored in --data-dir) in sync with the hive, until "
    "Ctrl-C. The node key lives in --data-dir."
)


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-world", action="store_true",
                        help="do not open or sync the city stored in the data dir")
    from hive_core.mesh.runner import number

    parser.add_argument("--world-interval", type=number(float, 0.05, 3600, "s"), default=1.0,
                        metavar="S",
                        help="state-vector round period of the city sync (default 1)")


class WorldSync:
    """Hooks for `serve`: open the City stored in the data dir, sync it over the node's mesh.

    The node's player is the node's own key, so its district is its own to write.
    """

    def __init__(self, where: Path, role: str, interval_s: float = 1.0) -> None:
        if not 0.05 <= interval_s <= 3600:
            raise ValueError("--world-interval must be between 0.05 and 3600 seconds")
        self.where = where
        self.role = role if role in ("alpha", "beta", "sentinel") else "full"  # district roles
        self.interval_s = interval_s
        self.city: Any = None
        self.sync: Any = None

    async def attach(self, hive: Any) -> None:
        from world.model import City
        from world.model.mesh import MeshSync

        self.city = City.open(self.where, hive.node.identity)
        district = self.city.districts().get(self.city.player_id)
        if district is None or district.role != self.role:
            self.city.claim_district(role=self.role)
        self.sync = MeshSync(hive.node, self.city, interval_s=self.interval_s)
        self.sync.start()

    async def detach(self, hive: Any) -> None:
        if self.sync is not None:
            await self.sync.stop()
        if self.city is not None:
            self.city.close()


def world_hooks(args: argparse.Namespace, where: Path, role: str) -> tuple[Any, Any]:
    """(attach, detach) hooks for `serve`; (None, None) with --no-world."""
    if args.no_world:
        return None, None
    world = WorldSync(where, role, args.world_interval)
    return world.attach, world.detach


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hive_core.mesh.runner import add_mesh_arguments

    parser.add_argument("--join", action="append", required=True, metavar="URL",
                        help="ws://HOST:PORT of a sentinel or listening node (repeatable)")
    parser.add_argument("--listen", default=None, metavar="HOST:PORT",
                        help="also accept joiners here (port 0: any free port), so the hive "
                             "keeps an entry when the sentinel stops")
    add_mesh_arguments(parser)
    add_world_arguments(parser)
    from hive_core.exec.serve import add_serving_arguments  # --model, --weights, --fault

    add_serving_arguments(parser)
    from cadencia.commands.serve import add_http_argument

    add_http_argument(parser)


def http_hooks(args: argparse.Namespace, attach: Any, detach: Any) -> tuple[Any, Any]:
    """`attach`/`detach` extended to serve the API at --http through this node's own mesh
    node (it routes on the first request, once the node has joined)."""
    if args.http is None:
        return attach, detach
    from cadencia.commands.serve import announce, open_server

    held: list[Any] = []

    async def attach_http(hive: Any) -> None:
        if attach is not None:
            await attach(hive)
        server = await open_server(args, listen=args.http, hive=hive, url=args.join[0],
                                   warm=False)
        held.append(server)
        announce(server, as_json=False)

    async def detach_http(hive: Any) -> None:
        for server in held:
            await server.close()
        if detach is not None:
            await detach(hive)

    return attach_http, detach_http


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
    if args.http is not None:
        from hive_core.mesh.wschannel import parse_listen

        parse_listen(args.http)
    identity, where = load_identity(args.data_dir)
    attach, detach = http_hooks(args, *world_hooks(args, where, args.role))
    # Peers' entry points saved by the last run come after --join: a fallback when it is gone.
    config = replace(config, join=tuple(dict.fromkeys([*args.join, *load_entries(where)])),
                     spans=tuple(replace(s, weights=args.weights) for s in config.spans))
    setup_logging(args.verbose)
    hive = HiveNode(identity, config)
    from hive_core.exec.serve import attach_shard_server  # answers stage requests

    attach_shard_server(hive.node, args)
    from hive_core.exec.relay import serve_relay  # carries askers' tunnels (ask --relay)

    serve_relay(hive.node, hive=hive)
    asyncio.run(serve(hive, as_json=args.json, what="node", data_dir=where,
                      parent_pid=args.parent_pid, attach=attach, detach=detach))
    return 0
