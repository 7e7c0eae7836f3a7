"""Benchmark of the world model: edit throughput and size, large-city sync, convergence.

Run: `.venv/bin/python -m bench.bench_world [--quick]`. Prints markdown tables:

1. Edits: signed edits applied per second by a peer (signature + scratch-copy permission
   check + apply + log), next to raw pycrdt `apply_update` of the same updates; the bytes
   of a typical edit (Yjs update, and the signed edit on the wire).
2. Initial sync of a large city (10,000 buildings; 1,000 with --quick) from one peer to a
   fresh one through two `SyncProvider`s over an in-memory channel: time and bytes, with
   the edit log as written (one edit per command) and after compaction.
3. Convergence: 3 peers (full mesh) and 20 peers (ring with chords, degree 4) editing
   concurrently over in-memory links with 10 % loss, 5 % duplication, reordering and
   2-8 ms latency; time from the last edit until every peer holds every edit. All peers
   run in this one process, so that time is mostly their summed CPU (shown beside it).
(MDS numbers are in bench_layout.py.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from pycrdt import Doc

from hive_core.base.identity import Identity
from hive_core.mesh.memchannel import LinkProfile, memory_pair
from world.model import City, Outcome, SignedEdit
from world.model.provider import SyncProvider

LOSSY = LinkProfile(latency_s=0.002, jitter_s=0.006, loss=0.10, duplicate=0.05, reorder=0.1)


def player(n: int) -> Identity:
    return Identity.from_seed(n.to_bytes(32, "big"))


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_edits(n_cmds: int) -> list[tuple[str, str]]:
    author = City(player(1))
    edits: list[SignedEdit] = []
    author.on_local_edit(edits.append)
    kinds: dict[str, list[int]] = {"place": [], "move": [], "upgrade": [], "rotate": []}
    ids: list[str] = []
    for k in range(n_cmds):
        before = len(edits)
        op = ("place", "move", "upgrade", "rotate")[k % 4] if ids else "place"
        if op == "place":
            ids.append(author.place_building("house", (float(k), 0.0, 0.0)))
        elif op == "move":
            author.move(ids[k % len(ids)], (float(k), 1.0, 0.0))
        elif op == "upgrade":
            b = ids[k % len(ids)]
            if author.building(b).level < 10:
                author.upgrade(b)
            else:
                author.rotate(b, float(k))
        else:
            author.rotate(ids[k % len(ids)], float(k))
        kinds[op].extend(len(bytes(e)) for e in edits[before:])
    raw = [bytes(e) for e in edits]
    peer = City(player(2))
    t0 = time.perf_counter()
    for data in raw:
        assert peer.receive(data) is Outcome.ACCEPTED
    checked = len(raw) / (time.perf_counter() - t0)
    doc: Doc = Doc()
    t0 = time.perf_counter()
    for e in edits:
        doc.apply_update(e.update)
    plain = len(edits) / (time.perf_counter() - t0)
    rows = [
        ("signed edits applied / s (verify + scratch check + apply)", f"{checked:,.0f}"),
        ("raw pycrdt apply_update / s (no checks, for scale)", f"{plain:,.0f}"),
    ]
    overhead = len(bytes(edits[0])) - len(edits[0].update)
    for op, sizes in kinds.items():
        if sizes:
            med = statistics.median(sizes)
            rows.append((f"bytes per '{op}' edit (Yjs update + {overhead} B signature/header)",
                         f"{med:.0f} ({med - overhead:.0f} + {overhead})"))
    return rows


async def _sync_once(source: City) -> tuple[float, int, int]:
    fresh = City(player(99))
    ca, cb = memory_pair("crdt", LinkProfile(latency_s=0.001), seed=1)
    ps = [SyncProvider(source, ca, interval_s=5.0), SyncProvider(fresh, cb, interval_s=5.0)]
    target = source.state_vector()
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    while fresh.state_vector() != target:
        await asyncio.sleep(0.005)
    took = time.perf_counter() - t0
    for p in ps:
        await p.stop()
    assert fresh.to_json() == source.to_json()
    return took, ps[0].stats.sent_bytes, ps[0].stats.sent_messages


def bench_big_sync(n_buildings: int) -> list[tuple[str, str, str, str]]:
    progress(f"building a city of {n_buildings} buildings ...")
    city = City(player(3))
    for k in range(n_buildings):
        city.place_building("house", (float(k % 100), float(k // 100), 0.0),
                            rotation=float(k % 360))
        if k and k % 2000 == 0:
            progress(f"  {k}/{n_buildings}")
    rows = []
    for label in ("edit log as written", "after compaction"):
        if label == "after compaction":
            city.compact()
        progress(f"syncing ({label}) ...")
        took, nbytes, msgs = asyncio.run(_sync_once(city))
        rows.append((f"{n_buildings:,} buildings, {label} ({len(city.log):,} edits)",
                     f"{took:.2f} s", f"{nbytes / 1024:,.0f} KiB", f"{msgs}"))
    raw = len(city.export_update())
    rows.append((f"{n_buildings:,} buildings: plain Yjs update of the doc, for scale", "",
                 f"{raw / 1024:,.0f} KiB", ""))
    return rows


async def _converge(n_peers: int, edits_each: int, seed: int) -> tuple[float, int, float]:
    cities = [City(player(100 + i)) for i in range(n_peers)]
    if n_peers <= 3:
        pairs = [(i, j) for i in range(n_peers) for j in range(i + 1, n_peers)]
    else:
        pairs = sorted({(min(i, (i + d) % n_peers), max(i, (i + d) % n_peers))
                        for i in range(n_peers) for d in (1, n_peers // 4)})
    providers = []
    for k, (i, j) in enumerate(pairs):
        ca, cb = memory_pair("crdt", LOSSY, seed=seed * 1000 + k)
        providers += [SyncProvider(cities[i], ca, interval_s=0.05),
                      SyncProvider(cities[j], cb, interval_s=0.05)]
    for p in providers:
        p.start()
    for k in range(edits_each):
        for c in cities:
            b = c.place_building("house", (float(k), 0.0, 0.0))
            c.move(b, (float(k), 1.0, 0.0))
        await asyncio.sleep(0.001)
    t0, cpu0 = time.perf_counter(), time.process_time()
    while True:
        svs = [c.state_vector() for c in cities]
        if all(sv == svs[0] for sv in svs) and len(svs[0]) == n_peers:
            break
        await asyncio.sleep(0.005)
    took, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    for p in providers:
        await p.stop()
    first = cities[0].to_json()
    assert all(c.to_json() == first for c in cities)
    return took, sum(p.stats.sent_bytes for p in providers), cpu


def bench_convergence(edits_each: int, trials: int) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for n in (3, 20):
        progress(f"convergence, {n} peers ...")
        times, sent, cpus = [], [], []
        for t in range(trials):
            took, nbytes, cpu = asyncio.run(_converge(n, edits_each, seed=t))
            times.append(took)
            sent.append(nbytes)
            cpus.append(cpu)
        med = f"{statistics.median(times):.3f} s (max {max(times):.3f})"
        rows.append((f"{n} peers", f"{2 * edits_each * n}", med,
                     f"{statistics.median(cpus):.2f} s",
                     f"{statistics.median(sent) / 1024:,.0f} KiB"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    n_cmds, n_city, edits_each, trials = (
        (400, 1_000, 5, 1) if args.quick else (4_000, 10_000, 20, 3))

    print("## World model: edits\n")
    print("| measure | value |\n| --- | --- |")
    for name, value in bench_edits(n_cmds):
        print(f"| {name} | {value} |")
    print("\n## Initial sync of a large city (in-memory channel, 1 ms latency)\n")
    print("| city | time | bytes sent | messages |\n| --- | --- | --- | --- |")
    for row in bench_big_sync(n_city):
        print("| " + " | ".join(row) + " |")
    print("\n## Convergence with 10 % loss, 5 % duplication, reordering "
          f"(median of {trials})\n")
    print("| peers | edits | time after last edit | CPU in that time (all peers, one "
          "process) | bytes sent (all links) |\n| --- | --- | --- | --- | --- |")
    for crow in bench_convergence(edits_each, trials):
        print("| " + " | ".join(crow) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
