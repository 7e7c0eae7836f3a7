"""`cadencia model`: inspect a GGUF model (info), requantise one (quantize), or write a
random-weight model of a published shape (synth)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

NAME = "model"
HELP = "inspect, quantise or synthesise GGUF model files"
DESCRIPTION = (
    "Tools for GGUF model files: 'info' shows a model's shape and what each node of a hive "
    "needs to serve it; 'quantize' rewrites a model as another file type with our own "
    "quantisers, laid out as llama.cpp's llama-quantize lays it out; 'synth' writes a "
    "random-weight model with the shapes of a published one, streamed to disk in seconds."
)

FILE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K")
SHAPES = ("llama3-8b", "llama3.1-8b", "llama3-70b", "tiny-llama3")
INFO_FORMULA = (
    "Node memory, the layers split evenly over N nodes (contiguous ranges, the first L mod N "
    "nodes one layer more): node_i = sum of its layers' tensor bytes as the file stores them "
    "+ tensors every layer uses (rope_freqs) + KV_i, where KV_i = layers_i x context x 2 x "
    "kv_heads x head_dim x bytes per value (4 for --kv fp32; the INT4 cache's long-run cost "
    "for --kv int4). Only the asker adds the embedding rows and the head (output norm and "
    "output matrix; a tied head is the embedding itself)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="a model's shape, formats, and memory per node",
                          description="Show a GGUF model's architecture, layers, context, "
                          "widths, heads, tensor formats, tokenizer, bytes per layer and "
                          "the memory each of N nodes needs. " + INFO_FORMULA)
    info.add_argument("path", metavar="PATH", help="a GGUF model file")
    info.add_argument("--nodes", type=int, default=None, metavar="N",
                      help="split the layers evenly over N nodes and show each one's memory")
    info.add_argument("--kv", choices=("fp32", "int4"), default="fp32",
                      help="KV cache kind for the per-node memory (default fp32)")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    quant = sub.add_parser("quantize", help="rewrite a model as another file type",
                           description="Dequantise every tensor of IN and quantise it again "
                           "with our quantisers (ggml's reference algorithms) into OUT, each "
                           "tensor in the format llama.cpp's llama-quantize would choose for the "
                           "file type (no importance matrix). Metadata and vocabulary are "
                           "copied, general.file_type is set. A tensor already in its chosen "
                           "format is copied unchanged. IN defaults to the bundled model.")
    quant.add_argument("inp", metavar="IN", nargs="?", default=None,
                       help="source GGUF (default: --model resolution: $CADENCIA_MODEL, then "
                       "the bundled SmolLM2)")
    quant.add_argument("out", metavar="OUT", help="the GGUF file to write")
    quant.add_argument("--type", required=True, choices=FILE_TYPES, dest="file_type",
                       help="file type to write")
    quant.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    quant.add_argument("--json", action="store_true", help="print one JSON object at the end")

    synth = sub.add_parser("synth", help="write a random-weight model of a published shape",
                           description="Write a GGUF with the tensor shapes, metadata and "
                           "per-tensor formats of a published model, filled with random valid "
                           "blocks and a synthetic byte-level BPE vocabulary of the real size. "
                           "The file is streamed: memory stays tens of megabytes.")
    synth.add_argument("out", metavar="OUT", help="the GGUF file to write")
    synth.add_argument("--shape", required=True, choices=SHAPES, help="which model's shapes")
    synth.add_argument("--type", default="Q4_K_M", choices=FILE_TYPES, dest="file_type",
                       help="file type to lay out (default Q4_K_M)")
    synth.add_argument("--layers", type=int, default=None, metavar="K",
                       help="write only the first K layers (formats as in the whole model)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    synth.add_argument("--json", action="store_true", help="print one JSON object at the end")


def run(args: argparse.Namespace) -> int:
    actions = {"info": _info, "quantize": _quantize, "synth": _synth}
    return actions[args.action](args)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _info(args: argparse.Namespace) -> int:
    from hive_core.model.quant.footprint import read_footprint

    fp = read_footprint(args.path)
    shares = fp.split(args.nodes, args.kv) if args.nodes is not None else None
    if args.json:
        print(json.dumps(fp.as_dict(args.nodes, args.kv)))
        return 0
    layers = fp.layer_bytes
    lines = [
        f"{Path(fp.path).name}: {_size(fp.file_bytes)}",
        f"architecture  {fp.architecture}",
        f"layers        {fp.n_layers}",
        f"context       {fp.context}",
        f"hidden / FFN  {fp.hidden} / {fp.ffn}",
        f"heads         {fp.n_heads} query, {fp.n_kv_heads} key/value (head dim {fp.head_dim})",
        f"tokenizer     {fp.tokenizer}, {fp.vocab_size} tokens",
        "formats       " + "; ".join(f"{k} {_count(u.tensors, 'tensor')} {_size(u.bytes)}"
                                     for k, u in fp.formats.items()),
        (f"per layer     {_size(sum(layers) / len(layers))} on average "
        f"(min {_size(min(layers))}, max {_size(max(layers))})"),
        f"embedding     {_size(fp.embedding_bytes)}",
        f"head          {_size(fp.head_bytes)}" + (" (tied: the output is the embedding)"
                                                   if fp.tied else ""),
    ]
    if shares is not None:
        lines.append(f"{args.nodes} nodes, KV cache {args.kv} for {fp.context} positions:")
        lines += [f"  node {s.node}  layers {s.first_layer}-{s.last_layer}  weights "
                  f"{_size(s.weight_bytes)} + KV {_size(s.kv_bytes)} = {_size(s.total_bytes)}"
                  for s in shares]
        lines.append(f"  the asker adds embedding and head: {_size(fp.asker_bytes)}")
    print("\n".join(lines))
    return 0


class _Progress:
    """One status line on stderr, rewritten in place on a terminal, printed once at the end
    otherwise (a log gets the summary, not hundreds of lines)."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, name: str, kind: str = "") -> None:
        if self.tty or done == total:
            end = "\n" if done == total else ""
            what = f" {name}" + (f" -> {kind}" if kind else "")
            line = f"{self.verb} tensors {done}/{total}{what if done < total else ''}"
            print(f"\r\033[K{line}" if self.tty else line, end=end, file=sys.stderr, flush=True)


