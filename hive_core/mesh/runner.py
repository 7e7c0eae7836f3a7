"""Running a HiveNode as a process: CLI flags -> NodeConfig, ready line, clean stop on a signal."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.dht.records import LayerSpanRecord
from hive_core.mesh.node import NodeConfig, lan_default
from hive_core.mesh.rtc import RTCOptions
from hive_core.mesh.wschannel import parse_listen, parse_ws_url
from hive_core.sched.memory import check_max_memory

ROLE_CHOICES = ("auto", "alpha", "beta", "verifier")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class MeshConfigError(ValueError):
    """A mesh command-line option is out of range or inconsistent."""


# -- argparse types every command uses: a bad value is refused while parsing, in one line
# ("cadencia X: error: argument --timeout: must be in 0.1..3600 s, got '-1'"), exit 2.

def clip(text: str, limit: int = 40) -> str:
    """`text` quoted for an error message and cut short: a hostile argument may be huge."""
    shown = repr(text[:limit])
    return shown if len(text) <= limit else f"{shown[:-1]}...{shown[-1]} ({len(text)} chars)"


def _bound(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e18:
        return f"{int(value):_}"
    return f"{value:g}"


def number(kind: type[int | float], lo: float, hi: float,
           unit: str = "") -> Callable[[str], Any]:
    """An argparse type: a finite `kind` in [lo, hi], else the allowed range in one line."""
    allowed = f"{_bound(lo)}..{_bound(hi)}{' ' + unit if unit else ''}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(
                f"invalid {kind.__name__} value: {clip(text)} ({name} in {allowed})") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"must be in {allowed}, got {clip(text)}")
        return value

    parse.__name__ = kind.__name__
    return parse


def text(what: str, *, max_chars: int = 1 << 20, empty: bool = False) -> Callable[[str], str]:
    """An argparse type for free text (a prompt, a script): valid UTF-8 (argv bytes that are
    not arrive as surrogate escapes), not blank unless `empty`, at most `max_chars`."""

    def parse(value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a character"
            raise argparse.ArgumentTypeError(
                f"{what} is not valid UTF-8 ({byte} at character {exc.start}); "
                "give it as UTF-8 text") from None
        if not empty and not value.strip():
            raise argparse.ArgumentTypeError(f"{what} is empty")
        if len(value) > max_chars:
            raise argparse.ArgumentTypeError(f"{what} is {len(value):_} characters long; at "
                                             f"most {max_chars:_} are taken")
        return value

    parse.__name__ = "text"
    return parse


def ip_address(value: str) -> str:
    """An argparse type: a literal IPv4 or IPv6 address (a candidate host, not a name)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address like 127.0.0.1, got "
                                         f"{clip(value)}") from None


SECONDS = 86_400.0  # the longest timer a flag may set: a day


