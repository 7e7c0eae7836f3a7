"""Attention on a slow alpha, MLP on a fast beta: a live hive where the planner splits layers.

A hive of separate processes on loopback (a sentinel, two `cadencia node`s, `cadencia ask`):

- alpha (`--role alpha`): a phone-class device, the only one with memory for the KV cache
  of the model's whole context: its process runs in a cgroup whose CPU controller lets it
  use `--alpha-share` of one core (cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, or
  v2 `cpu.max`): a slower device for real, as `bench wan`'s UDP relay is a slower link. It
  reports that share of this machine's measured TFLOPS, as it would measure itself.
- beta (`--role beta --max-memory MB`): this machine's full core, giving the hive room for
  the MLP matrices of the layers asked but not for one whole layer with its cache, as the
  planner counts them (float32 weights, a full context's float32 KV cache, half the RAM).

The model is the random-weight Llama-3.1-8B shape (4096 wide, 14336 FFN, its 128K context,
whose KV cache is 1 GiB a layer in float32) cut to `--layers` layers, written once by
`cadencia model synth`; the asker keeps its first and last layer, the hive serves the rest.
Nodes load layers on first use: one unmeasured `ask` per planner mode makes them load their
stages before alpha is throttled (dequantising float32 weights on 15 % of a core takes
minutes, and the asker would hedge the late steps to the other node meanwhile). Then `ask`
runs twice per round with the planner free to split (`CADENCIA_PLANNER=auto`) and with
whole layers only (`CADENCIA_PLANNER=whole`: the best plan without the split, here every
layer on alpha since beta cannot hold one), unverified and unreplicated (the two nodes are
the whole hive). Each row gives the plan the planner chose, its cost-model estimate, the
measured decode rate, alpha's throttled CPU time, and whether the tokens equal `generate`'s
on the same file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_models import _default_models_dir
from bench.wan_hive import PROMPT, READY_S, ask_args, run_json, spawn, stop
from cadencia.commands.hive import HiveUpError, ready_line
from hive_core.base.stage import Part
from hive_core.exec.join import PLANNER_ENV

SHAPE = "llama3.1-8b"
ASK_TIMEOUT_S = 600.0
V1 = Path("/sys/fs/cgroup/cpu")  # cgroup v1's CPU controller (this machine)
V2 = Path("/sys/fs/cgroup")  # the unified hierarchy, where cgroup.controllers lists "cpu"


class ThrottleError(RuntimeError):
    """No CPU controller this process may create a group in."""


class CpuThrottle:
    """A cgroup whose processes share `share` of one core (period `period_us`)."""

    def __init__(self, name: str, share: float, period_us: int = 10_000) -> None:
        if not 0.01 <= share <= 1.0:
            raise ValueError(f"--alpha-share must be 0.01 to 1, got {share}")
        quota = max(1000, int(share * period_us))  # the kernel's least quota is 1 ms
        self.share = quota / period_us
        if (V1 / "cpu.cfs_quota_us").exists():
            self.path, self.version = V1 / name, 1
        elif "cpu" in _read(V2 / "cgroup.controllers").split():
            self.path, self.version = V2 / name, 2
        else:
            raise ThrottleError("no cgroup CPU controller at /sys/fs/cgroup/cpu (v1) or in "
                                "/sys/fs/cgroup/cgroup.controllers (v2)")
        try:
            self.path.mkdir(exist_ok=True)
            if self.version == 1:
                (self.path / "cpu.cfs_period_us").write_text(str(period_us))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (self.path / "cpu.max").write_text(f"{quota} {period_us}")
        except OSError as exc:
            raise ThrottleError(f"cannot set up {self.path}: {exc.strerror}") from None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self) -> float:
        """Seconds its processes have waited for their quota so far."""
        stat = dict(line.split() for line in _read(self.path / "cpu.stat").splitlines()
                    if len(line.split()) == 2)
        if self.version == 1:
            return int(stat.get("throttled_time", 0)) / 1e9
        return int(stat.get("throttled_usec", 0)) / 1e6

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass  # a process still in it: the kernel keeps the group until it leaves


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def model_file(layers: int) -> Path:
    """The random-weight Llama-3.1-8B shape cut to `layers` layers, written the first time."""
    out = _default_models_dir() / f"llama3.1-8b-{layers}layers-q4km.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"writing {out.name} (random weights) ...", file=sys.stderr, flush=True)
        import subprocess

        subprocess.run([sys.executable, "-m", "cadencia", "model", "synth", str(out), "--shape",
                        SHAPE, "--type", "Q4_K_M", "--layers", str(layers), "--json"],
                       check=True, stdout=subprocess.DEVNULL)
    return out


async def ready(proc: asyncio.subprocess.Process, what: str) -> dict[str, Any]:
    try:
        return await ready_line(proc, what, READY_S)
    except HiveUpError as exc:
        raise SystemExit(f"bench split: {exc}") from None


async def run(args: argparse.Namespace, path: Path, tflops: float,
              throttle: CpuThrottle) -> tuple[list[dict[str, Any]], dict[str, Any] | str]:
    """Start the hive, ask it `args.rounds` times per planner mode; the asks' results (with
    alpha's throttled seconds during each) and `generate`'s."""
    work = tempfile.mkdtemp(prefix="cadencia-split-")
    procs: list[asyncio.subprocess.Process] = []
    common = ["--threads", "1", "--ping-interval", "1", "--json", "--no-world",
              "--model", str(path), "--weights", args.weights]
    rows: list[dict[str, Any]] = []
    try:
        procs.append(await spawn(["sentinel", "--listen", "127.0.0.1:0", "--no-stun",
                                  "--data-dir", os.path.join(work, "sentinel"), "--json",
                                  "--no-world"]))
        url = (await ready(procs[0], "the sentinel"))["listen"]
        procs.append(await spawn(["node", "--join", url, "--role", "alpha", "--data-dir",
                                  os.path.join(work, "alpha"), "--tflops",
                                  f"{tflops * throttle.share:.5f}", *common]))
        alpha = procs[-1].pid
        procs.append(await spawn(["node", "--join", url, "--role", "beta", "--data-dir",
                                  os.path.join(work, "beta"), "--tflops", f"{tflops:.5f}",
                                  "--max-memory", str(args.beta_mb), *common]))
        ids = {"alpha": (await ready(procs[1], "alpha"))["id"],
               "beta": (await ready(procs[2], "beta"))["id"]}
        await asyncio.sleep(3.0)  # a few pings: links measured before the asker routes
        env = {"CADENCIA_DATA_DIR": os.path.join(work, "asker")}
        extra = ["--model", str(path), "--weights", args.weights, "--replicas", "1",
                 "--no-verify", "--timeout", "120"]  # a throttled alpha answers late
        for mode in ("whole", "auto"):  # the nodes load each plan's stages: not timed below
            t0 = time.perf_counter()
            got = await run_json(ask_args(url, 2, *extra), {**env, PLANNER_ENV: mode},
                                 ASK_TIMEOUT_S)
            print(f"warm-up, {mode}: {time.perf_counter() - t0:.0f} s"
                  + ("" if isinstance(got, dict) else f" ({got})"), file=sys.stderr, flush=True)
        throttle.add(alpha)  # from now on: every thread of the process, and any it starts
        for r in range(args.rounds):
            for mode in ("whole", "auto"):
                before = throttle.throttled_s()
                got = await run_json(ask_args(url, args.tokens, *extra),
                                     {**env, PLANNER_ENV: mode}, ASK_TIMEOUT_S)
                rows.append({"round": r, "mode": mode, "ask": got, "ids": ids,
                             "throttled_s": throttle.throttled_s() - before})
                print(f"round {r + 1}/{args.rounds}, {mode}: "
                      f"{got.get('tokens_per_s') if isinstance(got, dict) else got}",
                      file=sys.stderr, flush=True)
    finally:
        await stop(procs)
    local = await run_json(["generate", PROMPT, "--json", "--max-new-tokens", str(args.tokens),
                            "--threads", "1", "--model", str(path), "--weights", args.weights],
                           {}, ASK_TIMEOUT_S)
    return rows, local


def plan_text(plan: dict[str, Any], ids: dict[str, str]) -> str:
    """`alpha 1-3` / `1 attn alpha, mlp beta; 2 ...` from an ask's plan."""
    name = {v: k for k, v in ids.items()}
    parts: list[str] = []
    for st in plan.get("stages", []):
        lo, hi = st["layers"]
        who = " ".join(name.get(n, n[:8]) for n in st["nodes"])
        part = {Part.FULL: "", Part.ATTENTION: " attn", Part.MLP: " mlp"}[Part(st["part"])]
        parts.append(f"{lo}{'' if hi == lo + 1 else f'-{hi}'}{part} {who}")
    return ", ".join(parts)


