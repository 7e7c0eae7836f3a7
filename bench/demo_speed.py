"""The demo's speed against `ask` on the same hive shape: part of `python -m bench.bench_view`.

Runs, as a user would, each in its own process on this machine:
- `cadencia demo PROMPT --offscreen --json`: the embedded hive (4 shard servers on 2 stages x 2
  replicas, a referee, a noisy liar; aiortc links on loopback) while the world renders
  offscreen; its time to "hive ready" (from the command's launch, and the hive's own count
  from the start of its build) and its decode tokens/s;
- `cadencia play --prompt PROMPT --offscreen --json`: the same hive shape with the player's
  district hosting a stage (in-memory links with their emulated 8 ms latency);
- `cadencia hive up --nodes 4` (a sentinel and 4 serving nodes: 2 stages x 2 replicas, aiortc
  on loopback) and `cadencia ask PROMPT --json` against it: the reference decode rate.
The runs alternate (ask, demo, play, ask, demo, play, ...) so that others' load on a shared
machine falls on each alike; medians are reported with the target: the demo and play decode
at least 50 % of ask's, the hive ready in under 10 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "cadencia"]
PROMPT = "Write a short poem about the sea."
TARGET_RATIO = 0.5  # demo and play decode at least half of ask's
TARGET_READY_S = 10.0
READY = re.compile(r"hive ready in ([0-9.]+)s")


@dataclass
class Runs:
    """What one kind of run measured, one entry per run."""

    tokens_per_s: list[float] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)  # from the command's launch
    hive_ready_s: list[float] = field(default_factory=list)  # the hive's own count
    errors: list[str] = field(default_factory=list)


def _run_view_command(args: list[str], runs: Runs, timeout_s: float) -> None:
    """Run demo or play; read its JSON line (stdout) and its "hive ready" line (stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ready_at = None
    assert proc.stderr is not None and proc.stdout is not None
    try:
        for line in proc.stderr:
            found = READY.search(line)
            if found and ready_at is None:
                ready_at = time.perf_counter() - t0
                runs.hive_ready_s.append(float(found.group(1)))
            if time.perf_counter() - t0 > timeout_s:
                raise subprocess.TimeoutExpired(args[0], timeout_s)
        out = proc.stdout.read()
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        runs.errors.append(f"{args[0]}: timed out")
        return
    if ready_at is not None:
        runs.ready_s.append(ready_at)
    try:
        got = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        runs.errors.append(f"{args[0]} exited {proc.returncode} without its JSON line")
        return
    rates = got.get("tokens_per_s")
    rates = rates if isinstance(rates, list) else [rates]
    runs.tokens_per_s += [float(r) for r in rates if r]


def demo(runs: Runs, tokens: int, png: Path) -> None:
    _run_view_command(["demo", PROMPT, "--offscreen", "--json", "--max-new-tokens", str(tokens),
                       "--screenshot", str(png)], runs, 300.0)


def play(runs: Runs, tokens: int, png: Path, data: Path, frames: int) -> None:
    _run_view_command(["play", "--prompt", PROMPT, "--offscreen", "--json", "--frames", str(frames),
                       "--max-new-tokens", str(tokens), "--data-dir", str(data),
                       "--screenshot", str(png)], runs, 300.0)


class LoopbackHive:
    """`cadencia hive up --nodes 4` in the background (2 stages x 2 replicas)."""

    def __init__(self, data: Path) -> None:
        self.proc = subprocess.Popen([*CLI, "hive", "up", "--nodes", "4", "--json", "--no-world",
                                      "--tflops", "1", "--data-dir", str(data)], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        try:
            self.url = str(json.loads(line)["sentinel"])
        except (ValueError, KeyError):
            self.close()
            raise RuntimeError("hive up did not start") from None

    def ask(self, runs: Runs, tokens: int) -> None:
        proc = subprocess.run([*CLI, "ask", PROMPT, "--hive", self.url, "--json", "--max-new-tokens",
                               str(tokens), "--timeout", "60"], cwd=ROOT, capture_output=True,
                              text=True, timeout=300, check=False)
        try:
            runs.tokens_per_s.append(float(json.loads(proc.stdout.strip().splitlines()[-1])["tokens_per_s"]))
        except (ValueError, KeyError, IndexError):
            runs.errors.append(f"ask exited {proc.returncode}: {proc.stderr.strip()[-200:]}")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def measure(rounds: int, tokens: int, with_play: bool = True, say=print) -> dict[str, Runs]:
    """`rounds` of ask, demo (and play), alternating; each kind's runs."""
    out = {"ask": Runs(), "demo": Runs(), "play": Runs()}
    with tempfile.TemporaryDirectory() as tmp:
        hive = LoopbackHive(Path(tmp) / "hive")
        try:
            for k in range(rounds):
                say(f"round {k + 1}/{rounds}: ask, demo" + (", play" if with_play else ""))
                hive.ask(out["ask"], tokens)
                demo(out["demo"], tokens, Path(tmp) / "demo.png")
                if with_play:
                    play(out["play"], tokens, Path(tmp) / "play.png", Path(tmp) / f"play-{k}", 600)
        finally:
            hive.close()
    return out


def _med(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def table(runs: dict[str, Runs]) -> str:
    """A markdown table: ready times, decode rates, their ratio to ask's, the targets."""
    ask = statistics.median(runs["ask"].tokens_per_s) if runs["ask"].tokens_per_s else 0.0
    lines = [("| run | runs | hive ready s (from launch) | hive ready s (its build) | decode tok/s "
              "(median) | of ask's | target |"), "| --- | --- | --- | --- | --- | --- | --- |"]
    names = {"ask": "`hive up --nodes 4` + `ask` (2 stages x 2 replicas, aiortc loopback)",
             "demo": "`demo` (embedded: 2 stages x 2 replicas + referee, aiortc loopback, rendering)",
             "play": "`play --prompt` (embedded, hosting a stage, 8 ms emulated links, rendering)"}
    for key, name in names.items():
        r = runs[key]
        if not r.tokens_per_s and not r.errors:
            continue
        ratio = (f"{100.0 * statistics.median(r.tokens_per_s) / ask:.0f} %"
                 if key != "ask" and ask and r.tokens_per_s else "")
        target = "" if key == "ask" else f">= {100 * TARGET_RATIO:.0f} % of ask's, ready < {TARGET_READY_S:g} s"
        lines.append(f"| {name} | {len(r.tokens_per_s)} | {_med(r.ready_s)} | {_med(r.hive_ready_s)} | "
                     f"{_med(r.tokens_per_s)} | {ratio} | {target} |")
    errors = [e for r in runs.values() for e in r.errors]
    if errors:
        lines.append("")
        lines += [f"- failed: {e}" for e in errors]
    return "\n".join(lines)
