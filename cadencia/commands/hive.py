"""`cadencia hive up|status`: run a local hive on loopback, or report on a running hive."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from typing import Any

NAME = "hive"
HELP = "start a local hive (up) or report on one (status)"
DESCRIPTION = (
    "'hive up --nodes N' starts a sentinel and N node processes on loopback, splits the "
    "model's layers into contiguous spans served by the nodes (replicated when N >= 4), prints "
    "how to join and how to ask, and stops them all on Ctrl-C (or when it is killed). "
    "'hive status --hive ws://HOST:PORT' asks a node for every known node's signed records "
    "(health, roles, RTTs) and shows them."
)
READY_TIMEOUT_S = 120.0  # a node benchmarks its device at start; on a busy machine it takes a while


class HiveUpError(RuntimeError):
    """A process of the local hive failed to start or exited early."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hive_core.mesh.runner import add_mesh_arguments, number

    sub = parser.add_subparsers(dest="hive_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start a sentinel and N nodes on this machine",
                        description="Start a sentinel and N node processes on loopback; "
                                    "Ctrl-C stops them all.")
    up.add_argument("--nodes", type=number(int, 0, 64), default=3, metavar="N",
                    help="node processes besides the sentinel (default 3)")
    up.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                    help="the sentinel's WebSocket address (default 127.0.0.1, any free port)")
    up.add_argument("--model", default=None, metavar="PATH",
                    help="GGUF file the nodes serve (default: $CADENCIA_MODEL, else the bundled "
                         "SmolLM2-135M-Instruct)")
    from hive_core.model.modes import add_weights_argument

    add_weights_argument(up, "the serving nodes")
    up.add_argument("--no-serve", action="store_true",
                    help="start a mesh only: no node loads or serves model layers")
    up.add_argument("--stages", type=number(int, 1, 64), default=None, metavar="S",
                    help="split the layers into S contiguous spans; node i serves span i mod S "
                         "(default: one per node up to 3, else N/2 so every span has replicas)")
    up.add_argument("--plan", action="store_true",
                    help="nodes preload no spans: each asker's planner places the layers (and "
                         "splits attention and MLP over alpha and beta nodes where its cost "
                         "model says that pays) and the nodes load them on first use")
    up.add_argument("--sentinel-serves", action="store_true",
                    help="the sentinel takes a share of the layers too, like a node")
    up.add_argument("--threads", type=number(int, 1, 1024), default=None, metavar="N",
                    help="torch threads of each serving node (default: the physical cores "
                         "split among them; one answer passes the nodes in turn, so N up to "
                         "the cores each serves it fastest, many askers at once prefer the split)")
    up.add_argument("--cascade", action="store_true",
                    help="the API server's asker sends hidden states node to node (--http)")
    from hive_core.exec.serve import add_allow_dequant_argument

    add_allow_dequant_argument(up)
    add_mesh_arguments(up, spans=False)
    from cadencia.commands.node import add_world_arguments
    from cadencia.commands.serve import add_http_argument

    add_world_arguments(up)
    add_http_argument(up)
    status = sub.add_parser("status", help="show the nodes of a running hive",
                            description="Ask the node at --hive for the hive's signed records.")
    status.add_argument("--hive", required=True, metavar="URL",
                        help="ws://HOST:PORT of a sentinel or listening node")
    status.add_argument("--timeout", type=number(float, 0.1, 3600, "s"), default=10.0,
                        metavar="S",
                        help="give up after S seconds (default 10)")
    status.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if args.hive_command == "status":
        return _status(args)
    return _up(args)


