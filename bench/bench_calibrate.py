"""Calibration of the replica tolerance: how far honest kernel classes differ, per token row.

Run: `.venv/bin/python -m bench.bench_calibrate [--quick] [--write]`. Prints markdown tables;
`--write` rewrites `hive_core/trust/calibration.py` with the figures.

On the real SmolLM2 (the route's remote layers 1-29 and its two halves), for a few prompts, it
runs the prefill and greedy decode steps in every kernel class this machine can compute in:
dense float32 and bfloat16 torch, our kernel's AVX-512, AVX2 and portable builds on packed
weights, torch's int4 kernel on packed weights, each at 1 and 2 threads, and the same again
in a child process with torch's CPU dispatch held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`).
Inputs are the float32 reference's own hidden states, so every class computes on identical
inputs. It reports, per pair of kernel families, the largest per-row relative L2 difference
between two classes running the same steps (MEASURED: replicas compared step by step) and
between a class's steps and any class's one-prefill recomputation (AUDIT: end-of-session
audits); it also checks that one class run twice gives identical bits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hive_core.base.stage import Stage
from hive_core.exec.kernel import kernel_class, load_stages, native_path
from hive_core.model.chat import prompt_ids
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.locate import resolve_model_path
from hive_core.model.tokenizer import GGUFTokenizer
from hive_core.trust import parse_class, row_errors

PROMPTS = ("What is the capital of France?",
           "Write a haiku about the sea at night.",
           "My PIN is 4821 and my name is Ada Lovelace. Remember them.",
           "List three prime numbers larger than 100 and explain why they are prime.")
SPAN = Stage(1, 29)
STAGES = (Stage(1, 29), Stage(1, 15), Stage(15, 29))
SAFETY = 8.0
OUT = Path(__file__).resolve().parents[1] / "hive_core" / "trust" / "calibration.py"


def inputs(file: GGUFModelFile, n_new: int, prompts: tuple[str, ...]) -> list[list[np.ndarray]]:
    """Per prompt: the layer-1 inputs (the output of layer 0) of the prefill and of each
    decode step of a float32 greedy run."""
    tok = GGUFTokenizer(file)
    ref = ShardExecutor.load(file, [Stage(0, 30)], embed=True, head=True)
    out = []
    for text in prompts:
        ids = prompt_ids(file, tok, text)
        caches = ref.new_caches(kv_factory("fp32"))
        steps, pos, feed = [], 0, ids
        with torch.inference_mode():
            for _ in range(n_new + 1):
                h0 = ref.run_stage(Stage(0, 1), ref.embed(torch.tensor(feed)), pos,
                                   {0: caches[0]})
                steps.append(h0.numpy().copy())
                h = ref.run_stage(Stage(1, 30), h0, pos, {k: caches[k] for k in range(1, 30)})
                pos += len(feed)
                feed = [int(ref.head(h[-1:]).argmax())]
        out.append(steps)
    return out


def run_class(ex: ShardExecutor, threads: int, stage: Stage,
              steps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The stage's outputs step by step, and the same inputs as one prefill."""
    torch.set_num_threads(threads)
    with torch.inference_mode():
        caches = ex.new_caches(kv_factory("fp32"))
        rows, pos = [], 0
        for x in steps:
            rows.append(ex.run_stage(stage, torch.from_numpy(x), pos,
                                     {k: caches[k] for k in stage.layers}).numpy().copy())
            pos += x.shape[0]
        caches = ex.new_caches(kv_factory("fp32"))
        whole = ex.run_stage(stage, torch.from_numpy(np.concatenate(steps)), 0,
                             {k: caches[k] for k in stage.layers}).numpy().copy()
    return np.concatenate(rows), whole


def classes_here(quick: bool) -> list[tuple[str, str | None]]:
    """(weights, packed path) pairs this process can compute in."""
    out: list[tuple[str, str | None]] = [("fp32", None), ("bf16", None)]
    here = native_path()
    if here != "int4":
        out += [("packed", p) for p in ("avx512", "avx2", "portable")
                if p != "avx512" or here == "avx512"]
    out.append(("packed", "int4"))
    return out[:3] if quick else out


def measure(file: GGUFModelFile, data: list[list[np.ndarray]], quick: bool) -> dict[str, Any]:
    """Outputs of every class here: {label: {stage: {prompt: (steps, prefill)}}}."""
    results: dict[str, Any] = {}
    stages = STAGES[:1] if quick else STAGES
    for weights, path in classes_here(quick):
        ex = load_stages(file, [SPAN], weights, path)
        for threads in (1,) if quick else (1, 2):
            label = kernel_class(weights, path, threads)
            per: dict[str, Any] = {}
            for stage in stages:
                per[str(stage)] = [run_class(ex, threads, stage, steps) for steps in data]
            results[label] = per
            again = run_class(ex, threads, stages[0], data[0])[0]
            if again.tobytes() != per[str(stages[0])][0][0].tobytes():
                raise SystemExit(f"{label} is not deterministic: two runs differ")
            print(f"  {label}: done", file=sys.stderr, flush=True)
        del ex
    return results


