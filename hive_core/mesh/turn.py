"""The TURN relay a sentinel offers (coturn) and the short-lived credentials it hands to nodes.

When two homes' routers defeat hole punching (a symmetric NAT maps every destination to
another port), WebRTC's fallback is a TURN relay. `cadencia sentinel --turn` starts coturn
(Debian's `coturn` package, the server everyone deploys) with the TURN REST API scheme: the
sentinel and coturn share a random secret; a node the sentinel admits gets a username
``"<expiry>:<node id>"`` and the password ``base64(HMAC-SHA1(secret, username))``, which
coturn checks itself, so credentials expire without any state in either server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

TURN_BINARY = "turnserver"
DEFAULT_TURN_PORT = 3479  # beside the sentinel's STUN port
CREDENTIAL_TTL_S = 6 * 3600  # a node re-asks when it rejoins; relays outlive no session long
START_TIMEOUT_S = 10.0


class TurnError(RuntimeError):
    """coturn is not installed, did not start, or was given an unusable address."""


@dataclass(frozen=True)
class TurnCredential:
    """What a node needs to allocate a relay: the URL and a time-limited login."""

    url: str  # turn:HOST:PORT (UDP)
    username: str
    password: str
    expires_at: int  # unix seconds


def credential(secret: bytes, url: str, who: str, *, ttl_s: int = CREDENTIAL_TTL_S,
               now: float | None = None) -> TurnCredential:
    """A TURN REST API credential for `who` (a node id in hex), valid for `ttl_s`."""
    expires = int((time.time() if now is None else now) + ttl_s)
    username = f"{expires}:{who}"
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return TurnCredential(url, username, base64.b64encode(digest).decode(), expires)


@dataclass
class TurnServer:
    """A running coturn process; `close` stops it."""

    process: asyncio.subprocess.Process
    host: str
    port: int
    secret: bytes

    @property
    def url(self) -> str:
        return f"turn:{self.host}:{self.port}"

    def credential_for(self, who: str) -> TurnCredential:
        return credential(self.secret, self.url, who)

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def turn_available() -> str | None:
    """None when coturn can be started here, else why not (one line)."""
    if shutil.which(TURN_BINARY) is None:
        return "coturn is not installed (Debian: apt-get install coturn)"
    return None


async def start_turn(host: str, port: int = DEFAULT_TURN_PORT, *, state_dir: Path,
                     relay_ports: tuple[int, int] = (49160, 49400),
                     secret: bytes | None = None) -> TurnServer:
    """Start coturn listening and relaying on `host` (an address of this machine; `port` 0:
    any free one); its pid file and (unused) user database live in `state_dir`."""
    why = turn_available()
    if why is not None:
        raise TurnError(why)
    secret = secret or base64.b32encode(os.urandom(20)).lower()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_udp_port(host)
    low, high = relay_ports
    args = [
        TURN_BINARY, "-n", "--no-tls", "--no-dtls", "--no-cli", "--no-tcp-relay",
        "--listening-ip", host, "--listening-port", str(port), "--relay-ip", host,
        "--min-port", str(low), "--max-port", str(high),
        "--use-auth-secret", "--static-auth-secret", secret.decode(), "--realm", "cadencia",
        "--fingerprint", "--no-multicast-peers", "--log-file", "stdout", "--simple-log",
        "--pidfile", str(state_dir / "turnserver.pid"), "--userdb", str(state_dir / "turndb"),
    ]
    if host.startswith("127."):
        args.append("--allow-loopback-peers")
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    server = TurnServer(proc, host, port, secret)
    try:
        await asyncio.wait_for(_wait_listening(proc), START_TIMEOUT_S)
    except (TimeoutError, TurnError):
        await server.close()
        raise
    asyncio.ensure_future(_drain(proc))  # keep reading its log so it never blocks on a pipe
    logger.info("turn: coturn relaying on %s:%d", host, port)
    return server


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _wait_listening(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = await proc.stdout.readline()
        if not line:
            tail = " | ".join(seen[-3:])
            raise TurnError(f"coturn exited (status {await proc.wait()}): {tail}")
        text = line.decode(errors="replace").strip()
        seen.append(text)
        if "Total General servers" in text or "IPv4. UDP listener opened on" in text:
            return


async def _drain(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.readline():
        pass