def add_mesh_arguments(parser: argparse.ArgumentParser, *, default_role: str = "auto",
                       spans: bool = True) -> None:
    """Flags shared by `cadencia node`, `cadencia sentinel` and `cadencia hive up`."""
    parser.add_argument("--role", choices=ROLE_CHOICES, default=default_role,
                        help="what this node computes: alpha (attention), beta (MLP), "
                             "verifier, or auto (alpha and beta; the planner decides)")
    parser.add_argument("--data-dir", default=None, metavar="D",
                        help="where the node key lives (default: $CADENCIA_DATA_DIR, else the "
                             "user data dir)")
    parser.add_argument("--ice-host", action="append", default=None, metavar="ADDR",
                        type=ip_address,
                        help="gather WebRTC candidates on ADDR only (repeatable); default: "
                             "127.0.0.1 when every given address is loopback")
    parser.add_argument("--loopback-candidate", action="store_true",
                        help="also offer a 127.0.0.1 candidate (aioice skips loopback)")
    parser.add_argument("--no-lan-links", dest="lan_links", action="store_false",
                        help="use data channels only, even to peers on this machine or LAN "
                             "(default: a direct WebSocket to each near peer that listens, "
                             "beside its data channel, carries its traffic; also "
                             "CADENCIA_LAN_LINKS=0)")
    parser.add_argument("--connect-timeout", type=number(float, 0.1, 600, "s"), default=15.0,
                        metavar="S",
                        help="give up on a data channel not open after S seconds (default 15)")
    parser.add_argument("--ping-interval", type=number(float, 0.05, 3600, "s"), default=2.0,
                        metavar="S",
                        help="RTT probe period per link (default 2)")
    parser.add_argument("--dead-after", type=number(float, 0.1, SECONDS, "s"), default=8.0,
                        metavar="S",
                        help="declare a peer dead after S silent seconds (default 8)")
    parser.add_argument("--record-ttl", type=number(float, 1, SECONDS, "s"), default=120.0,
                        metavar="S",
                        help="lifetime of this node's DHT records (default 120; republished at "
                             "a quarter of it)")
    if spans:
        parser.add_argument("--serve", action="append", default=[], metavar="MODEL:START-END/N",
                            type=span_text,
                            help="serve layers [START, END) of the N-layer MODEL (the GGUF file "
                                 "name), e.g. model.gguf:0-15/30 (repeatable)")
    else:
        parser.set_defaults(serve=[])
    # Set by `hive up` on its children: stop when that process is gone (even after SIGKILL).
    parser.add_argument("--parent-pid", type=number(int, 1, 2**31 - 1), default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--tflops", type=number(float, 0, 1e5), default=None, metavar="X",
                        help="report X TFLOPS instead of running the start-up benchmark")
    parser.add_argument("--max-memory", type=number(float, 1, 1e9, "MB"), default=None,
                        metavar="MB",
                        help="give the hive at most MB MiB: published as this node's free RAM "
                             "(the planner places no more on it) and enforced on the layers it "
                             "loads, counting a full context's KV cache for each attention it "
                             "runs (so a node short of memory can still take the MLP half of "
                             "an attention/MLP split); default: what the machine has")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line when ready (id, listen URL, peers) on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="log mesh events")


def parse_span(text: str) -> LayerSpanRecord:
    """``MODEL:START-END/N`` -> LayerSpanRecord; MeshConfigError on anything else."""
    model, sep, rest = text.rpartition(":")
    numbers = re.fullmatch(r"(\d{1,5})-(\d{1,5})/(\d{1,5})", rest, re.ASCII)
    if not (sep and model and numbers):
        raise MeshConfigError(f"bad --serve {clip(text)}: expected MODEL:START-END/N, "
                              "e.g. smollm2-135m:0-15/30")
    start, end, total = (int(g) for g in numbers.groups())
    if len(model.encode("utf-8", "surrogateescape")) > 128 or total > 65535:
        raise MeshConfigError(f"bad --serve {clip(text)}: model name over 128 bytes or N over "
                              "65535")
    try:
        model.encode("utf-8")
        return LayerSpanRecord(model, start, end, total)
    except ValueError as exc:
        raise MeshConfigError(f"bad --serve {clip(text)}: {str(exc)[:120]}") from None


def span_text(text: str) -> str:
    """An argparse type for ``--serve``: the span is checked while parsing, kept as text."""
    try:
        parse_span(text)
    except MeshConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def roles_for(role: str, *, sentinel: bool = False) -> tuple[str, ...]:
    roles = ("alpha", "beta") if role == "auto" else (role,)
    return ("sentinel", *roles) if sentinel else roles


def _host_of(address: str) -> str:
    if address.startswith("ws://"):
        return parse_ws_url(address)[0]
    return parse_listen(address)[0]


def rtc_options(args: argparse.Namespace, addresses: list[str]) -> RTCOptions:
    """Candidates on --ice-host, else on 127.0.0.1 when the hive is all-loopback."""
    if args.connect_timeout <= 0:
        raise MeshConfigError("--connect-timeout must be positive")
    hosts = [_host_of(a) for a in addresses]
    if args.ice_host:
        return RTCOptions(host_addresses=tuple(args.ice_host),
                          loopback_candidate=args.loopback_candidate,
                          connect_timeout_s=args.connect_timeout)
    if hosts and all(h in LOOPBACK_HOSTS for h in hosts):
        return RTCOptions.loopback(connect_timeout_s=args.connect_timeout)
    return RTCOptions(loopback_candidate=args.loopback_candidate,
                      connect_timeout_s=args.connect_timeout)


