"""Freed KV buffers go back to the OS when sessions end (glibc's malloc_trim, throttled)."""

from __future__ import annotations

import asyncio
import platform

import psutil
import pytest
import torch

from hive_core.exec import stage_host as host_mod
from hive_core.exec.heap import HeapTrimmer, _libc_trim
from hive_core.exec.hive import build_hive
from tests.exec.test_session_release import ask


def test_trims_are_throttled() -> None:
    calls: list[int] = []
    trim = HeapTrimmer(every_s=5.0, trim=lambda pad: calls.append(pad) or 1)
    assert [trim(now=t) for t in (0.0, 1.0, 4.9, 5.0, 6.0, 11.0)] == [
        True, False, False, True, False, True]
    assert calls == [0, 0, 0] and trim.trims == 3
    with pytest.raises(ValueError, match="trim period"):
        HeapTrimmer(every_s=-1.0)


@pytest.mark.skipif(platform.system() != "Linux" or _libc_trim() is None
                    or platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim")
def test_a_trim_returns_the_pages_of_freed_cache_sized_buffers() -> None:
    """Buffers of one layer's cache (48 KB) freed with a few kept between them stay in the
    arena (RSS does not drop on free); the trim hands their pages back."""
    me = psutil.Process()
    bufs = [torch.ones(3, 64, 64) for _ in range(2000)]  # 96 MB, touched
    kept = bufs[::8]
    del bufs
    before = me.memory_info().rss
    assert HeapTrimmer(every_s=0.0)()
    freed = before - me.memory_info().rss
    assert freed > 40 * 2**20, f"the trim gave back {freed / 2**20:.0f} MB of ~84 MB freed"
    assert len(kept) == 250


async def test_ending_sessions_trims_the_servers_heap(tiny_gguf, tiny_file, monkeypatch) -> None:
    trims: list[float | None] = []
    monkeypatch.setattr(host_mod, "trim_heap", lambda now=None: trims.append(now) or True)
    hive = await build_hive(tiny_gguf, 2, model=tiny_file)
    try:
        s = await ask(hive)
        for _ in range(100):
            if len(trims) >= 2:
                break
            await asyncio.sleep(0.02)
        assert len(trims) >= 2  # each server, as its session ended
        assert not [k for srv in hive.servers for k in srv.sessions if k[1] == s.session_id]
    finally:
        await hive.close()
