"""Real model formats and shapes, ours against llama.cpp: decode and prefill tok/s, load time
and peak RSS on the same GGUF file and thread count, for SmolLM2 in each format our quantiser
writes (and the bundled file) and for a Llama-3-8B Q4_K_M shape; that shape on a 4-node
loopback hive against one process; and a Llama-3-70B layer prefix's time per layer per token,
with what it implies for 80 layers over 4 and 8 nodes (derived, beside published figures).

Model files are written once into --models-dir (default $CADENCIA_BENCH_MODELS, else
/work/models if it exists, else the user cache), never into the repository: `cadencia model
quantize` for the SmolLM2 formats, `cadencia model synth` (random weights, published shapes)
for the Llama files. Each measurement runs in a subprocess of its own, so its peak RSS is its
own. Usage: ``python -m bench.bench_models [--quick] [--threads 2] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "cadencia"]
ROOT = Path(__file__).resolve().parents[1]
SMOL_TYPES = ("Q4_0", "Q8_0", "Q4_K_M", "Q5_K_M", "Q6_K")
PROMPT = ("The hive shards a transformer across phones and home computers. Each node serves a "
          "few layers, checks every tensor it receives and is paid in credits for its work. ")
# Published figures, quoted as their authors state them (not measured here).
PRIMA_70B_MS = 674  # prima.cpp: Llama-3-70B, ms per token on 4 home devices over Wi-Fi
PETALS_70B_TPS = 6  # Petals: Llama-2-70B, "up to 6 tokens/s"
TARGET_DECODE, TARGET_HIVE, TARGET_LOAD = 0.9, 0.9, 2.0  # of llama.cpp's, of local, x llama.cpp


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _ids(n: int, vocab: int) -> list[int]:
    """The same `n` token ids for every engine (what they are does not change the work)."""
    return [100 + (i * 7919) % min(vocab - 200, 30000) for i in range(n)]


def _argmax(row: Any) -> int:
    import numpy as np

    return int(np.argmax(np.asarray(row, dtype=np.float32).reshape(-1)))


def _ours(path: str, prefill: int, decode: int, threads: int) -> dict[str, Any]:
    """Load the whole model packed (`cadencia generate`'s path), prefill, decode greedily."""
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.packed_run import chunked, prepare_compute
    from hive_core.model.pipeline import LocalPipeline

    prepare_compute(threads)
    t0 = time.perf_counter()
    file = GGUFModelFile(path)
    pipe = LocalPipeline.load_single(file, weights="packed")
    load_s = time.perf_counter() - t0
    session = pipe.new_session(kv_factory("fp32"))
    ids = _ids(prefill, file.config.vocab_size)
    t1 = time.perf_counter()
    token = _argmax(chunked(session.forward)(ids).numpy())
    t2 = time.perf_counter()
    for _ in range(decode):
        token = _argmax(session.forward([token]).numpy())
    t3 = time.perf_counter()
    head = pipe.client.weights.head
    return {"load_s": load_s, "prefill_tps": prefill / (t2 - t1), "decode_tps": decode / (t3 - t2),
            "head": type(head.output).__name__ if head is not None else ""}


def _llama_cpp(path: str, prefill: int, decode: int, threads: int) -> dict[str, Any]:
    """llama.cpp (llama-cpp-python, the `bench` extra) on the same file, ids and threads."""
    import llama_cpp
    import numpy as np

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=prefill + decode + 16, n_batch=512,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def greedy() -> int:
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return _argmax(np.ctypeslib.as_array(row, shape=(n_vocab,)))

    t1 = time.perf_counter()
    llm.eval(_ids(prefill, n_vocab))
    token = greedy()
    t2 = time.perf_counter()
    for _ in range(decode):
        llm.eval([token])
        token = greedy()
    t3 = time.perf_counter()
    return {"load_s": load_s, "prefill_tps": prefill / (t2 - t1), "decode_tps": decode / (t3 - t2)}


def _layers(path: str, tokens: int, threads: int) -> dict[str, Any]:
    """Every layer of `path` (a layer prefix) as one node holds them: ms per layer per token,
    decoding after a 16-position prompt, median over `tokens` steps."""
    import torch

    from hive_core.base.stage import Stage
    from hive_core.model.executor import ShardExecutor
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.packed_run import prepare_compute

    prepare_compute(threads)
    file = GGUFModelFile(path)
    n, hidden = file.config.n_layers, file.config.hidden
    t0 = time.perf_counter()
    stage = Stage(0, n)
    ex = ShardExecutor.load(file, [stage], weights="packed")
    load_s = time.perf_counter() - t0
    caches = ex.new_caches(kv_factory("fp32"))
    gen = torch.Generator().manual_seed(0)
    steps = []
    with torch.inference_mode():
        ex.run_stage(stage, torch.randn(16, hidden, generator=gen), 0, caches)
        for i in range(tokens):
            x = torch.randn(1, hidden, generator=gen)
            t = time.perf_counter()
            ex.run_stage(stage, x, 16 + i, caches)
            steps.append(time.perf_counter() - t)
    steps.sort()
    return {"layers": n, "load_s": load_s, "ms_per_layer": steps[len(steps) // 2] / n * 1e3,
            "layer_mb": ex.weights.nbytes() / n / 1e6}


def worker(args: argparse.Namespace) -> None:
    kind, path = args.worker, args.file
    try:
        if kind == "ours":
            res = _ours(path, args.prefill, args.decode, args.threads)
        elif kind == "llama.cpp":
            res = _llama_cpp(path, args.prefill, args.decode, args.threads)
        else:
            res = _layers(path, args.decode, args.threads)
    except ImportError as exc:
        res = {"skipped": f"not installed ({exc.name})"}
    res["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(res))


def run_worker(kind: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_models", "--worker", kind, "--file", str(path),
           "--threads", str(args.threads), "--prefill", str(args.prefill), "--decode",
           str(args.decode)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:160]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _cli(*args: str, timeout: float = 3600) -> dict[str, Any]:
    proc = subprocess.run([*CLI, *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:160]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _vm_mb(pid: int, field: str) -> float:
    """A live process's VmHWM (peak RSS) or VmRSS, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def hive_vs_local(path: Path, nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    """`generate` alone against `hive up --nodes N --stages N` and `ask` on loopback, both
    with --threads T: one answer passes the nodes in turn, so each node may use every core."""
    import psutil

    decode, threads = str(args.decode), str(args.threads)
    local = _cli("generate", PROMPT, "--raw", "--model", str(path), "--max-new-tokens", decode,
                 "--threads", threads, "--json")
    with tempfile.TemporaryDirectory() as data:
        up = subprocess.Popen([*CLI, "hive", "up", "--nodes", str(nodes), "--stages", str(nodes),
                               "--model", str(path), "--threads", threads, "--json",
                               "--no-world", "--tflops", "1", "--data-dir", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              cwd=ROOT)
        try:
            assert up.stdout is not None
            summary = json.loads(up.stdout.readline() or "{}")
            if "sentinel" not in summary:
                return {"local": local, "error": "hive up did not start"}
            asked = _cli("ask", PROMPT, "--raw", "--hive", summary["sentinel"], "--model",
                         str(path), "--max-new-tokens", decode, "--threads", threads, "--json",
                         "--timeout", "120")
            servers = [p for p in psutil.Process(up.pid).children() if "--serve" in p.cmdline()]
            time.sleep(2)  # the session's end reaches the nodes
            peaks = [_vm_mb(p.pid, "VmHWM") for p in servers]
            after = [_vm_mb(p.pid, "VmRSS") for p in servers]
        finally:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=120)
    return {"local": local, "hive": asked, "node_peak_rss_mb": peaks, "node_rss_after_mb": after}


def prepare(models: Path, args: argparse.Namespace) -> dict[str, Path]:
    """The bench's model files, written the first time."""
    from hive_core.model.locate import resolve_model_path

    models.mkdir(parents=True, exist_ok=True)
    bundled = resolve_model_path(None)
    files = {f"SmolLM2 {bundled.stem.rsplit('.', 1)[-1]} (bundled)": bundled}
    for t in SMOL_TYPES[:2] if args.quick else SMOL_TYPES:
        out = models / f"smollm2-135m-{t.lower()}.gguf"
        if not out.exists():
            print(f"writing {out.name} ...", file=sys.stderr, flush=True)
            _cli("model", "quantize", str(bundled), str(out), "--type", t, "--json")
        files[f"SmolLM2 {t}"] = out
    if not args.quick:
        for key, name, extra in (("8b", "llama3-8b-q4km.gguf", []),
                                 ("70b", "llama3-70b-2layers-q4km.gguf", ["--layers", "2"])):
            out = models / name
            if not out.exists():
                print(f"writing {out.name} (random weights) ...", file=sys.stderr, flush=True)
                shape = "llama3-8b" if key == "8b" else "llama3-70b"
                _cli("model", "synth", str(out), "--shape", shape, "--type", "Q4_K_M", *extra,
                     "--json")
            files[key] = out
    return files


def _default_models_dir() -> Path:
    env = os.environ.get("CADENCIA_BENCH_MODELS")
    if env:
        return Path(env)
    if Path("/work/models").is_dir():
        return Path("/work/models")
    import platformdirs

    return Path(platformdirs.user_cache_dir("cadencia", appauthor=False)) / "bench-models"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: two SmolLM2 formats, few tokens, no Llama shapes")
    p.add_argument("--threads", type=int, default=2, help="threads of every engine (default 2)")
    p.add_argument("--prefill", type=int, default=None, help="prompt tokens (default 128)")
    p.add_argument("--decode", type=int, default=None, help="tokens decoded (default 32)")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="where the model files are written (default: $CADENCIA_BENCH_MODELS, "
                        "else /work/models, else the user cache)")
    p.add_argument("--no-hive", action="store_true", help="skip the loopback hive")
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.prefill = args.prefill or (16 if args.quick else 128)
    args.decode = args.decode or (4 if args.quick else 32)
    if args.worker:
        worker(args)
        return 0
    files = prepare(args.models_dir or _default_models_dir(), args)
    rows: dict[str, Any] = {}
    for name, path in files.items():
        if name == "70b":
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows[name] = {"file_mb": path.stat().st_size / 1e6, "ours": run_worker("ours", path, args),
                      "llama.cpp": run_worker("llama.cpp", path, args)}
    hive = None
    if "8b" in files and not args.no_hive:
        print("running the 8B shape on a 4-node loopback hive ...", file=sys.stderr, flush=True)
        hive = hive_vs_local(files["8b"], 4, args)
    layers = run_worker("layers", files["70b"], args) if "70b" in files else None
    results = {"threads": args.threads, "prefill": args.prefill, "decode": args.decode,
               "load_avg": os.getloadavg()[0], "rows": rows, "hive": hive, "layers_70b": layers}
    if args.json:
        print(json.dumps(results))
    else:
        print(report(results))
    return 0


def _n(x: Any, fmt: str = ".1f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def report(res: dict[str, Any]) -> str:
    """The results as markdown: one table of files, the hive, the 70B prefix, the targets."""
    out = [(f"threads {res['threads']}, prefill {res['prefill']} tokens, decode {res['decode']} "
           f"tokens (greedy), one process per run; load average {res['load_avg']:.2f} at the "
           "end\n"),
           ("| model | file MB | decode tok/s ours / llama.cpp | ratio | prefill tok/s ours / "
           "llama.cpp | load s ours / llama.cpp | peak RSS MB ours / llama.cpp |"),
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    misses = []
    for name, row in res["rows"].items():
        o, c = row["ours"], row["llama.cpp"]
        label = "Llama-3-8B shape Q4_K_M" if name == "8b" else name
        if "decode_tps" not in o:
            out.append(f"| {label} | {row['file_mb']:.0f} | {o.get('error') or o.get('skipped')} "
                       "| | | | |")
            continue
        ratio, load = _ratio(o["decode_tps"], c.get("decode_tps")), _ratio(o["load_s"], c.get("load_s"))
        out.append(f"| {label} | {row['file_mb']:.0f} | {o['decode_tps']:.2f} / "
                   f"{_n(c.get('decode_tps'), '.2f')} | {_n(ratio, '.2f')} | "
                   f"{o['prefill_tps']:.1f} / {_n(c.get('prefill_tps'))} | {o['load_s']:.2f} / "
                   f"{_n(c.get('load_s'), '.2f')} | {o['peak_rss_mb']:.0f} / "
                   f"{_n(c.get('peak_rss_mb'), '.0f')} |")
        if ratio is not None and ratio < TARGET_DECODE:
            misses.append(f"decode on {label}: {ratio:.0%} of llama.cpp's (target "
                          f"{TARGET_DECODE:.0%})")
        if load is not None and load > TARGET_LOAD:
            misses.append(f"load of {label}: {load:.1f}x llama.cpp's (target at most "
                          f"{TARGET_LOAD:g}x)")
    hive = res.get("hive")
    hop_ms = None
    if hive:
        local, asked = hive["local"], hive.get("hive", {})
        ratio = _ratio(asked.get("tokens_per_s"), local.get("tokens_per_s"))
        stages = len(asked.get("route", [])) or 4
        if ratio:  # what each stage adds to a token (a faster hive, within noise, adds none)
            hop_ms = max(0.0, (1e3 / asked["tokens_per_s"] - 1e3 / local["tokens_per_s"]) / stages)
        out += ["", ("Llama-3-8B shape, one process (`generate`) against a 4-node loopback hive "
                "(`hive up --nodes 4 --stages 4`, `ask`; each node on every core):\n"),
                "| run | decode tok/s | first token s | RSS MB per node: peak (after the answer) |",
                "| --- | ---: | ---: | --- |",
                (f"| local | {_n(local.get('tokens_per_s'), '.2f')} | {_n(local.get('ttft_s'), '.2f')} "
                "| |"),
                (f"| hive (4 nodes) | {_n(asked.get('tokens_per_s'), '.2f')} | "
                f"{_n(asked.get('ttft_s'), '.2f')} | "
                + " ".join(f"{m:.0f} ({a:.0f})" for m, a in zip(
                    hive.get("node_peak_rss_mb", []), hive.get("node_rss_after_mb", []),
                    strict=False)) + " |"),
                (f"\nhive / local: {_n(ratio, '.2f')}; per stage the hive adds "
                f"{_n(hop_ms, '.1f')} ms a token")]
        if ratio is not None and ratio < TARGET_HIVE:
            misses.append(f"the 4-node hive: {ratio:.0%} of local (target {TARGET_HIVE:.0%})")
    layers = res.get("layers_70b")
    if layers and "ms_per_layer" in layers:
        ms, hop = layers["ms_per_layer"], hop_ms or 0.0
        out += ["", (f"Llama-3-70B shape, a {layers['layers']}-layer prefix on this machine: "
                f"{ms:.1f} ms per layer per token ({layers['layer_mb']:.0f} MB a layer).\n"),
                "| 80 layers over | per token ms (derived) | tok/s (derived) | each node holds |",
                "| --- | ---: | ---: | ---: |"]
        for n in (4, 8):
            per_token = 80 * ms + n * hop
            out.append(f"| {n} nodes like this one | {per_token:.0f} | {1e3 / per_token:.2f} | "
                       f"{80 / n * layers['layer_mb'] / 1e3:.1f} GB |")
        out += [(f"\nDerived, not measured: 80 x the measured time per layer (a token passes "
                f"every layer in turn, whatever the node count) plus each stage's hop as "
                f"measured on the 8B hive ({hop:.1f} ms). Published, for scale: prima.cpp "
                f"{PRIMA_70B_MS} ms/token for Llama-3-70B on 4 home devices over Wi-Fi; Petals "
                f"up to {PETALS_70B_TPS} tok/s for Llama-2-70B.")]
    out += ["", "targets: " + ("all met" if not misses else "missed: " + "; ".join(misses))]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
