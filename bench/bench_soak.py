"""A soak of a live hive under faults (`python -m bench.bench_soak [--quick] [--minutes M]`).

Starts a loopback hive of 4 separate processes, each serving every layer of the model
(packed weights, one torch thread each): a sentinel, an honest node, a noisy liar (`cadencia
node --fault noise`: 10 % noise on every answer) and a silent node (`--fault silent`: takes
every request, never answers). Four askers in this process, each through the one join path
(`join_hive` at a random live entry, `connect`, sessions of 2 replicas per stage), ask in a
loop; each keeps its client for a few asks and joins again after any refusal. Once a minute
a random serving process is killed with SIGKILL and started again on the same port and data
dir (same key). The RSS of every process is sampled every 2 s (a member's with its children;
the askers' row is this process alone: the members are its children).

Reported: answers attempted, answered, refused with a reason (each reason and its count),
hung (no outcome within the deadline), failed without a reason, correct (tokens equal to the
local greedy answer for that prompt, computed once up front in this process), verified; the
per-minute peak RSS of each process and its growth after the first minute. Targets beside
them: 100 % answered or refused with a reason, 100 % of answers correct, RSS flat after the
first minute. Exit status 1 when an answer was wrong, hung or failed without a reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.soak_hive import Asker, Member, Settings, Soak, Tally, references

FLAT = 0.05  # growth after the first minute under this share of the first minute's peak: flat


@dataclass
class Result:
    """A finished soak: the tally, each process's RSS by minute, the kills, the settings."""

    settings: Settings
    tally: Tally
    members: list[Member]
    asker_rss: dict[int, int]
    kills: list[str]
    minutes: int
    model: str


async def run_soak(settings: Settings) -> Result:
    """Run one soak and return what it measured."""
    from hive_core.exec.join import AskerPart
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.tokenizer import GGUFTokenizer

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(settings, Path(tmp))
        file = GGUFModelFile(soak.path)
        ids, want = await asyncio.to_thread(references, soak.path, settings.max_new_tokens)
        part = AskerPart.load(file, weights="packed")
        stop = asyncio.Event()
        try:
            await soak.start(soak.members[0])  # the sentinel: the others join through it
            await asyncio.gather(*(soak.start(m) for m in soak.members[1:]))
            soak.t0 = time.monotonic()
            end = soak.t0 + settings.minutes * 60
            sampler = asyncio.ensure_future(soak.sampler(stop))
            killer = asyncio.ensure_future(soak.killer(end))
            askers = [Asker(soak, k, part, file, want, ids, GGUFTokenizer(file).stop_ids)
                      for k in range(settings.askers)]
            await asyncio.gather(*(a.loop(end) for a in askers))
            killer.cancel()
            stop.set()
            await sampler
            minutes = soak.minute() + 1
        finally:
            stop.set()
            await soak.stop_all()
            await asyncio.to_thread(part.close)
        return Result(settings, soak.tally, soak.members, soak.asker_rss, soak.kills, minutes,
                      soak.path.name)


def pct(n: int, d: int) -> str:
    return f"{n / d * 100:.0f} %" if d else "-"


def report(r: Result) -> str:
    t, s = r.tally, r.settings
    stated = t.answered + sum(t.refused.values())
    refused = "; ".join(f"{why} ({n})" for why, n in t.refused.most_common()) or "none"
    took = f"{statistics.median(t.seconds):.1f}, {max(t.seconds):.1f}" if t.seconds else "-"
    rows = [
        ("answers attempted", str(t.attempted), "-"),
        ("answered", f"{t.answered} ({pct(t.answered, t.attempted)})", "-"),
        ("refused with a reason", f"{sum(t.refused.values())}: {refused}", "-"),
        ("answered or refused with a reason",
         f"{stated} / {t.attempted} ({pct(stated, t.attempted)})", "100 %"),
        (f"hung (no outcome in {s.deadline_s:g} s)", str(len(t.hung)), "0"),
        ("failed without a reason", str(len(t.failed)), "0"),
        ("correct (= local greedy)", f"{t.correct} / {t.answered} ({pct(t.correct, t.answered)})",
         "100 % of answered"),
        ("verified", f"{t.verified} / {t.answered} ({pct(t.verified, t.answered)})", "-"),
        ("asked again after a late audit / hedges / failovers",
         f"{t.retried} / {t.hedges} / {t.failovers}", "-"),
        ("seconds per answer (median, max)", took, "-"),
        ("kills (victim at time, back in)", "; ".join(r.kills) or "none", "1 a minute"),
    ]
    head = (f"Soak of a 4-process loopback hive ({r.model}, packed weights, every process "
            f"serving every layer; a noisy liar and a silent node among them), {s.askers} "
            f"askers asking in a loop for {s.minutes:g} min (2 replicas per stage, "
            f"{s.max_new_tokens} new tokens at most, greedy), one kill -9 and restart every "
            f"{s.kill_every_s:g} s; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}\n")
    lines = [head, "| measure | value | target |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", rss_table(r)]
    lines += [f"\n  failed: {f}" for f in t.failed[:5]]
    lines += [f"\n  wrong: {f}" for f in t.wrong[:5]]
    lines += [f"\n  hung: {f}" for f in t.hung[:5]]
    return "\n".join(lines)


