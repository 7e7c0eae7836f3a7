"""A connection flood against a listening node, as an attacker runs it (test tool).

    python tests/mesh/flood.py ws://127.0.0.1:PORT --slow 1000 --silent 1000 --seconds 20

The flood comes from `--sources` loopback addresses (127.0.1.1, 127.0.1.2, ...), as a botnet
would from many hosts, so honest clients on 127.0.0.1 are a source of their own. Each *slow* slot trickles its HTTP upgrade one byte at a time and never finishes it; each
*silent* slot completes the upgrade, authenticates with a fresh key of its own (a valid
Hello addressed to the node) and then says nothing. A slot the node drops reconnects after
a short pause, so the pressure lasts the whole run. Prints one JSON line of counts, after
a ``{"event": "flooding"}`` line once every slot has made its first attempt.
A raw client (sockets and hand-made frames) keeps the attacker's own cost low.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import time
from urllib.parse import urlsplit

from hive_core.base.identity import Identity, node_id_of
from hive_core.protocol import Hello, decode, encode, make_hello


def client_frame(payload: bytes) -> bytes:
    """A masked binary WebSocket frame, as a client must send."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One unmasked frame from the server (its payload)."""
    _, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return await reader.readexactly(n)


def upgrade_request(host: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()


class Flood:
    def __init__(self, url: str, seconds: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 0
        self.end = time.monotonic() + seconds
        self.counts = {"connects": 0, "connect_errors": 0, "authenticated": 0, "dropped": 0,
                       "refused_frames": 0}
        self.started = 0
        self.pause = (1.0, 3.0)  # seconds before a dropped slot reconnects

    async def slot(self, kind: str, source: str, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        first = True
        while time.monotonic() < self.end:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, local_addr=(source, 0)), 5)
            except (OSError, TimeoutError):
                self.counts["connect_errors"] += 1
                if first:
                    self.started += 1
                    first = False
                await asyncio.sleep(random.uniform(*self.pause))
                continue
            self.counts["connects"] += 1
            if first:
                self.started += 1
                first = False
            try:
                await (self.slow(reader, writer) if kind == "slow" else self.silent(reader, writer))
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                pass
            finally:
                self.counts["dropped"] += 1
                writer.close()
            await asyncio.sleep(random.uniform(*self.pause))

    async def slow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = upgrade_request(self.host, self.port)
        for i in range(len(request) - 1):  # never the last byte
            if time.monotonic() > self.end or reader.at_eof():
                return
            writer.write(request[i:i + 1])
            await writer.drain()
            await asyncio.sleep(1.0)

    async def silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(upgrade_request(self.host, self.port))
        await writer.drain()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        theirs = decode(await asyncio.wait_for(read_frame(reader), 10))
        if not isinstance(theirs, Hello):
            self.counts["refused_frames"] += 1
            return
        me = Identity.generate()  # a fresh key per connection
        writer.write(client_frame(encode(make_hello(me, audience=node_id_of(theirs.public_key)))))
        await writer.drain()
        self.counts["authenticated"] += 1
        while time.monotonic() < self.end:  # silent: read what comes until dropped
            data = await asyncio.wait_for(reader.read(65536), max(0.1, self.end - time.monotonic()))
            if not data:
                return

    async def run(self, slow: int, silent: int, sources: int, ramp_s: float) -> None:
        slots = ["slow"] * slow + ["silent"] * silent
        random.shuffle(slots)
        tasks = [asyncio.ensure_future(self.slot(kind, f"127.0.1.{1 + n % sources}",
                                                 ramp_s * n / max(1, len(slots))))
                 for n, kind in enumerate(slots)]
        while self.started < len(slots) and time.monotonic() < self.end:
            await asyncio.sleep(0.1)
        print(json.dumps({"event": "flooding", **self.counts}), flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--silent", type=int, default=1000)
    parser.add_argument("--sources", type=int, default=20, help="source addresses (<= 250)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to open the first wave")
    args = parser.parse_args()
    flood = Flood(args.url, args.seconds)
    asyncio.run(flood.run(args.slow, args.silent, min(250, max(1, args.sources)), args.ramp))
    print(json.dumps({"event": "done", **flood.counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
