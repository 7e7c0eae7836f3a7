"""Plumbing for `cadencia node`: the flags that make a mesh node a shard server.

`add_serving_arguments(parser)` adds ``--model``, ``--weights``, ``--threads``, ``--fault``
and ``--allow-dequant``; after the HiveNode is built, `attach_shard_server(node, args)`
refuses spans whose layers this machine's available memory cannot hold (before anything
loads), loads the layers named by ``--serve`` spans in that weights mode (others load when
first asked for) and answers stage requests on that node.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from hive_core.mesh.runner import number
from hive_core.model.modes import DEFAULT_WEIGHTS, add_weights_argument
from hive_core.sched.memory import (
    MemoryBudget,
    MemoryCapError,
    cap_bytes,
    layer_bytes,
    published_free_mb,
)

if TYPE_CHECKING:  # heavy (torch): imported when serving starts, not for --help
    from hive_core.exec.frame_gate import FrameGate
    from hive_core.exec.server import ShardServer
    from hive_core.mesh.node import Node

FAULT_HELP = "noise | zero | stale | crash-after=N"


def fault_text(text: str) -> str:
    """An argparse type for ``--fault``: checked while parsing, kept as text."""
    from hive_core.exec.faults import Fault  # torch: only when the flag is given

    try:
        Fault.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_serving_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="GGUF file whose layers this node serves (default: $CADENCIA_MODEL, "
                             "else the bundled SmolLM2-135M-Instruct)")
    add_weights_argument(parser, "this node's shards")
    parser.add_argument("--threads", type=number(int, 1, 1024), default=None, metavar="N",
                        help="torch threads this node computes with (default: physical cores; "
                             "`hive up` gives each serving node its share)")
    parser.add_argument("--fault", type=fault_text, default=None, metavar="MODE",
                        help=f"TEST TOOL, never in a real hive: misbehave on purpose ({FAULT_HELP}) "
                             "to exercise verification, slashing and failover")
    add_allow_dequant_argument(parser)


def add_allow_dequant_argument(parser: argparse.ArgumentParser) -> None:
    """``--allow-dequant``: packed weights may dequantise a matrix no kernel here multiplies."""
    parser.add_argument("--allow-dequant", action="store_true",
                        help="with packed weights, load a matrix of a type no kernel here "
                             "multiplies dequantised to float32 (several times its size; "
                             "refused by default, naming the tensor and the memory it would take)")


def memory_budget(path: Any, weights: str, max_memory_mb: float | None,
                  compute_process: bool) -> MemoryBudget | None:
    """The budget a node with ``--max-memory`` loads its stages under; None without one.
    A compute child process (a game hosting the server) holds the weights out of its reach:
    refused there rather than ignored."""
    if max_memory_mb is None:
        return None
    if compute_process:
        raise MemoryCapError("--max-memory is not enforced on a server computing in a child "
                             "process")
    return MemoryBudget(cap_bytes(max_memory_mb), layer_bytes(path, weights))


def attach_shard_server(node: Node, args: argparse.Namespace, *, compute_nice: int = 0,
                        compute_process: bool = False,
                        compute_gate: FrameGate | None = None) -> ShardServer | None:
    """Serve stages on `node`: preload the ``--serve`` spans of this model (held as
    ``--weights`` says), apply ``--fault``. A game hosting the server passes its compute
    priority, child-process choice and frame gate (see `ServerConfig`).

    Without a model (none given, none bundled) and without spans, the node serves nothing.
    """
    from hive_core.base.stage import Stage
    from hive_core.exec.faults import Fault
    from hive_core.exec.server import ServerConfig, ShardServer
    from hive_core.exec.stage_host import StageHost
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path

    fault = Fault.parse(args.fault) if getattr(args, "fault", None) else None
    from hive_core.model.errors import ModelError, ModelNotFoundError

    spans: list[Any] = list(getattr(args, "serve", []) or [])
    try:
        path = resolve_model_path(getattr(args, "model", None))
    except ModelNotFoundError:
        if getattr(args, "model", None) or spans or fault is not None:
            raise
        print("no model found: this node relays and stores records but serves no layers",
              file=sys.stderr, flush=True)
        return None
    threads = getattr(args, "threads", None)
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise ModelError(f"--threads must be at least 1, got {threads}")
    from hive_core.model.packed_run import prepare_compute

    prepare_compute(threads)
    model = GGUFModelFile(path)
    preload = []
    for text in spans:
        from hive_core.mesh.runner import parse_span

        span = parse_span(text)
        if span.n_layers == model.config.n_layers:
            preload.append(Stage(span.start, span.end))
    import psutil

    weights = getattr(args, "weights", None) or DEFAULT_WEIGHTS
    budget = memory_budget(path, weights, getattr(args, "max_memory", None), compute_process)
    if budget is not None:  # past --max-memory: refused before anything loads
        budget.check(preload)
    if preload:  # refused before anything loads, with the numbers
        from hive_core.model.packed import check_fits
        from hive_core.model.weights import check_loadable, weights_need

        check_loadable(model, preload, mode=weights,
                       allow_dequant=bool(getattr(args, "allow_dequant", False)))
        layers = {layer for stage in preload for layer in stage.layers}
        check_fits(weights_need(path, layers, weights),
                   f"layers {', '.join(f'{s.start}..{s.end}' for s in preload)} of "
                   f"{model.path.name} ({len(layers)} layers, {weights} weights)")
    server = ShardServer(node, model, ServerConfig(
        preload=tuple(preload), fault=fault, tflops=float(getattr(args, "tflops", 0) or 0),
        free_ram_mb=published_free_mb(psutil.virtual_memory().available / (1024 * 1024),
                                      getattr(args, "max_memory", None)), weights=weights,
        compute_nice=compute_nice, compute_process=compute_process, compute_gate=compute_gate,
        allow_dequant=bool(getattr(args, "allow_dequant", False))))
    if budget is not None and isinstance(server.host, StageHost):
        server.host.budget = budget
    for stage in preload:
        print(f"loading layers {stage.start}..{stage.end} of {model.path.name} ({weights} "
              "weights)", file=sys.stderr, flush=True)
        server.load(stage)
    if fault is not None:
        print(f"WARNING: fault mode {fault} is on: this node misbehaves on purpose",
              file=sys.stderr, flush=True)
    return server
