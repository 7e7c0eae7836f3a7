"""`cadencia serve`: the OpenAI-compatible HTTP API and the web page, answering with the hive."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

NAME = "serve"
HELP = "serve the OpenAI-compatible API and the web page, answering with the hive"
DESCRIPTION = (
    "Answer HTTP requests at --http HOST:PORT: POST /v1/chat/completions and /v1/completions "
    "(streamed as server-sent events or not), GET /v1/models, and at / a web page with a chat "
    "box and the live hive (districts at their measured positions, tensor pulses, verdicts). "
    "Answers come from the hive at --hive ws://HOST:PORT (joined like 'ask': tokens, "
    "embedding and head stay here), from N in-process shard servers with --hive local:N, or "
    "from this device alone with --local. At most --slots answers run at once and --queue "
    "wait; beyond that a request is refused with 429."
)
DEFAULT_HTTP = "127.0.0.1:8000"
_warming: set[Any] = set()  # first routes in progress (a task needs a reference to live)


def add_http_argument(parser: argparse.ArgumentParser) -> None:
    """``--http HOST:PORT`` for the commands that can serve the API beside their work."""
    parser.add_argument("--http", default=None, metavar="HOST:PORT",
                        help="also serve the OpenAI-compatible API and the web page here "
                             "(port 0: any free port)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--hive", metavar="URL",
                       help="ws://HOST:PORT of a sentinel or listening node, or local:N")
    where.add_argument("--local", action="store_true",
                       help="answer with the whole model on this device (no hive)")
    parser.add_argument("--http", default=DEFAULT_HTTP, metavar="HOST:PORT",
                        help=f"where to listen (default {DEFAULT_HTTP}; port 0: any free port)")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="a llama-architecture GGUF file (default: $CADENCIA_MODEL, else "
                             "the bundled SmolLM2-135M-Instruct)")
    from hive_core.model.modes import add_weights_argument

    add_weights_argument(parser, "this device (and the servers of --hive local:N)")
    parser.add_argument("--replicas", type=int, default=1, metavar="R",
                        help="nodes computing each stage (default 1; 3 outvotes one liar)")
    parser.add_argument("--cascade", action="store_true",
                        help="hidden states go node to node (see `cadencia ask --cascade`)")
    parser.add_argument("--local-layers", type=int, default=1, metavar="K",
                        help="run the first K layers here too, so no node sees raw embeddings "
                             "(default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch threads (default: physical cores)")
    parser.add_argument("--timeout", type=float, default=15.0, metavar="S",
                        help="seconds to join the hive and find its servers (default 15)")
    parser.add_argument("--slots", type=int, default=4, metavar="N",
                        help="answers generated at once (default 4)")
    parser.add_argument("--queue", type=int, default=16, metavar="N",
                        help="requests waiting for a slot before 429 (default 16)")
    parser.add_argument("--wait", type=float, default=120.0, metavar="S",
                        help="longest wait for a slot before 503 (default 120)")
    parser.add_argument("--relay", default=None, metavar="NODE_ID|auto",
                        help="reach the hive's shard servers only through this peer (or one "
                             "drawn among peers serving none of the model's layers), under a "
                             "throwaway key: the servers do not learn who asked")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line on stdout when listening")
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests and mesh events")


def check(args: argparse.Namespace) -> None:
    """Refuse nonsense flags before loading anything."""
    from hive_core.mesh.wschannel import parse_listen, parse_ws_url

    parse_listen(args.http)
    if args.hive is not None and args.hive.startswith("local:"):
        n = args.hive[6:]
        if not n.isdigit() or not 1 <= int(n) <= 64:
            raise ValueError(f"bad --hive {args.hive!r}: expected local:N with N in 1..64")
    elif args.hive is not None:
        parse_ws_url(args.hive)
    if getattr(args, "relay", None) is not None:
        from hive_core.exec.relayed import parse_relay

        if args.hive is None or args.hive.startswith("local:"):
            raise ValueError("--relay needs a live hive (--hive ws://HOST:PORT)")
        parse_relay(args.relay)
    for name, lo, hi in (("replicas", 1, 8), ("slots", 1, 256), ("queue", 0, 4096),
                         ("local_layers", 0, 1 << 16)):
        value = getattr(args, name)
        if not lo <= value <= hi:
            raise ValueError(f"--{name.replace('_', '-')} must be in {lo}..{hi}, got {value}")
    if not 0 < args.wait <= 3600 or not 0 < args.timeout <= 3600:
        raise ValueError("--wait and --timeout must be between 0 and 3600 seconds")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")


def mds_layout() -> Callable[[Sequence[str], Any], dict[str, tuple[float, ...]]]:
    """Districts placed as the game places them: MDS of the measured RTTs, each update aligned
    to the last so the map does not jump (world.layout)."""
    from world.layout import HiveMap

    hive_map = HiveMap(dim=2)

    def layout(ids: Sequence[str], rtt: Any) -> dict[str, tuple[float, ...]]:
        return {str(k): tuple(v) for k, v in hive_map.update(list(ids), rtt).as_dict().items()}

    return layout


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def open_server(args: argparse.Namespace, *, listen: str, hive: Any = None,
                      url: str | None = None, warm: bool = True) -> Any:
    """An `ApiServer` answering as `args` say: with `hive` (a node's own mesh node, joined
    through `url`), else at --hive, else --local. Started (and routed now with `warm`, else
    on the first request); the caller closes it."""
    import asyncio

    from hive_core.api import (
        ApiConfig,
        HiveEngine,
        InProcessConnector,
        LiveConnector,
        LocalEngine,
        make_server,
    )
    from hive_core.exec.client import ClientConfig
    from hive_core.mesh.status import fetch_status, status_view
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(resolve_model_path(args.model))
    tokenizer = GGUFTokenizer(file)
    layers = getattr(args, "local_layers", 1)
    if layers >= file.config.n_layers:
        raise ValueError(f"--local-layers must be below the model's {file.config.n_layers} layers")
    config = ClientConfig(local_layers=layers,
                          topology="cascade" if getattr(args, "cascade", False) else "star")
    replicas = getattr(args, "replicas", 1)
    status: Any = None
    engine: Any
    target = url if hive is not None else getattr(args, "hive", None)
    if target is None:
        say(f"loading {file.path.name} ({args.weights} weights) on this device ...")
        engine = await LocalEngine.load(file, weights=args.weights)
    elif target.startswith("local:"):
        n = int(target[6:])
        engine = HiveEngine(file, InProcessConnector(file, n, args.weights, min(replicas, n),
                                                     config))
    else:
        connector = LiveConnector(target, file, args.weights, replicas, config,
                                  timeout_s=getattr(args, "timeout", 15.0), hive=hive, say=say,
                                  relay=getattr(args, "relay", None))

        async def poll(entry: str = target) -> dict[str, Any]:
            if connector.hive is not None:
                return status_view(await connector.hive.status_records())
            return await fetch_status(entry, timeout_s=5.0)

        status = poll
        engine = HiveEngine(file, connector)
    api_config = ApiConfig(slots=getattr(args, "slots", 4), queue=getattr(args, "queue", 16),
                           wait_s=getattr(args, "wait", 120.0))
    server = make_server(engine, tokenizer, listen=listen, model=file.path.name,
                         config=api_config, status=status,
                         layout=mds_layout() if status is not None else None)
    await server.start()
    if warm and isinstance(engine, HiveEngine):
        task = asyncio.ensure_future(_warm(engine))
        _warming.add(task)
        task.add_done_callback(_warming.discard)
    return server


async def _warm(engine: Any) -> None:
    """Route once now, so the page shows the hive and the first answer starts at once."""
    from hive_core.api import ApiError

    try:
        await engine.warm()
    except ApiError as exc:
        say(f"not routed yet ({exc}); will try again on the first request")


def announce(server: Any, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"event": "ready", "http": server.url, "model": server.api.model_id,
                          "mode": server.api.engine.mode}), flush=True)
    say(f"serving {server.api.model_id} at {server.url}: the web page at {server.url}/, the "
        f"OpenAI API at {server.url}/v1 (try: curl {server.url}/v1/models); Ctrl-C stops")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from hive_core.mesh.runner import setup_logging
    from hive_core.model.packed_run import prepare_compute

    check(args)
    setup_logging(args.verbose)
    prepare_compute(args.threads)
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await open_server(args, listen=args.http)
    try:
        announce(server, as_json=args.json)
        await stop.wait()
    finally:
        say("serve: stopping ...")
        await server.close()
    return 0
