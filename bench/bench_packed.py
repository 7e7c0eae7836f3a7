"""Packed vs float32 vs transformers (vs llama.cpp when installed): decode and prefill tok/s,
peak RSS, the packed path's agreement with float32, one call of each kernel, and one call of
our kernel per block format.

Each variant runs in a subprocess of its own so its peak RSS is its own. Usage:
``python -m bench.bench_packed [--quick] [--threads 2] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("torch", "base", "packed", "packed-worker", "packed-int4", "fp32", "bf16",
            "transformers", "llama.cpp")
LABELS = {
    "torch": "`import torch` alone",
    "base": "base (torch + GGUF + tokenizer, no weights)",
    "packed-worker": "packed, loaded on the main thread, run on a worker thread",
    "packed-int4": "packed on torch's int4 kernel (`CADENCIA_NATIVE=0`)",
}
PROMPT = (
    "The hive shards a transformer across phones and home computers. Each node serves a few "
    "layers, checks every tensor it receives and is paid in credits for the work it does. "
)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _prompt_ids(tokenizer: Any, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(PROMPT)
    return ids[:n]


def _greedy(logits: Any) -> int:
    """The greedy token, the way every variant picks it (numpy's argmax, as llama.cpp's row
    and our sampler do; torch's argmax is many times slower over 49k logits)."""
    import numpy as np

    return int(np.argmax(logits.detach().float().reshape(-1).numpy()))


def _base() -> dict[str, Any]:
    """What every variant of ours pays before weights: torch, the opened GGUF, the tokenizer."""
    import torch  # noqa: F401

    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.tokenizer import GGUFTokenizer

    GGUFTokenizer(GGUFModelFile(resolve_model_path(None)))
    return {}


def _ours(mode: str, prefill: int, decode: int, *, on_worker: bool = False) -> dict[str, Any]:
    """Load, then prefill and decode; `on_worker`: the two run on another thread than the load
    (two threads of one process driving torch's OpenMP threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.packed_run import chunked
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    t0 = time.perf_counter()
    file = GGUFModelFile(resolve_model_path(None))
    tok = GGUFTokenizer(file)
    pipe = LocalPipeline.load_single(file, weights=mode)
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(tok, prefill)

    def run() -> tuple[float, float, float]:
        session = pipe.new_session(kv_factory("fp32"))
        t1 = time.perf_counter()
        logits = chunked(session.forward)(ids)
        t2 = time.perf_counter()
        token = _greedy(logits)
        for _ in range(decode):
            token = _greedy(session.forward([token]))
        return t1, t2, time.perf_counter()

    if on_worker:
        with ThreadPoolExecutor(1) as pool:
            t1, t2, t3 = pool.submit(run).result()
    else:
        t1, t2, t3 = run()
    from hive_core.model.packed import BlockLinear, PackedLinear, unfused

    q = unfused(pipe.hops[0][0].weights.attention[0].q)
    kernel = ("our kernel" if isinstance(q, BlockLinear)
              else "torch int4" if isinstance(q, PackedLinear) else "")
    return {"load_s": load_s, "prefill_tps": prefill / (t2 - t1), "decode_tps": decode / (t3 - t2),
            "weights_mb": pipe.client.weights.nbytes() / 1e6, "kernel": kernel}


def _transformers(prefill: int, decode: int) -> dict[str, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import transformers

    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.tokenizer import GGUFTokenizer

    path = resolve_model_path(None)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    load_s = time.perf_counter() - t0
    ids = _prompt_ids(GGUFTokenizer(GGUFModelFile(path)), prefill)
    with torch.inference_mode():
        t1 = time.perf_counter()
        out = model(torch.tensor([ids]), use_cache=True)
        t2 = time.perf_counter()
        past = out.past_key_values
        token = _greedy(out.logits[0, -1])
        for _ in range(decode):
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = _greedy(out.logits[0, -1])
        t3 = time.perf_counter()
    return {"load_s": load_s, "prefill_tps": prefill / (t2 - t1), "decode_tps": decode / (t3 - t2)}


def _llama_cpp(prefill: int, decode: int, threads: int) -> dict[str, Any]:
    """llama.cpp (llama-cpp-python) on the same GGUF and prompt ids: greedy decode with
    `threads` threads for prefill and decode alike, f16 KV (its default)."""
    import llama_cpp  # optional: the `bench` extra, built by ./setup.sh --bench
    import numpy as np

    from hive_core.model.locate import resolve_model_path

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(resolve_model_path(None)),
                          n_ctx=max(512, prefill + decode + 8), n_batch=512, n_threads=threads,
                          n_threads_batch=threads, logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0
    # Its own tokenizer gives our tokenizer's ids for PROMPT and keeps ours out of its RSS.
    text = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    ids = (text * (prefill // len(text) + 1))[:prefill]
    n_vocab = llm.n_vocab()

    def greedy() -> int:
        # Without logits_all, Llama.eval keeps no scores: read the last row from the context.
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return int(np.ctypeslib.as_array(row, shape=(n_vocab,)).argmax())

    t1 = time.perf_counter()
    llm.eval(ids)
    t2 = time.perf_counter()
    token = greedy()
    for _ in range(decode):
        llm.eval([token])
        token = greedy()
    t3 = time.perf_counter()
    return {"load_s": load_s, "prefill_tps": prefill / (t2 - t1), "decode_tps": decode / (t3 - t2)}


def _quality(tokens: int) -> dict[str, Any]:
    """Packed against float32: teacher-forced top-1 agreement and logit differences over
    `tokens` tokens, and greedy continuations of the project's fixed prompts."""

    from hive_core.model.fixed_prompts import fixed_prompts
    from hive_core.model.generation import generate
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(resolve_model_path(None))
    tok = GGUFTokenizer(file)
    # Varied text (prose and code: this package's sources), not the repeated bench prompt,
    # whose easy predictions would hide near-ties.
    src = Path(__file__).resolve().parents[1] / "hive_core" / "model"
    text = "".join((src / n).read_text(encoding="utf-8")
                   for n in ("ops.py", "tokenizer/core.py", "kv/int4.py"))
    ids = tok.encode(text)[:tokens]
    prompts = [tok.encode(p) for p in fixed_prompts(file, tok)]
    forced, greedy = {}, {}
    for mode in ("fp32", "packed"):
        pipe = LocalPipeline.load_single(file, weights=mode)
        forced[mode] = pipe.new_session(kv_factory("fp32")).forward(ids, all_logits=True)
        greedy[mode] = [generate(pipe.new_session(kv_factory("fp32")).forward, p, max_new_tokens=32,
                                 context_length=file.config.context_length).new_ids for p in prompts]
        if mode == "packed":
            head_sigmas = _head_errors(pipe, ids)
        del pipe
    ref, got = forced["fp32"], forced["packed"]
    chosen = ref.argmax(-1, keepdim=True)
    near = ref >= ref.amax(-1, keepdim=True) - 1.0
    diff = (got - ref).abs()
    same = sum(a == b for a, b in zip(greedy["fp32"], greedy["packed"], strict=True))
    return {"tokens": len(ids), "top1": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
            "top_logit_diff": float((got.gather(1, chosen) - ref.gather(1, chosen)).abs().max()),
            "near_top_diff": float(diff[near].max()), "max_logit_diff": float(diff.max()),
            "mean_logit_diff": float(diff.mean()), "ref_logit_std": float(ref.std()),
            "greedy_same": same, "greedy_prompts": len(prompts), **head_sigmas}


def _head_errors(pipe: Any, ids: list[int]) -> dict[str, Any]:
    """The packed LM head's int4 errors on the text's final hidden states, in the standard
    deviations its rescoring assumes (it allows `sigmas` of them); nothing where the head is
    our kernel's exact product of the file's blocks."""
    import torch

    from hive_core.model import ops
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.packed import RescoredHead

    ex, stage = pipe.hops[0]
    head = pipe.client.weights.head
    if not isinstance(head.output, RescoredHead):
        return {"head": type(head.output).__name__}
    with torch.inference_mode():
        h = ex.run_stage(stage, pipe.client.embed(torch.tensor(ids)), 0, ex.new_caches(kv_factory("fp32")))
        z = head.output.errors_in_sigmas(ops.rms_norm(h, head.norm, pipe.config.rms_eps))
    return {"head_max_sigmas": float(z.max()), "head_logits": z.numel(),
            "head_allowed_sigmas": head.output.sigmas}


def _kernel(reps: int) -> dict[str, Any]:
    """Microseconds per call on one layer's up projection (1536 x 576) for 1, 2, 3 and 8
    input rows: our block kernel on Q4_1 blocks (float32 in and out), one torch int4 kernel
    call (bfloat16; the exact product takes three) and float32 `F.linear`. The same matrix
    again and again, so from cache: kernel speed, not memory speed."""
    import gguf
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hive_core.model.packed import block_matrix, native_kernel

    n, k = 1536, 576
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes, 2)
    scales = torch.randn(k // 32, n, 2).to(torch.bfloat16)
    dense = torch.randn(n, k)
    blocks = gguf.quantize(dense.numpy().astype(np.float32), gguf.GGMLQuantizationType.Q4_1)
    kernel = native_kernel()
    ours = block_matrix(blocks, "Q4_1", (n, k), kernel) if kernel is not None else None

    def timed(fn: Any) -> float:
        return _timed(fn, reps)

    out: dict[str, Any] = {"shape": [n, k], "rows": {}}
    for m in (1, 2, 3, 8):
        xb, xf = torch.randn(m, k).to(torch.bfloat16), torch.randn(m, k)
        out["rows"][str(m)] = {
            "ours_us": timed(lambda xf=xf: ours(xf)) if ours is not None else None,
            "int4_us": timed(lambda xb=xb: torch._weight_int4pack_mm_for_cpu(xb, packed, 32, scales)),
            "fp32_us": timed(lambda xf=xf: F.linear(xf, dense))}
    out["formats"] = _formats(kernel, reps) if kernel is not None else {}
    return out


def _timed(fn: Any, reps: int) -> float:
    """Microseconds per call of `fn`, after a tenth as many calls to warm up."""
    for _ in range(reps // 10):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e6


def _formats(kernel: Any, reps: int) -> dict[str, Any]:
    """Microseconds per call of our kernel on a 1536 x 1536 matrix (a width every format takes)
    of each block format, valid random blocks, for 1 and 4 input rows; float32 `F.linear` on
    the same shape last. From cache, like `_kernel`."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from hive_core import native
    from hive_core.model.packed import FORMATS, block_matrix

    n = k = 1536
    rng = np.random.default_rng(0)
    xs = {m: torch.randn(m, k) for m in (1, 4)}
    ops = native.ops()
    out: dict[str, Any] = {"shape": [n, k], "path": native.PATHS.get(int(ops.simd())) if ops else "?"}
    for name, f in FORMATS.items():
        blocks = rng.integers(0, 256, (n, k // f.values, f.nbytes), dtype=np.uint8)
        scales = (rng.standard_normal((n, k // f.values, f.halves)) * 0.01).astype(np.float16)
        blocks[..., f.halves_at : f.halves_at + 2 * f.halves] = scales.view(np.uint8)
        lin = block_matrix(blocks.reshape(n, -1), name, (n, k), kernel)
        out[name] = {str(m): _timed(lambda x=x, lin=lin: lin(x), reps) for m, x in xs.items()}
    dense = torch.randn(n, k)
    out["fp32"] = {str(m): _timed(lambda x=x: F.linear(x, dense), reps) for m, x in xs.items()}
    return out


def worker(args: argparse.Namespace) -> None:
    if args.worker != "llama.cpp":  # it sets its own threads; torch would inflate its RSS
        from hive_core.model.packed_run import prepare_compute

        prepare_compute(args.threads)
    try:
        if args.worker == "transformers":
            res = _transformers(args.prefill, args.decode)
        elif args.worker == "llama.cpp":
            res = _llama_cpp(args.prefill, args.decode, args.threads)
        elif args.worker == "torch":
            import torch  # noqa: F401

            res = {}
        elif args.worker == "base":
            res = _base()
        elif args.worker == "packed-worker":
            res = _ours("packed", args.prefill, args.decode, on_worker=True)
        elif args.worker == "packed-int4":
            from hive_core import native

            os.environ[native.DISABLE_ENV] = "0"
            res = _ours("packed", args.prefill, args.decode)
        elif args.worker == "quality":
            res = _quality(args.quality_tokens)
        elif args.worker == "kernel":
            res = _kernel(200 if args.quick else 2000)
        else:
            res = _ours(args.worker, args.prefill, args.decode)
    except ImportError as exc:
        res = {"skipped": f"not installed ({exc.name})"}
    res["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(res))


def run_worker(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_packed", "--worker", name, "--threads",
           str(args.threads), "--prefill", str(args.prefill), "--decode", str(args.decode),
           "--quality-tokens", str(args.quality_tokens)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800, cwd=root)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:120]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a fast smoke run (few tokens)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per variant (default 2)")
    p.add_argument("--prefill", type=int, default=None, help="prompt tokens (default 256)")
    p.add_argument("--decode", type=int, default=None, help="greedy tokens decoded (default 64)")
    p.add_argument("--quality-tokens", type=int, default=None,
                   help="teacher-forced tokens for top-1 agreement (default 500)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.prefill = args.prefill or (32 if args.quick else 256)
    args.decode = args.decode or (8 if args.quick else 64)
    args.quality_tokens = args.quality_tokens or (64 if args.quick else 500)
    if args.worker:
        worker(args)
        return 0
    rows = {}
    for name in args.variants.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows[name] = run_worker(name, args)
    print("running quality (packed vs fp32) ...", file=sys.stderr, flush=True)
    quality = run_worker("quality", args)
    print("running kernel timings ...", file=sys.stderr, flush=True)
    kernel = run_worker("kernel", args)
    if args.json:
        print(json.dumps({"threads": args.threads, "prefill": args.prefill, "decode": args.decode,
                          "variants": rows, "quality": quality, "kernel": kernel}))
        return 0
    print(f"threads {args.threads}, prefill {args.prefill} tokens, decode {args.decode} tokens "
          f"(greedy, fp32 KV), one subprocess per variant\n")
    print("| variant | decode tok/s | prefill tok/s | peak RSS MB | load s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in rows.items():
        label = LABELS.get(name, name)
        if name in ("torch", "base") and "peak_rss_mb" in r:
            print(f"| {label} | | | {r['peak_rss_mb']:.0f} | |")
            continue
        if "decode_tps" not in r:
            print(f"| {label} | {r.get('skipped') or r.get('error')} | | | |")
            continue
        if name == "packed" and r.get("kernel"):
            label = f"packed ({r['kernel']})"
        print(f"| {label} | {r['decode_tps']:.1f} | {r['prefill_tps']:.1f} | {r['peak_rss_mb']:.0f} "
              f"| {r['load_s']:.1f} |")
    if "top1" in quality:
        print(f"\npacked vs fp32, teacher-forced over {quality['tokens']} tokens: top-1 agreement "
              f"{quality['top1'] * 100:.2f} %, |diff| of the top logit max "
              f"{quality['top_logit_diff']:.1e}, of logits within 1 of the top max "
              f"{quality['near_top_diff']:.1e}; over the whole vocabulary max "
              f"{quality['max_logit_diff']:.3f}, mean {quality['mean_logit_diff']:.4f} (logit std "
              f"{quality['ref_logit_std']:.2f})")
        print(f"greedy 32 tokens on the {quality['greedy_prompts']} fixed prompts: "
              f"{quality['greedy_same']} of {quality['greedy_prompts']} identical to fp32")
        if "head_max_sigmas" in quality:
            print(f"int4 LM head: largest error {quality['head_max_sigmas']:.2f} standard "
                  f"deviations over {quality['head_logits']:,} logits (rescoring allows "
                  f"{quality['head_allowed_sigmas']:g})")
        else:
            print(f"LM head: {quality['head']} (float32 products of the file's blocks)")
    else:
        print(f"\nquality: {quality}")
    if "rows" in kernel:
        n, k = kernel["shape"]
        print(f"\none call on a {n}x{k} matrix from cache ({args.threads} threads), microseconds:\n")
        print("| input rows | our kernel (Q4_1, fp32) | torch int4 kernel (one bf16 call) | fp32 F.linear |")
        print("| ---: | ---: | ---: | ---: |")
        for m, t in kernel["rows"].items():
            ours = "not built" if t["ours_us"] is None else f"{t['ours_us']:.1f}"
            print(f"| {m} | {ours} | {t['int4_us']:.1f} | {t['fp32_us']:.1f} |")
        _print_formats(kernel.get("formats") or {}, args.threads)
    else:
        print(f"\nkernel timings: {kernel}")
    return 0


def _print_formats(formats: dict[str, Any], threads: int) -> None:
    if not formats:
        return
    n, k = formats["shape"]
    print(f"\nour kernel ({formats['path']} path) on a {n}x{k} matrix of each block format, "
          f"from cache ({threads} threads), microseconds:\n")
    print("| format | 1 input row | 4 input rows |")
    print("| --- | ---: | ---: |")
    for name, t in formats.items():
        if name not in ("shape", "path"):
            label = "fp32 F.linear" if name == "fp32" else name
            print(f"| {label} | {t['1']:.1f} | {t['4']:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