# -- status -------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from hive_core.mesh.status import fetch_status
    from hive_core.mesh.wschannel import parse_ws_url

    parse_ws_url(args.hive)
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    view = asyncio.run(fetch_status(args.hive, timeout_s=args.timeout))
    if args.json:
        print(json.dumps(view))
        return 0
    print(f"hive {args.hive}: {len(view['nodes'])} nodes")
    print(f"{'id':14} {'role':9} {'layers':10} {'weights':8} {'tflops':>8} {'rtt ms':>8} "
          f"{'attn':>6} {'mlp':>6} {'verif':>6}")
    for n in view["nodes"]:
        h, f = n["health"] or {}, n["fitness"] or {}
        rtt = h.get("rtt_median_ms")
        layers = " ".join(f"{a}-{b}" for a, b in n.get("layers") or []) or "-"
        print(f"{n['id'][:12]:14} {n['role']:9} {layers:10} {n.get('weights') or '-':8} "
              f"{h.get('tflops', 0):8.3f} {'-' if rtt is None else f'{rtt:.1f}':>8} "
              f"{f.get('attention', 0):6.3f} {f.get('mlp', 0):6.3f} "
              f"{f.get('verification', 0):6.3f}")
    models = sorted({n["model"] for n in view["nodes"] if n.get("model")})
    if models:
        print(f"serving {', '.join(models)}")
    if view["rejected"]:
        print(f"{view['rejected']} records failed verification and were left out")
    return 0


# -- up -----------------------------------------------------------------------------------


def _child_args(args: argparse.Namespace) -> list[str]:
    """The shared mesh flags, passed on to every child process."""
    out = ["--parent-pid", str(os.getpid()), "--role", args.role, "--connect-timeout", str(args.connect_timeout),
           "--ping-interval", str(args.ping_interval), "--dead-after", str(args.dead_after),
           "--record-ttl", str(args.record_ttl), "--json"]
    for host in args.ice_host or ():
        out += ["--ice-host", host]
    if args.loopback_candidate:
        out.append("--loopback-candidate")
    if not args.lan_links:
        out.append("--no-lan-links")
    if args.tflops is not None:
        out += ["--tflops", str(args.tflops)]
    if args.max_memory is not None:
        out += ["--max-memory", str(args.max_memory)]
    if args.verbose:
        out.append("--verbose")
    out += ["--no-world"] if args.no_world else ["--world-interval", str(args.world_interval)]
    return out


