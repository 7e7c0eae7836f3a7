"""``python -m hive_core.native build|check``: build our CPU kernels, or say whether they load."""

from __future__ import annotations

import argparse
import sys
import time

from hive_core import native


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hive_core.native", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="compile kernels.cpp for this CPU (skipped when built)")
    b.add_argument("--force", action="store_true", help="compile even when already built")
    sub.add_parser("check", help="load the kernels and print what was loaded")
    args = p.parse_args(argv)
    if args.cmd == "build":
        t0 = time.perf_counter()
        try:
            path = native.build(force=args.force)
        except native.NativeBuildError as e:
            print(f"native build failed: {e}", file=sys.stderr)
            return 1
        print(f"native kernels: {path} ({time.perf_counter() - t0:.1f} s)")
        return 0
    ops = native.ops()
    if ops is None:
        print(f"native kernels not loaded: {native.unavailable_reason()}", file=sys.stderr)
        return 1
    simd = int(ops.simd())
    print(f"native kernels: {native.library_path()} ({native.PATHS.get(simd, simd)} path)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