def rss_table(r: Result) -> str:
    cols = list(range(r.minutes))
    rows = [(f"{m.role} ({m.restarts} restarts)", m.rss) for m in r.members]
    rows.append(("askers (this process)", r.asker_rss))
    out = ["| process (peak RSS MB) | " + " | ".join(f"min {c + 1}" for c in cols)
           + " | minute 1 -> end | growth | flat (< 5 %) |",
           "| --- |" + " ---: |" * len(cols) + " --- | ---: | :---: |"]
    for name, rss in rows:
        first, last = rss.get(0, 0), rss.get(cols[-1], 0)
        grow = max(rss.get(c, 0) for c in cols[1:]) - first if len(cols) > 1 else 0
        flat = "yes" if first and grow < FLAT * first else "no"
        out.append(f"| {name} | " + " | ".join(f"{rss.get(c, 0) / 2**20:.0f}" for c in cols)
                   + f" | {first / 2**20:.0f} -> {last / 2**20:.0f} | "
                   f"{grow / 2**20:+.0f} MB | {flat} |")
    out.append("\ngrowth: the highest per-minute peak after the first minute less the first "
               "minute's; a restarted process starts again from its load")
    return "\n".join(out)


def as_dict(r: Result) -> dict[str, Any]:
    """The soak's numbers for a machine (`--json-out`)."""
    t = r.tally
    return {"attempted": t.attempted, "answered": t.answered, "correct": t.correct,
            "verified": t.verified, "refused": dict(t.refused), "hung": t.hung,
            "failed": t.failed, "wrong": t.wrong, "retried": t.retried, "hedges": t.hedges,
            "failovers": t.failovers, "kills": r.kills, "minutes": r.minutes,
            "rss_mb": {m.role: [round(m.rss.get(c, 0) / 2**20, 1) for c in range(r.minutes)]
                       for m in r.members}
            | {"askers": [round(r.asker_rss.get(c, 0) / 2**20, 1) for c in range(r.minutes)]},
            "restarts": {m.role: m.restarts for m in r.members}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1.5 minutes (unless --minutes), 12 new tokens, a "
                             "kill every 45 s")
    parser.add_argument("--minutes", type=float, default=None,
                        help="how long to ask (default 10, or 1.5 with --quick)")
    parser.add_argument("--askers", type=int, default=4, help="concurrent askers (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of the victims")
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2)")
    parser.add_argument("--json-out", default=None, metavar="PATH",
                        help="also write the numbers as one JSON object to PATH")
    args = parser.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (1.5 if args.quick else 10.0)
    if not 0.1 <= minutes <= 24 * 60 or not 1 <= args.askers <= 64:
        parser.error("--minutes must be in 0.1..1440 and --askers in 1..64")
    settings = Settings(minutes=minutes, askers=args.askers, seed=args.seed, model=args.model)
    if args.quick:
        settings = replace(settings, max_new_tokens=12, deadline_s=120, kill_every_s=45)
    import torch

    torch.set_num_threads(1)  # the askers' part shares 2 cores with 4 serving processes
    t0 = time.perf_counter()
    result = asyncio.run(run_soak(settings))
    print(report(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(as_dict(result)))
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    t = result.tally
    return 1 if t.hung or t.failed or t.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