async def ready_line(proc: asyncio.subprocess.Process, what: str,
                     timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
    """The JSON line `{"event": "ready", ...}` a `cadencia` process prints on its stdout once
    it serves (other lines are skipped), within `timeout_s` of the call."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(),
                                          max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise HiveUpError(f"{what} did not become ready in {timeout_s:g} s") from None
        if not line:
            code = await proc.wait()
            raise HiveUpError(f"{what} exited with status {code} before it was ready")
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("event") == "ready":
            return msg


async def _spawn(cmd: list[str]) -> asyncio.subprocess.Process:
    # Children ignore the terminal's Ctrl-C (own session); we stop them with SIGTERM ourselves.
    # If this process is killed outright (SIGKILL), the kernel sends them SIGTERM (prctl), and
    # each also watches --parent-pid, so none lives on.
    from hive_core.mesh.layout import die_with_parent

    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", *cmd, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent(),
    )


def _serving(args: argparse.Namespace) -> tuple[str | None, list[list[str]]]:
    """(model path, per-process serving flags: [sentinel, node 0, ...]); no model: no flags."""
    empty: list[list[str]] = [[] for _ in range(args.nodes + 1)]
    if args.no_serve:
        return None, empty
    if args.nodes == 0 and not args.sentinel_serves:
        print("hive up: no node to serve the model on (--nodes 0): a mesh only",
              file=sys.stderr, flush=True)
        return None, empty
    from hive_core.mesh.layout import assign_spans
    from hive_core.model.errors import ModelNotFoundError
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.packed_run import default_threads

    try:
        path = resolve_model_path(args.model)
    except ModelNotFoundError:
        if args.model:
            raise
        print("hive up: no model found (none bundled, no $CADENCIA_MODEL): a mesh only",
              file=sys.stderr, flush=True)
        return None, empty
    n_layers = GGUFModelFile(path).config.n_layers
    first = 0 if args.sentinel_serves else 1
    spans = assign_spans(path.name[:128], n_layers, args.nodes + 1 - first, args.stages)
    _check_model(args, path, spans)
    # By default each serving process gets its share of the cores: N processes each using
    # every core would spend the cores switching between them when several askers are served.
    share = str(args.threads or max(1, default_threads() // max(1, len(spans))))
    flags = ["--model", str(path), "--weights", args.weights, "--threads", share]
    if args.allow_dequant:
        flags.append("--allow-dequant")
    out = [list(flags) if i >= first else [] for i in range(args.nodes + 1)]
    if args.plan:  # checked as if spread evenly above; nothing preloaded: askers place layers
        spans = []
    for i, span in enumerate(spans):
        out[first + i] += ["--serve", span]
    return str(path), out


# What a serving process holds besides its layers (Python, torch, the mesh; measured: a node
# of a tiny model peaks at 290 MB), and its KV caches, which grow with its sessions.
PROCESS_BYTES = 300_000_000


def _check_model(args: argparse.Namespace, path: Any, spans: list[str]) -> None:
    """Refuse, before any process starts, what the nodes would refuse (a matrix no kernel
    here multiplies) and a model whose served layers (held once: the nodes of one machine
    share the file's pages) and processes exceed the available memory."""
    from hive_core.base.stage import Stage
    from hive_core.mesh.runner import parse_span
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.packed import check_fits
    from hive_core.model.weights import check_loadable, weights_need

    stages = {Stage(r.start, r.end) for r in map(parse_span, spans)}
    check_loadable(GGUFModelFile(path), stages, head=args.http is not None, mode=args.weights,
                   allow_dequant=args.allow_dequant)
    layers = {i for stage in stages for i in stage.layers}
    procs = len(spans) + (1 if args.http is not None else 0)
    need = weights_need(path, layers, args.weights, head=args.http is not None)
    check_fits(need + procs * PROCESS_BYTES,
               f"{len(layers)} layers of {path.name} ({args.weights} weights, "
               f"{need / 1e9:.2f} GB) and {procs} processes (about "
               f"{PROCESS_BYTES / 1e9:.1f} GB each)")


async def _stop_all(procs: list[asyncio.subprocess.Process], grace_s: float = 10.0) -> None:
    """Nodes first (each says bye to its peers), the sentinel last."""
    for group in (procs[1:], procs[:1]):
        for proc in group:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in group:
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _watch(procs: list[asyncio.subprocess.Process], stop: asyncio.Event,
                 names: list[str]) -> int:
    """Until Ctrl-C: a process that exits is reported, the others keep the hive going
    (it works without its sentinel); 1 once none is left."""
    waiters = {asyncio.ensure_future(p.wait()): name for p, name in zip(procs, names, strict=True)}
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while waiters:
            done, _ = await asyncio.wait([stopper, *waiters], return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                return 0
            for w in done:
                print(f"hive up: {waiters.pop(w)} exited with status {w.result()}; "
                      f"{len(waiters)} processes left", file=sys.stderr, flush=True)
        print("hive up: every process exited", file=sys.stderr, flush=True)
        return 1
    finally:
        stopper.cancel()
        for w in waiters:
            w.cancel()


async def _start_http(args: argparse.Namespace, procs: list[asyncio.subprocess.Process],
                      url: str, model: str, serving: list[list[str]]) -> str:
    """`cadencia serve` joined to the new hive, as a process of its own: its asker computes
    on its own cores' share, like each node."""
    threads = next((f[f.index("--threads") + 1] for f in serving if "--threads" in f), "1")
    print(f"starting the API and web page on {args.http} ...", file=sys.stderr, flush=True)
    procs.append(await _spawn(["serve", "--hive", url, "--http", args.http, "--json",
                               "--model", model, "--weights", args.weights, "--threads", threads,
                               *(["--cascade"] if getattr(args, "cascade", False) else [])]))
    ready = await ready_line(procs[-1], "the API server")
    return str(ready["http"])


def _span_of(flags: list[str]) -> str | None:
    return flags[flags.index("--serve") + 1] if "--serve" in flags else None


async def _up_async(args: argparse.Namespace, base: str) -> int:
    from hive_core.mesh.runner import node_config
    from hive_core.model.modes import DEFAULT_WEIGHTS

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    procs: list[asyncio.subprocess.Process] = []
    model, serving = _serving(args)
    try:
        print(f"starting sentinel on {args.listen} ...", file=sys.stderr, flush=True)
        procs.append(await _spawn(["sentinel", "--listen", args.listen, "--data-dir",
                                   os.path.join(base, "sentinel"), *_child_args(args),
                                   *serving[0]]))
        sentinel = await ready_line(procs[0], "the sentinel")
        url = sentinel["listen"]
        node_config(args, listen=None, join=[url])  # validate the flags once more, with the URL
        for i in range(args.nodes):
            procs.append(await _spawn(["node", "--join", url, "--listen", "127.0.0.1:0",
                                       "--data-dir", os.path.join(base, f"node-{i}"),
                                       *_child_args(args), *serving[i + 1]]))
        nodes = []
        for i, proc in enumerate(procs[1:]):
            nodes.append(await ready_line(proc, f"node {i}"))
            print(f"node {i + 1}/{args.nodes} ready: {nodes[-1]['id'][:12]} "
                  f"({nodes[-1]['peers']} peers)", file=sys.stderr, flush=True)
        spans = [_span_of(flags) for flags in serving]
        names = ["sentinel", *(f"node {i}" for i in range(args.nodes))]
        http = None
        if args.http is not None and model:
            http = await _start_http(args, procs, url, model, serving)
            names.append("serve")
        elif args.http is not None:
            print("hive up: no model served: --http is ignored", file=sys.stderr, flush=True)
        summary = {"sentinel": url, "sentinel_id": sentinel["id"], "model": model,
                   "weights": args.weights if model else None,
                   "sentinel_serves": spans[0], "http": http,
                   "nodes": [{"id": n["id"], "listen": n["listen"], "serves": span}
                             for n, span in zip(nodes, spans[1:], strict=True)]}
        if args.json:
            print(json.dumps(summary), flush=True)
        flag = f" --model {model}" if args.model else ""  # the bundled one: ask finds it too
        if args.weights != DEFAULT_WEIGHTS:  # the asker's embedding and head in the same mode
            flag += f" --weights {args.weights}"
        ask = f"  ask it:     cadencia ask \"Hello\" --hive {url}{flag}\n" if model else ""
        if http:
            ask += (f"  web page:   {http}/  (OpenAI API at {http}/v1; try: curl "
                    f"{http}/v1/models)\n")
        print(f"hive up: sentinel {url} and {len(nodes)} nodes"
              + (f", serving {os.path.basename(model)} ({args.weights} weights)" if model else "")
              + "\n"
              f"  join it:    cadencia node --join {url}\n"
              f"  inspect it: cadencia hive status --hive {url}\n{ask}"
              f"Ctrl-C stops them all.", file=sys.stderr, flush=True)
        return await _watch(procs, stop, names)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        print("hive up: stopping ...", file=sys.stderr, flush=True)
        await _stop_all(procs)
        print("hive up: all stopped", file=sys.stderr, flush=True)


def _up(args: argparse.Namespace) -> int:
    from hive_core.base.paths import data_dir
    from hive_core.mesh.runner import node_config

    if not 0 <= args.nodes <= 64:
        raise ValueError(f"--nodes must be between 0 and 64, got {args.nodes}")
    if args.stages is not None and args.stages < 1:
        raise ValueError(f"--stages must be at least 1, got {args.stages}")
    node_config(args, listen=args.listen, join=[])
    if args.http is not None:
        from hive_core.mesh.wschannel import parse_listen

        parse_listen(args.http)
    base = str(data_dir(args.data_dir) / "hive-up")
    return asyncio.run(_up_async(args, base))
