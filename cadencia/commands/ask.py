"""`cadencia ask`: answer a prompt with the hive; only hidden states leave this device."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cadencia.commands._prompt_flags import StreamedText, add_prompt_arguments, check_room
from hive_core.mesh.runner import number
from hive_core.model.modes import add_weights_argument

NAME = "ask"
HELP = "answer a prompt with the hive (tokens, embedding and head stay on this device)"
DESCRIPTION = (
    "Join the hive at --hive ws://HOST:PORT, find its shard servers, route the model's layers "
    "over them and generate. The prompt is tokenised, embedded and sampled here; only sealed "
    "hidden states travel. Each stage goes to --replicas nodes: agreeing answers are used, a "
    "disagreeing node is slashed. '--hive local:N' runs N shard servers in this process "
    "instead (a demo without a network). --weights is how this device holds the embedding, "
    "the head and its local layers (and the local:N servers); on a live hive, stages prefer "
    "servers of that mode, and each stage's replicas always share one mode. Same prompt and "
    "sampling flags as 'generate'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_prompt_arguments(parser)
    parser.add_argument("--hive", required=True, metavar="URL",
                        help="ws://HOST:PORT of a sentinel or listening node, or local:N")
    parser.add_argument("--replicas", type=int, default=2, metavar="R",
                        help="nodes computing each stage, where the hive has that many (default "
                             "2: compared row by row; a stage with one node is audited instead)")
    parser.add_argument("--speculate", type=number(int, 0, 64), default=0, metavar="K",
                        help="draft K tokens by prompt lookup, verified in one pass (greedy only)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip verification (signed Merkle roots, replica comparison, "
                             "audits): answers from a lying node are then taken as they come")
    parser.add_argument("--local-layers", type=number(int, 0, 65535), default=1, metavar="K",
                        help="run the first K layers here too, so no node sees raw embeddings "
                             "(which map back to tokens); default 1, 0 ships embeddings")
    parser.add_argument("--local-tail-layers", type=int, default=1, metavar="K",
                        help="run the last K layers here too, so no node returns a state the "
                             "public head reads as the answer; default 1")
    parser.add_argument("--kv", choices=("fp32", "int4"), default="fp32",
                        help="KV cache the shard servers keep (default fp32)")
    parser.add_argument("--cascade", action="store_true",
                        help="hidden states go node to node, each node sending this device "
                             "its signed commitment (a disputed step runs by the star: each "
                             "stage's output back here, the default)")
    parser.add_argument("--wire", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="dtype of hidden states between nodes: fp16 and bf16 halve the "
                             "bytes but move the answer past the replica tolerance of an fp32 "
                             "run (measured in the README; default fp32)")
    add_weights_argument(parser, "this device (and the servers of --hive local:N)")
    from hive_core.exec.serve import add_allow_dequant_argument

    add_allow_dequant_argument(parser)
    parser.add_argument("--threads", type=number(int, 1, 1024), default=None, metavar="N",
                        help="torch threads (default: physical cores)")
    parser.add_argument("--timeout", type=number(float, 0.1, 3600, "s"), default=15.0,
                        metavar="S",
                        help="seconds to join the hive and find its servers (default 15)")
    parser.add_argument("--relay", default=None, metavar="NODE_ID|auto",
                        help="reach the shard servers only through this peer (or one drawn "
                             "among peers serving none of the model's layers), under a "
                             "throwaway key: the servers do not learn who asked, the relay "
                             "sees only sealed bytes (see the README's privacy section)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object at the end instead of streaming text")


def run(args: argparse.Namespace) -> int:
    from hive_core.exec.errors import ExecError
    from hive_core.model.errors import ModelError, PromptError

    if not args.prompt.strip():
        raise PromptError("the prompt is empty")
    if args.max_new_tokens < 1:
        raise ModelError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not 1 <= args.replicas <= 8:
        raise ExecError(f"--replicas must be in 1..8, got {args.replicas}")
    if args.speculate < 0 or (args.speculate and args.temperature > 0):
        raise ExecError("--speculate needs K >= 0 and greedy decoding (--temperature 0)")
    if args.local_layers < 0:
        raise ExecError(f"--local-layers must be >= 0, got {args.local_layers}")
    if args.threads is not None and args.threads < 1:
        raise ModelError(f"--threads must be at least 1, got {args.threads}")
    if args.hive.startswith("local:"):
        n = args.hive[6:]
        if not n.isdigit() or not 1 <= int(n) <= 64:
            raise ExecError(f"bad --hive {args.hive!r}: expected local:N with N in 1..64")
    else:
        from hive_core.mesh.wschannel import parse_ws_url

        parse_ws_url(args.hive)
    if args.relay is not None:
        from hive_core.exec.relayed import parse_relay

        if args.hive.startswith("local:"):
            raise ExecError("--relay needs a live hive (--hive ws://HOST:PORT): in-process "
                            "servers know who asked")
        parse_relay(args.relay)
    import asyncio

    import psutil
    import torch

    torch.set_num_threads(args.threads or psutil.cpu_count(logical=False) or 1)
    return asyncio.run(_ask(args))


async def _ask(args: argparse.Namespace) -> int:
    import asyncio

    from hive_core.base.paths import data_dir
    from hive_core.exec import ClientConfig, ExecError, SpecStats, generate_hive
    from hive_core.model.chat import prompt_ids as encode_prompt
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.sampling import Sampler
    from hive_core.model.tokenizer import GGUFTokenizer
    from hive_core.protocol.inference import KvKind

    path = resolve_model_path(args.model)
    model = GGUFModelFile(path)
    tokenizer = GGUFTokenizer(model)
    prompt_ids = encode_prompt(model, tokenizer, args.prompt, raw=args.raw)
    check_room(args.max_new_tokens, len(prompt_ids), model.config.context_length)
    sampler = Sampler(args.temperature, args.top_p, args.seed)
    config = ClientConfig(kv=KvKind.INT4 if args.kv == "int4" else KvKind.FP32,
                          verify=not args.no_verify, local_layers=args.local_layers,
                          local_tail_layers=args.local_tail_layers,
                          topology="cascade" if args.cascade else "star", wire=args.wire)
    if args.local_layers + args.local_tail_layers >= model.config.n_layers:
        raise ExecError(f"--local-layers plus --local-tail-layers must leave some of the model's "
                        f"{model.config.n_layers} layers to the hive")
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    closers: list[Any] = []
    relayed: Any = None  # the throwaway node sending through --relay
    try:
        if args.hive.startswith("local:"):
            from hive_core.exec.hive import build_hive

            n = int(args.hive[6:])
            say(f"starting {n} in-process shard servers ...")
            local = await build_hive(path, n, replicas=min(args.replicas, n), model=model,
                                     client_config=config, weights=args.weights)
            closers.append(local.close)
            client = local.client
        else:
            from hive_core.exec.join import AskerPart, connect, join_hive

            hive = await join_hive(args.hive, timeout_s=args.timeout, say=say)
            closers.append(hive.close)
            here = "embedding, head" + (f" and layers 0-{args.local_layers}"
                                        if args.local_layers else "")
            say(f"loading this device's part ({here}, {args.weights} weights) ...")
            # Off the loop: dequantising float32 weights takes longer than the mesh's
            # dead-after, and a blocked loop answers no ping (the links to the servers drop).
            asker = await asyncio.to_thread(
                AskerPart.load, model, local_layers=args.local_layers, weights=args.weights,
                nice=config.compute_nice, tail_layers=args.local_tail_layers,
                allow_dequant=args.allow_dequant)
            closers.append(lambda: asyncio.to_thread(asker.close))
            if args.relay is None:
                client = await connect(hive, model, asker, replicas=args.replicas,
                                       config=config, timeout_s=args.timeout, say=say,
                                       data_dir=data_dir())
            else:
                from hive_core.exec.relayed import connect_relayed, parse_relay

                client, relayed = await connect_relayed(
                    hive, model, asker, relay=parse_relay(args.relay), replicas=args.replicas,
                    config=config, timeout_s=args.timeout, say=say, data_dir=data_dir())
                closers.append(relayed.close)
            closers.append(lambda: asyncio.to_thread(client.close))
        known = set(client.reputation.slashed)  # convicted before this ask (kept in the data dir)
        for attempt in range(2):  # again once if an audit found a lie after it was used
            session = client.new_session()
            on_token = StreamedText(tokenizer, quiet=args.json)
            stats = SpecStats()
            try:
                result = await generate_hive(
                    session, prompt_ids, max_new_tokens=args.max_new_tokens,
                    context_length=model.config.context_length, sampler=sampler,
                    stop_ids=tokenizer.stop_ids, on_token=on_token, speculate=args.speculate,
                    stats=stats)
            except ExecError as exc:
                if relayed is None:
                    raise
                raise relayed.explain(exc) from None  # name the relay when it is what failed
            text = on_token.finish()
            receipts = await session.finish()
            if not session.tainted or attempt:
                break
            say("an audit caught a node lying in this answer: asking again without it ...")
        out = {
            "text": text, "new_ids": result.new_ids, "ttft_s": round(result.ttft_s, 6),
            "tokens_per_s": round(result.tokens_per_s, 3), "route": session.route(),
            "verified": session.verified,
            "slashed": [n.hex() for n in client.reputation.slashed if n not in known],
            "evidence": len(client.reputation.evidence), "plan": client.plan.as_dict(),
            "receipts": len(receipts), "failovers": session.failovers,
            "hedges": session.hedges, "audited": [st.audited for st in session.stages],
            "replays": session.replays, "kv": args.kv, "weights": args.weights,
            "speculation": {"passes": stats.passes, "drafted": stats.drafted,
                            "accepted": stats.accepted},
            "paths": _paths(client),
            "relay": relayed.relay.hex() if relayed is not None else None,
            "topology": session.client.config.topology, "wire": args.wire,
            "cascaded": session.cascaded, "star_fallbacks": session.fallbacks,
        }
        if args.json:
            print(json.dumps(out))
        else:
            sys.stdout.write(on_token.tail + "\n")
            print(f"{len(result.new_ids)} tokens, first after {result.ttft_s:.2f}s, "
                  f"{result.tokens_per_s:.1f} tokens/s, {len(session.stages)} stages, "
                  f"verified={session.verified}, slashed={len(out['slashed'])}"
                  + (f", cascade: {session.cascaded} of {session.cascaded + session.fallbacks} "
                     "steps node to node" if args.cascade else ""), file=sys.stderr)
    finally:
        for close in reversed(closers):
            await close()
    return 0


def _paths(client: Any) -> dict[str, str]:
    """How this device reaches each node of the route: "direct" (a data channel, hole-punched
    through NATs where there are any), "relay" (through a TURN server), "ws" (a WebSocket)
    or "in-process"."""
    out = {}
    for node in client.plan.nodes:
        link = client.node.peers.best(node)
        if link is None:
            continue
        rtc = getattr(link, "rtc", None)
        out[node.hex()] = (rtc.path or "direct") if rtc is not None else link.kind
    return out