def child_outputs(args: argparse.Namespace) -> dict[str, Any]:
    """The same measurements in a child process whose torch dispatches to AVX2 only."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "child.npz"
        cmd = [sys.executable, "-m", "bench.bench_calibrate", "--child", str(out),
               "--n-new", str(args.n_new)] + (["--quick"] if args.quick else [])
        env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
        subprocess.run(cmd, check=True, env=env, cwd=Path(__file__).resolve().parents[1])
        flat = dict(np.load(out))
    results: dict[str, Any] = {}
    for key, arr in flat.items():
        label, stage, k, kind = key.split("|")
        slot = results.setdefault(label, {}).setdefault(stage, {})
        slot.setdefault(int(k), [None, None])[0 if kind == "steps" else 1] = arr
    return {lab: {st: [tuple(v[k]) for k in sorted(v)] for st, v in per.items()}
            for lab, per in results.items()}


def summarise(results: dict[str, Any]) -> tuple[dict[tuple[str, str], float],
                                                  dict[tuple[str, str], float]]:
    measured: dict[tuple[str, str], float] = {}
    audit: dict[tuple[str, str], float] = {}
    labels = sorted(results)
    for a, b in itertools.product(labels, labels):
        fa, fb = parse_class(a).family, parse_class(b).family
        pair = (min(fa, fb), max(fa, fb))
        if {fa, fb} == {"bf16"} or "bf16" not in (fa, fb):
            for stage in results[a]:
                for (sa, _), (sb, pb) in zip(results[a][stage], results[b][stage], strict=True):
                    if a < b:
                        measured[pair] = max(measured.get(pair, 0.0),
                                             float(row_errors(sa, sb).max()))
                    audit[pair] = max(audit.get(pair, 0.0), float(row_errors(sa, pb).max()))
    return measured, audit


def write(measured: dict[tuple[str, str], float], audit: dict[tuple[str, str], float],
          note: str) -> None:
    def table(d: dict[tuple[str, str], float]) -> str:
        return "".join(f"    {k!r}: {v:.2e},\n" for k, v in sorted(d.items()))

    note = "\n".join(textwrap.wrap(note, 92))
    OUT.write_text(f'''"""Measured honest per-row differences between kernel families (``python -m bench calibrate``).

Each figure is the largest per-row relative L2 difference the bench saw between honest
outputs of two kernel classes of those families: MEASURED between two classes running the
same steps (replicas compared step by step), AUDIT between a class's steps and a one-prefill
recomputation of the same inputs in any class (end-of-session audits). The tolerances allow
SAFETY times them (`hive_core.trust.kernels`).
{note}
"""

from __future__ import annotations

SAFETY = {SAFETY}  # tolerance = SAFETY x the largest honest difference measured
MEASURED: dict[tuple[str, str], float] = {{
{table(measured)}}}
AUDIT: dict[tuple[str, str], float] = {{
{table(audit)}}}
''')


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one prompt, three classes")
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUT.name}")
    parser.add_argument("--n-new", type=int, default=16, help="decode steps per prompt")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    file = GGUFModelFile(resolve_model_path(args.model))
    prompts = PROMPTS[:1] if args.quick else PROMPTS
    data = inputs(file, 4 if args.quick else args.n_new, prompts)
    results = measure(file, data, args.quick)
    if args.child:
        np.savez(args.child, **{f"{lab}|{st}|{k}|{kind}": arr
                                for lab, per in results.items() for st, runs in per.items()
                                for k, pair in enumerate(runs)
                                for kind, arr in zip(("steps", "prefill"), pair, strict=True)})
        return 0
    results.update(child_outputs(args))
    measured, audit = summarise(results)
    rows = sum(r.shape[0] for r in (results[next(iter(results))][str(SPAN)][k][0]
                                    for k in range(len(prompts))))
    print(f"## Honest per-row differences ({len(results)} kernel classes, {len(prompts)} prompts, "
          f"{rows} rows each, stages {', '.join(str(s) for s in STAGES[:1 if args.quick else 3])})\n")
    print(f"| families | replicas (MEASURED) | audit (AUDIT) | tolerance (x{SAFETY:g}) |")
    print("|---|---|---|---|")
    for pair in sorted(set(measured) | set(audit)):
        m, a = measured.get(pair, 0.0), audit.get(pair, 0.0)
        print(f"| {pair[0]} / {pair[1]} | {m:.2e} | {a:.2e} | {SAFETY * m:.1e} / {SAFETY * a:.1e} |")
    print("\nclasses: " + ", ".join(sorted(results)))
    print(json.dumps({"measured": {"/".join(k): v for k, v in measured.items()},
                      "audit": {"/".join(k): v for k, v in audit.items()}}))
    if args.write and not args.quick:
        write(measured, audit, f"Measured on {len(prompts)} prompts, {rows} rows each, in "
              f"{len(results)} classes: " + ", ".join(sorted(results)) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
