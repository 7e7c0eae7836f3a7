"""Benchmark of asking through a relay (`--relay`): the same hive asked directly and through a
relay peer, sessions interleaved so both see the same load.

Run: `.venv/bin/python -m bench.bench_relay [--quick] [--latency-ms MS] [--weights MODE]`.

Two shard servers (SmolLM2, verification on: the end-of-session audits run through the relay
too) and a relay, all in this process, linked by in-memory channels that delay each message
by `--latency-ms` one way (0: the protocol's own cost). Direct: the asker's links to the
servers; relayed: a throwaway key whose tunnels go asker -> relay -> server, every frame
sealed end to end. Prints TTFT and decode tokens/s (best of the repeats) and whether the
tokens are the same.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import torch

from bench.bench_infer import TEXT, prompt
from hive_core.exec import ClientConfig, generate_hive
from hive_core.exec.client import HiveClient
from hive_core.exec.hive import build_hive, identity
from hive_core.exec.relay import relaying
from hive_core.exec.relayed import RelayedNode
from hive_core.mesh.memchannel import LinkProfile, memory_pair
from hive_core.mesh.node import Node
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.locate import resolve_model_path
from hive_core.model.tokenizer import GGUFTokenizer


async def link(a: Node, b: Node, profile: LinkProfile) -> None:
    ca, cb = memory_pair(profile=profile)
    await asyncio.gather(a.attach(ca, kind="memory", expect=b.node_id),
                         b.attach(cb, kind="memory", expect=a.node_id))


async def main_async(args: argparse.Namespace) -> int:
    file = GGUFModelFile(resolve_model_path(args.model))
    ids = prompt(GGUFTokenizer(file), TEXT, 40)
    n_new = 8 if args.quick else args.tokens
    reps = 1 if args.quick else args.repeats
    profile = LinkProfile(latency_s=args.latency_ms / 1000, ordered=True)
    cfg = ClientConfig()
    hive = await build_hive(file.path, 2, model=file, client_config=cfg, weights=args.weights,
                            profile=profile)
    relay = Node(identity("relay"))
    relaying(relay).relays = True
    for server in hive.servers:
        relaying(server.node).accepts = True
        await link(relay, server.node, profile)
    await link(relay, hive.asker, profile)
    relayed = RelayedNode(hive.asker, relay.node_id)
    await relayed.open(hive.node_ids)
    base = hive.client
    through = HiveClient(relayed.node, base.local, base.plan, cfg, weights=base.weights,
                         health=base.health, replayer=base.reputation.replayer)
    best: dict[str, Any] = {}
    try:
        for r in range(reps + 1):  # the first round warms up (loads, the auditors' stages)
            for name, client in (("direct", base), ("relayed", through)):
                s = client.new_session()
                g = await generate_hive(s, ids, max_new_tokens=n_new,
                                        context_length=file.config.context_length)
                await s.finish()
                if r and (name not in best or g.tokens_per_s > best[name].tokens_per_s):
                    best[name] = g
    finally:
        through.close()
        await relayed.close()
        await relay.close()
        await hive.close()
    print(f"model {file.path.name}, {args.weights} weights; prompt {len(ids)} tokens, {n_new} "
          f"new; 2 servers, verification on; links {args.latency_ms:g} ms one way; torch "
          f"threads {torch.get_num_threads()}; best of {reps}\n")
    print("| asker | TTFT (s) | decode tokens/s | same tokens |")
    print("| --- | ---: | ---: | :---: |")
    for name, g in best.items():
        same = g.new_ids == best["direct"].new_ids
        print(f"| {name} | {g.ttft_s:.3f} | {g.tokens_per_s:.1f} | {'yes' if same else 'NO'} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 tokens, one run: a smoke run")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per run (default 32)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row, best kept")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="one-way delay of every link (default 0)")
    parser.add_argument("--weights", choices=("fp32", "packed", "bf16"), default="packed")
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2)")
    args = parser.parse_args()
    if args.tokens < 1 or args.repeats < 1 or args.latency_ms < 0:
        parser.error("--tokens and --repeats must be at least 1, --latency-ms at least 0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
