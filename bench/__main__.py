"""Run every benchmark in turn, each in its own process: `python -m bench [--quick] [NAME ...]`.

Each bench prints its own markdown table; this runner shows them as they come and keeps a copy
of each in `bench/results/NAME.md` (with the command, the date and the machine) for the README.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("model", "packed", "models", "mesh", "world", "layout", "infer", "view", "feed",
           "api", "calibrate", "privacy", "wan", "loopback", "soak", "wire", "relay", "split")
HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"some of: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="smoke run of each bench")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}: choose from {', '.join(BENCHES)}")
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    failed = []
    for i, name in enumerate(args.names or BENCHES, start=1):
        cmd = [sys.executable, "-m", f"bench.bench_{name}"] + (["--quick"] if args.quick else [])
        shown = "python -m bench.bench_" + name + (" --quick" if args.quick else "")
        print(f"[{i}/{len(args.names or BENCHES)}] {shown}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
        took = time.perf_counter() - t0
        sys.stdout.write(proc.stdout)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        header = (f"<!-- `{shown}` on {stamp}, {platform.machine()}, {os.cpu_count()} CPUs, "
                  f"{took:.0f} s, exit {proc.returncode} -->\n")
        (out_dir / f"{name}.md").write_text(header + proc.stdout)
        if proc.returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
