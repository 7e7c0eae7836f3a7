"""A model file's bytes as one uint8 tensor over a memory map (`file_bytes`), shared by every
matrix our kernel multiplies where the file holds it; where an array of blocks lies in its
file (`file_of`); bringing a matrix's pages in at load (`populate`) and letting them go
(`evict`), or, within `streaming()`, neither holding them at load nor after each product."""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from hive_core.model.packed.memory import LIBC

_MADV_POPULATE_READ = 22  # Linux 5.14: fault the range in, readable, without touching it
_maps: dict[tuple[str, int, int], weakref.ref[torch.Tensor]] = {}
_lock = threading.Lock()
_streaming = threading.local()


@contextmanager
def streaming() -> Iterator[None]:
    """On this thread, while inside: a load leaves its matrices' pages out (`populate` does
    nothing) and each product lets its rows' pages go as soon as it is done (`BlockLinear`).
    A stage computed once and then dropped, such as another node's stage being audited, so
    holds a slice of one matrix's pages at a time instead of the whole stage's."""
    old = getattr(_streaming, "on", False)
    _streaming.on = True
    try:
        yield
    finally:
        _streaming.on = old


def streamed() -> bool:
    """Whether this thread is inside `streaming()`."""
    return bool(getattr(_streaming, "on", False))


def file_bytes(path: str | os.PathLike[str]) -> torch.Tensor:
    """The whole file at `path` as a uint8 tensor over a private memory map, one per file and
    process while any matrix holds it.

    Only the pages a product reads become resident, and they are the page cache's own (a
    private map shares them until written; nothing writes them: torch merely wants a
    writable buffer, which a read-only map is not)."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _lock:
        ref = _maps.get(key)
        held = ref() if ref is not None else None
        if held is None:
            held = torch.from_numpy(np.memmap(key[0], dtype=np.uint8, mode="c"))
            _maps[key] = weakref.ref(held)
        return held


def file_of(blocks: np.ndarray) -> tuple[str, int] | None:
    """(path, byte offset) of `blocks` in their file when they are contiguous rows of a
    memory-mapped file (what `GGUFModelFile.raw` hands out); None for arrays in memory."""
    if blocks.ndim != 2 or not blocks.flags.c_contiguous:
        return None
    root: object = blocks
    while isinstance(root, np.ndarray):
        if isinstance(root, np.memmap) and isinstance(root.base, mmap.mmap):
            if root.filename is None:
                return None
            return str(root.filename), blocks.ctypes.data - root.ctypes.data + int(root.offset)
        root = root.base
    return None


def populate(data: torch.Tensor, start: int, nbytes: int) -> None:
    """Read bytes ``start .. start + nbytes`` of a mapped file in now (a load's work, not the
    first token's); a hint where the kernel cannot populate a range. No-op off Linux and
    inside `streaming()`."""
    if streamed():
        return
    span = _pages(data, start, nbytes)
    if span is not None and LIBC is not None and LIBC.madvise(*span, _MADV_POPULATE_READ) != 0:
        LIBC.madvise(*span, mmap.MADV_WILLNEED)


def evict(data: torch.Tensor, start: int, nbytes: int) -> None:
    """Drop this process's pages of bytes ``start .. start + nbytes`` of a mapped file (they
    stay in the page cache; a later product faults them in again). No-op off Linux."""
    span = _pages(data, start, nbytes)
    if span is not None and LIBC is not None:
        LIBC.madvise(*span, mmap.MADV_DONTNEED)


def _pages(data: torch.Tensor, start: int, nbytes: int) -> tuple[ctypes.c_void_p, ctypes.c_size_t] | None:
    """The whole pages covering bytes ``start .. start + nbytes`` of `data`, for madvise."""
    if nbytes <= 0 or not 0 <= start <= data.numel() - nbytes:
        return None
    page = mmap.PAGESIZE
    begin = (data.data_ptr() + start) // page * page
    return ctypes.c_void_p(begin), ctypes.c_size_t(data.data_ptr() + start + nbytes - begin)
