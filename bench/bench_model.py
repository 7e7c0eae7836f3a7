"""Benchmark of the model executor: speed vs transformers, peak memory, INT4 KV cost and quality.

Run: `.venv/bin/python -m bench.bench_model [--quick] [--threads N]`. Prints two markdown tables,
every number measured in this one run on this machine:

1. Speed. Our executor (fp32 weights, fp32 or INT4 KV) and transformers' LlamaForCausalLM
   loading the same GGUF run the same prompts: prefill tokens/s (the whole prompt in one
   forward) and decode tokens/s (greedy, a fixed number of new tokens, no early stop; both
   as a plain loop over the model's own KV cache, which spares transformers the overhead of
   `generate`). Each engine runs in a fresh spawned process with the same torch thread
   count, so "peak RSS" is that engine's own high-water mark (torch itself included).
2. KV cache. Bytes per token over every layer (codes, scales and the 16-bit window,
   amortised over the whole text) against the same cache in fp16, perplexity on
   `bench/data/kv_text.txt` against the full-precision cache, and teacher-forced top-1
   agreement (share of positions whose argmax equals the full-precision cache's).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TEXT = Path(__file__).parent / "data" / "kv_text.txt"
CHAT_PROMPT = "Explain in two sentences why the sky is blue."


def _setup(threads: int) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.set_num_threads(threads)
    return torch


def _prompts(quick: bool) -> list[tuple[str, list[int]]]:
    """(label, ids): the chat prompt, then slices of the fixed text."""
    from hive_core.model.chat import encode_chat
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(resolve_model_path())
    tok = GGUFTokenizer(file)
    chat = encode_chat(file, tok, [{"role": "user", "content": CHAT_PROMPT}])
    text = tok.encode(TEXT.read_text())
    if quick:
        return [("chat", chat)]
    return [("chat", chat), ("text 512", text[:512])]


def _time_engine(prefill: Any, decode: Any, ids: list[int], new: int, repeats: int) -> dict:
    """Best-of-`repeats` prefill time and one greedy decode of `new` tokens."""
    best = float("inf")
    state = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, token = prefill(ids)
        best = min(best, time.perf_counter() - t0)
    steps = []
    for _ in range(new):
        t0 = time.perf_counter()
        token = decode(state, token)
        steps.append(time.perf_counter() - t0)
    return {"prefill_tps": len(ids) / best, "decode_tps": 1.0 / statistics.median(steps),
            "decode_mean_tps": len(steps) / sum(steps)}


def _child_ours(threads: int, quick: bool, kv: str, new: int, repeats: int) -> dict:
    torch = _setup(threads)
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.pipeline import LocalPipeline

    t0 = time.perf_counter()
    pipeline = LocalPipeline.load_single(GGUFModelFile(resolve_model_path()))
    load_s = time.perf_counter() - t0
    factory = kv_factory(kv)

    def prefill(ids: list[int]) -> tuple[Any, int]:
        session = pipeline.new_session(factory)
        return session, int(torch.argmax(session.forward(ids)))

    def decode(session: Any, token: int) -> int:
        return int(torch.argmax(session.forward([token])))

    rows = {label: _time_engine(prefill, decode, ids, new, repeats)
            for label, ids in _prompts(quick)}
    return {"load_s": load_s, "rows": rows, "weights_mib": pipeline.client.weights.nbytes() / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child_hf(threads: int, quick: bool, new: int, repeats: int) -> dict:
    torch = _setup(threads)
    import transformers
    from transformers import DynamicCache

    from hive_core.model.locate import resolve_model_path

    path = resolve_model_path()
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    load_s = time.perf_counter() - t0

    def prefill(ids: list[int]) -> tuple[Any, int]:
        cache = DynamicCache()
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        return [out.past_key_values, len(ids)], int(torch.argmax(out.logits[0, -1]))

    def decode(state: list, token: int) -> int:
        cache, pos = state
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([[token]]), past_key_values=cache, use_cache=True,
                        cache_position=torch.tensor([pos]))
        state[0], state[1] = out.past_key_values, pos + 1
        return int(torch.argmax(out.logits[0, -1]))

    rows = {label: _time_engine(prefill, decode, ids, new, repeats)
            for label, ids in _prompts(quick)}
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"load_s": load_s, "rows": rows, "weights_mib": weights / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _child_kv(threads: int, quick: bool) -> dict:
    _setup(threads)
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.cache import DenseKV
    from hive_core.model.kv.int4 import NAIVE_G32, Int4Config, Int4KV
    from hive_core.model.kv.quality import compare, teacher_forced
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(resolve_model_path())
    pipeline = LocalPipeline.load_single(file)
    ids = GGUFTokenizer(file).encode(TEXT.read_text())
    if quick:
        ids = ids[:256]
    ref = teacher_forced(pipeline, ids, DenseKV)
    rows = {}
    default = Int4Config()
    variants = (("int4 KIVI (default)", default),
                ("int4 KIVI, keys g64, window 32", Int4Config(key_group=64, residual=32)),
                ("int4 naive per-token g32", NAIVE_G32))
    for label, config in variants:
        q = compare(pipeline, ids, functools.partial(Int4KV, config), ref)
        rows[label] = {"config": repr(config), "bytes": q.bytes_per_token, "ratio": q.bytes_ratio,
                       "steady": config.bytes_per_value() / 2,
                       "ppl": q.ppl, "dppl": q.ppl_change, "top1": q.top1_agreement}
    cfg = file.config
    fp16 = 2 * cfg.n_layers * cfg.kv_dim * 2
    return {"tokens": len(ids), "ref_ppl": ref.perplexity, "ref_bytes": ref.bytes_per_token(),
            "fp16": fp16, "rows": rows}


def _run(fn: Any, *args: Any) -> dict:
    """Run `fn` in a fresh spawned process (own peak RSS; a fork after torch could hang)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one short prompt, 8 new tokens, KV metrics on 256 tokens")
    parser.add_argument("--kv-only", action="store_true", help="only the KV cache table")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in every engine (default: physical cores)")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    args = parser.parse_args(argv)
    import psutil

    threads = args.threads or psutil.cpu_count(logical=False) or 1
    new, repeats = (8, 1) if args.quick else (32, 2)
    print(f"bench_model: {threads} torch threads, {new} new tokens per prompt, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    if not args.kv_only:
        _speed_table(threads, args.quick, new, repeats, hf=not args.no_hf)
    _kv_table(threads, args.quick)
    return 0


def _speed_table(threads: int, quick: bool, new: int, repeats: int, *, hf: bool) -> None:
    engines: dict[str, dict] = {}
    engines["cadencia, fp32 KV"] = _run(_child_ours, threads, quick, "fp32", new, repeats)
    engines["cadencia, int4 KV"] = _run(_child_ours, threads, quick, "int4", new, repeats)
    if hf:
        engines["transformers"] = _run(_child_hf, threads, quick, new, repeats)
    print("| engine | prompt | prompt tokens | prefill tok/s | decode tok/s (median step) "
          "| decode tok/s (mean) | load s | weights MiB | peak RSS MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    lengths = {label: len(ids) for label, ids in _prompts(quick)}
    for name, res in engines.items():
        for label, row in res["rows"].items():
            print(f"| {name} | {label} | {lengths[label]} | {row['prefill_tps']:.0f} "
                  f"| {row['decode_tps']:.1f} | {row['decode_mean_tps']:.1f} | {res['load_s']:.1f} "
                  f"| {res['weights_mib']:.0f} | {res['peak_rss_mib']:.0f} |")
    print()


def _kv_table(threads: int, quick: bool) -> None:
    kv = _run(_child_kv, threads, quick)
    print(f"KV cache on {TEXT.name}, {kv['tokens']} tokens, chunks of 32, SmolLM2 "
          f"(fp16 reference size {kv['fp16']} bytes/token):")
    print()
    print("| cache | bytes/token | vs fp16 | vs fp16, long-run (formula) | perplexity "
          "| vs fp32 cache | top-1 agreement |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| fp32 (reference) | {kv['ref_bytes']:.0f} | {kv['ref_bytes'] / kv['fp16']:.1%} "
          f"| 200.0% | {kv['ref_ppl']:.3f} | — | 100.0% |")
    for label, r in kv["rows"].items():
        print(f"| {label} | {r['bytes']:.0f} | {r['ratio']:.1%} | {r['steady']:.1%} "
              f"| {r['ppl']:.3f} | {r['dppl']:+.2%} | {r['top1']:.2%} |")
    print()
    for label, r in kv["rows"].items():
        print(f"- {label}: `{r['config']}`")


if __name__ == "__main__":
    sys.exit(main())
