"""Live event feed cost: does spectating slow serving? (`python -m bench.bench_feed [--quick]`)

A 2-stage in-process hive on a tiny 4-layer model (in-memory links, so compute and the
network do not hide the feed's own cost) answers the same prompt with 0 spectators,
with 8 spectators that drain their feeds, and with 8 that are stuck (their sends never
complete: a dead peer); each server's feed queue holds 16 events per spectator. Prints the median answer time per case, the events each server
published, sent and dropped, and the cost of one `publish` call to 8 subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hive_core.base.stage import Part
from hive_core.events import StageStarted
from hive_core.exec import generate_hive
from hive_core.exec.feed import EventFeed, FeedConfig
from hive_core.exec.hive import build_hive, identity
from hive_core.mesh.memchannel import memory_pair
from hive_core.mesh.node import Node
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tiny import write_tiny_llama
from hive_core.protocol.feed import FeedAnswer, FeedEvent, FeedSubscribe

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]


async def subscribe(servers: list[Any], n: int, stuck: bool) -> list[Node]:
    spectators = []
    for k in range(n):
        spec = Node(identity(f"bench-spectator-{k}"))
        spec.register_reply(FeedAnswer)
        spec.on(FeedEvent, lambda _peer, _msg: None)
        for s in servers:
            a, b = memory_pair()
            await asyncio.gather(spec.attach(a, kind="memory", expect=s.node.node_id),
                                 s.node.attach(b, kind="memory", expect=spec.node_id))
            await spec.request(s.node.node_id, FeedSubscribe(spec.next_rpc_id(), True, 60.0), timeout=5)
        spectators.append(spec)
    if stuck:  # every feed send to these spectators hangs, as to a peer that stopped reading
        hang = asyncio.Event()
        for s in servers:
            real = s.node.send

            async def send(node_id: bytes, msg: Any, real: Any = real) -> None:
                if isinstance(msg, FeedEvent):
                    await hang.wait()
                await real(node_id, msg)

            s.node.send = send
    return spectators


async def one_case(file: GGUFModelFile, spectators: int, stuck: bool, repeats: int, n_new: int) -> dict[str, Any]:
    hive = await build_hive(file.path, 2, model=file)
    for s in hive.servers:  # long sends: a stuck spectator stays stuck; a small queue shows drops
        s.feed.config = FeedConfig(queue_size=16, send_timeout_s=600.0)
    specs = await subscribe(hive.servers, spectators, stuck)
    times = []
    try:
        for k in range(repeats + 1):  # the first answer warms up (threads, first-use paths): not timed
            t0 = time.perf_counter()
            session = hive.client.new_session()
            await generate_hive(session, PROMPT, max_new_tokens=n_new, context_length=64)
            await session.finish()
            if k:
                times.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
        stats = [s.feed.stats for s in hive.servers]
        return {"median_s": statistics.median(times), "published": sum(st.published for st in stats),
                "sent": sum(st.sent for st in stats), "dropped": sum(st.dropped for st in stats)}
    finally:
        for spec in specs:
            await spec.close()
        await hive.close()


async def publish_cost(n_subscribers: int, events: int) -> float:
    """Microseconds per `publish` to `n_subscribers` (their queues drained as fast as possible)."""
    pub = Node(identity("bench-publisher"))
    feed = EventFeed(pub, FeedConfig(max_subscribers=n_subscribers, queue_size=events + 1))
    subs = []
    for k in range(n_subscribers):
        sub = Node(identity(f"bench-sub-{k}"))
        sub.register_reply(FeedAnswer)
        a, b = memory_pair()
        await asyncio.gather(sub.attach(a, kind="memory", expect=pub.node_id),
                             pub.attach(b, kind="memory", expect=sub.node_id))
        await sub.request(pub.node_id, FeedSubscribe(sub.next_rpc_id(), True, 60.0), timeout=5)
        subs.append(sub)
    event = StageStarted(b"s" * 16, pub.node_id, 0, 2, Part.FULL, time.monotonic())
    t0 = time.perf_counter()
    for _ in range(events):
        feed.publish(event)
    spent = time.perf_counter() - t0
    await feed.close()
    for n in (pub, *subs):
        await n.close()
    return spent / events * 1e6


async def main_async(args: argparse.Namespace) -> int:
    repeats, n_new = (2, 4) if args.quick else (7, 16)
    with tempfile.TemporaryDirectory() as tmp:
        file = GGUFModelFile(write_tiny_llama(Path(tmp) / "tiny.gguf"))
        print(f"\n| spectators (tiny 4-layer model, 2 stages, {n_new} new tokens, median of {repeats}) "
              "| answer ms | vs none | events published | sent | dropped |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        base = None
        for label, n, stuck in (("none", 0, False), ("8 draining", 8, False), ("8 stuck (dead peers)", 8, True)):
            r = await one_case(file, n, stuck, repeats, n_new)
            base = base or r["median_s"]
            print(f"| {label} | {r['median_s'] * 1e3:.1f} | {r['median_s'] / base:.2f}x | {r['published']} "
                  f"| {r['sent']} | {r['dropped']} |")
    us = await publish_cost(8, 200 if args.quick else 5000)
    print(f"\n| publish() to 8 subscribers | {us:.1f} us per event |\n| --- | --- |")
    print("\nTimings are from a shared machine and may be noisy.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (fewer repeats and tokens)")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