def _check_output(out: str, force: bool) -> Path:
    from hive_core.model.quant.formats import QuantizeError

    path = Path(out).expanduser()
    if path.exists() and not force:
        raise QuantizeError(f"{path} exists (pass --force to overwrite it)")
    if not path.parent.is_dir():
        raise QuantizeError(f"the output directory {path.parent} does not exist")
    return path


def _report(path: Path, plans: list[Any], started: float, as_json: bool) -> None:
    kinds = Counter(p.ggml_type.name for p in plans)
    size = path.stat().st_size
    seconds = time.perf_counter() - started
    if as_json:
        print(json.dumps({"path": str(path), "bytes": size, "tensors": len(plans),
                          "formats": dict(kinds), "seconds": round(seconds, 3)}))
    else:
        parts = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
        print(f"wrote {path}: {_size(size)}, {len(plans)} tensors ({parts}) in {seconds:.1f}s")


def _quantize(args: argparse.Namespace) -> int:
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.quant.requant import requantize

    src = resolve_model_path(args.inp)
    out = _check_output(args.out, args.force)
    started = time.perf_counter()
    print(f"quantizing {src.name} as {args.file_type} ...", file=sys.stderr, flush=True)
    plans = requantize(src, out, args.file_type, progress=_Progress("quantizing"))
    _report(out, plans, started, args.json)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from hive_core.model.quant.synth import write_synthetic

    out = _check_output(args.out, args.force)
    started = time.perf_counter()
    what = f"{args.shape} ({args.layers} layers)" if args.layers else args.shape
    print(f"writing a random {what} as {args.file_type} ...", file=sys.stderr, flush=True)
    progress = _Progress("writing")
    plans = write_synthetic(out, args.shape, args.file_type, n_layers=args.layers, seed=args.seed,
                            progress=lambda done, total, name: progress(done, total, name))
    _report(out, plans, started, args.json)
    return 0
