"""Joining through a survivor right after the sentinel and two nodes died (kill -9): the join
tries the peers the survivor names at once, gives each a short deadline, and finishes well
within the default timeout instead of waiting out a connect timeout per dead peer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hive_core.base.identity import Identity
from hive_core.exec.join import join_hive
from hive_core.mesh.hivenode import HiveNode

from .conftest import FAST, wait_for

pytestmark = [pytest.mark.net, pytest.mark.timeout(120)]


async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadencia", *args, "--tflops", "1", "--no-world", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.stdout is not None
    return proc, json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))


async def test_a_join_through_a_survivor_does_not_wait_on_the_dead(tmp_path: Path) -> None:
    procs: list[asyncio.subprocess.Process] = []
    survivor = joiner = None
    try:
        sentinel, ready = await spawn("sentinel", "--listen", "127.0.0.1:0",
                                      "--data-dir", str(tmp_path / "s"))
        procs.append(sentinel)
        url = str(ready["listen"])
        for i in range(2):
            victim, _ = await spawn("node", "--join", url, "--listen", "127.0.0.1:0",
                                    "--data-dir", str(tmp_path / f"v{i}"))
            procs.append(victim)
        survivor = HiveNode(Identity.generate(), replace(FAST, join=(url,),
                                                         listen="127.0.0.1:0"))
        await asyncio.wait_for(survivor.start(), 30)
        await wait_for(lambda: len(survivor.node.peers.rtc_links()) == 3, 30,
                       "the survivor linked to the sentinel and both victims")
        for proc in procs:  # no Bye, no SCTP shutdown: they just vanish
            proc.send_signal(signal.SIGKILL)
        await asyncio.gather(*(p.wait() for p in procs))
        # At once, before the survivor has noticed: it still names the dead as its peers.
        assert len(survivor.node.peers.rtc_links()) == 3
        t0 = time.monotonic()
        joiner = await join_hive(survivor.listen_url, timeout_s=15)  # `ask`'s default
        took = time.monotonic() - t0
        assert joiner.node.peers.best(survivor.node_id) is not None
        assert took < 10, f"joining took {took:.1f} s"
        print(f"joined through the survivor in {took:.2f} s")
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for node in (joiner, survivor):
            if node is not None:
                await node.close()