def report(rows: list[dict[str, Any]], local: dict[str, Any] | str, args: argparse.Namespace,
           tflops: float, share: float) -> bool:
    """Print the table; whether the split was chosen and measured faster than whole layers."""
    ref = local.get("new_ids") if isinstance(local, dict) else None
    print("## Attention on a slow alpha, MLP on a fast beta: a live run\n")
    print("| planner | plan (hive layers: part, node) | est ms a token | decode tok/s | "
          "ms a token | alpha throttled s | tokens = generate |")
    print("|---|---|---|---|---|---|---|")
    rates: dict[str, list[float]] = {"auto": [], "whole": []}
    split_chosen = False
    for row in rows:
        got, label = row["ask"], ("free to split" if row["mode"] == "auto" else "whole layers")
        if not isinstance(got, dict):
            print(f"| {label} | failed: {got} | | | | | |")
            continue
        plan = got.get("plan") or {}
        rate = float(got.get("tokens_per_s") or 0.0)
        rates[row["mode"]].append(rate)
        if row["mode"] == "auto":
            split_chosen = any(st["part"] != Part.FULL for st in plan.get("stages", []))
        same = "n/a" if ref is None else ("yes" if got.get("new_ids") == ref else "NO")
        print(f"| {label} | {plan_text(plan, row['ids'])} | {plan.get('est_token_ms', 0):.0f} | "
              f"{rate:.2f} | {1000 / rate if rate else float('nan'):.0f} | "
              f"{row['throttled_s']:.1f} | {same} |")
    split = statistics.median(rates["auto"]) if rates["auto"] else 0.0
    whole = statistics.median(rates["whole"]) if rates["whole"] else 0.0
    pays = split_chosen and split > whole > 0
    local_rate = local.get("tokens_per_s") if isinstance(local, dict) else local
    print(f"\n{args.layers} layers of the random-weight Llama-3.1-8B shape (Q4_K_M file, 128K "
          f"context) held as {args.weights} weights by every process, {args.tokens} new tokens, one torch thread a process; the asker runs the "
          f"first and last layer, the hive the {args.layers - 2} between. Alpha: {share:.0%} of "
          f"a core (cgroup CPU quota), reports {tflops * share:.4f} TFLOPS; beta: a whole core, "
          f"{tflops:.4f} TFLOPS, `--max-memory {args.beta_mb}`. `generate` on the same file, "
          f"unthrottled: {local_rate} tok/s. Median decode: split {split:.2f} tok/s, whole "
          f"layers {whole:.2f} tok/s ({split / whole if whole else float('nan'):.2f}x).\n")
    if pays:
        print("The split pays in this run: the planner chose it and it decoded faster than the "
              "best plan without it.\n")
    else:
        print("The split did not pay in this run (see the numbers above): "
              + ("the planner did not choose it." if not split_chosen else
                 "its two hops a layer cost more than the MLP time it moved to beta.") + "\n")
    return pays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round of few tokens")
    parser.add_argument("--layers", type=int, default=4,
                        help="layers of the model file (the hive serves all but 2; default 4)")
    parser.add_argument("--alpha-share", type=float, default=0.15,
                        help="share of one core alpha may use (default 0.15)")
    parser.add_argument("--beta-mb", type=int, default=3000,
                        help="beta's --max-memory in MiB (default 3000)")
    parser.add_argument("--weights", choices=("fp32", "packed", "bf16"), default="fp32",
                        help="how every process holds the matrices (default fp32)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens (default 24)")
    parser.add_argument("--rounds", type=int, default=None, help="asks per mode (default 2)")
    args = parser.parse_args(argv)
    if not 3 <= args.layers <= 32:
        parser.error("--layers must be 3 to 32 (the asker keeps 2)")
    args.tokens = args.tokens or (8 if args.quick else 24)
    args.rounds = args.rounds or (1 if args.quick else 2)
    from hive_core.sched.health import measured_tflops

    path = model_file(args.layers)
    tflops = measured_tflops()
    try:
        throttle = CpuThrottle(f"cadencia-split-{os.getpid()}", args.alpha_share)
    except ThrottleError as exc:
        print(f"## Attention on a slow alpha, MLP on a fast beta\n\nNot run: {exc}; without a "
              "CPU controller this machine has no slower device to put alpha on.\n")
        return 1
    try:
        rows, local = asyncio.run(run(args, path, tflops, throttle))
    finally:
        throttle.remove()
    report(rows, local, args, tflops, throttle.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