def node_config(args: argparse.Namespace, *, listen: str | None, join: list[str],
                sentinel: bool = False) -> NodeConfig:
    """A NodeConfig from the shared flags; MeshConfigError on nonsense values."""
    for url in join:
        parse_ws_url(url)
    if listen is not None:
        parse_listen(listen)
    if not 0 < args.ping_interval < args.dead_after:
        raise MeshConfigError("need 0 < --ping-interval < --dead-after")
    if not 1.0 <= args.record_ttl <= 86_400:
        raise MeshConfigError("--record-ttl must be between 1 and 86400 seconds")
    if args.tflops is not None and not 0 <= args.tflops <= 1e5:
        raise MeshConfigError("--tflops must be between 0 and 100000")
    return NodeConfig(
        listen=listen, join=tuple(join), roles=roles_for(args.role, sentinel=sentinel),
        rtc=rtc_options(args, [*join, *([listen] if listen else [])]),
        ping_interval_s=args.ping_interval, dead_after_s=args.dead_after,
        record_ttl_s=args.record_ttl, republish_s=args.record_ttl / 4, tflops=args.tflops,
        spans=tuple(parse_span(s) for s in args.serve),
        max_memory_mb=check_max_memory(getattr(args, "max_memory", None)),
        lan_links=getattr(args, "lan_links", True) and lan_default(),
    )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_identity(data_dir: str | None, sub: str = "") -> tuple[Identity, Path]:
    from hive_core.base.paths import data_dir as resolve

    base = resolve(data_dir)
    where = base / sub if sub else base
    return Identity.load_or_create(where), where


KNOWN_ENTRIES = "entries.txt"  # in the data dir: listen URLs of peers seen, to rejoin through
MAX_KNOWN_ENTRIES = 16


def load_entries(directory: Path) -> list[str]:
    """Entry URLs saved by an earlier run (valid ``ws://`` lines only; others are skipped)."""
    try:
        lines = (directory / KNOWN_ENTRIES).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    good = []
    for line in lines[:MAX_KNOWN_ENTRIES]:
        try:
            parse_ws_url(line.strip())
        except ValueError:
            continue
        good.append(line.strip())
    return good


def save_entries(directory: Path, urls: list[str]) -> None:
    """Remember where peers listen, so a restart can rejoin after the sentinel is gone."""
    urls = list(dict.fromkeys(urls))[:MAX_KNOWN_ENTRIES]
    if urls:
        tmp = directory / (KNOWN_ENTRIES + ".tmp")
        tmp.write_text("".join(u + "\n" for u in urls), encoding="utf-8")
        tmp.replace(directory / KNOWN_ENTRIES)


async def watch_parent(pid: int, stop: asyncio.Event, period_s: float = 0.5) -> None:
    """Set `stop` once process `pid` is no longer this process's parent (it died)."""
    while os.getppid() == pid:
        await asyncio.sleep(period_s)
    print(f"parent process {pid} is gone: stopping", file=sys.stderr, flush=True)
    stop.set()


Hook = Callable[[Any], Awaitable[None]]


async def serve(hive: Any, *, as_json: bool, what: str, data_dir: Path | None = None,
                parent_pid: int | None = None, attach: Hook | None = None,
                detach: Hook | None = None) -> None:
    """Start `hive`, announce it, and run until SIGINT/SIGTERM (or `parent_pid` dies), then
    leave cleanly. `attach(hive)` runs before the hive starts (so channel handlers are in
    place before any link comes up), `detach(hive)` before it closes."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watcher = None if parent_pid is None else asyncio.ensure_future(watch_parent(parent_pid, stop))
    print(f"{what} {hive.node_id.hex()[:12]}: starting ...", file=sys.stderr, flush=True)
    began = False
    try:
        if attach is not None:
            began = True
            await attach(hive)
        await hive.start()
        ready = {"event": "ready", "id": hive.node_id.hex(), "listen": hive.listen_url,
                 "peers": len(hive.node.peers), "roles": list(hive.config.roles)}
        if as_json:
            print(json.dumps(ready), flush=True)
        where = f", listening on {hive.listen_url}" if hive.listen_url else ""
        print(f"{what} {hive.node_id.hex()[:12]} ready{where}, {len(hive.node.peers)} data "
              f"channel peers; Ctrl-C to leave", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if watcher is not None:
            watcher.cancel()
        if began and detach is not None:
            try:
                await detach(hive)
            except (OSError, ValueError, RuntimeError) as exc:  # leave the mesh cleanly anyway
                print(f"{what}: while stopping: {exc}", file=sys.stderr, flush=True)
        if data_dir is not None:
            save_entries(data_dir, hive.entry_urls())
        await hive.close()
        print(f"{what} {hive.node_id.hex()[:12]} stopped", file=sys.stderr, flush=True)
