"""Memory: dropping a memory map's resident pages, trimming the heap a load leaves behind, and
refusing weights this machine cannot hold (`check_fits`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

import numpy as np

from hive_core.model.errors import ModelError


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


LIBC = _libc() if sys.platform.startswith("linux") else None  # for madvise, malloc_trim, mallopt


def release_pages(blocks: np.ndarray) -> None:
    """Drop this process's resident pages of a read-only memory-mapped array.

    Packing reads a tensor's blocks once; the file pages would stay counted in RSS until
    unmapped. They are clean pages of a read-only file mapping, so a later read (an
    embedding lookup) just faults them in again. No-op off Linux or for ordinary arrays.
    """
    _advise(blocks, mmap.MADV_DONTNEED)


def _advise(blocks: np.ndarray, advice: int) -> None:
    root: object = blocks
    while isinstance(root, np.ndarray) and not isinstance(root, np.memmap):
        root = root.base
    if LIBC is None or not isinstance(root, np.memmap) or root.flags.writeable:
        return
    page = mmap.PAGESIZE
    start = blocks.ctypes.data // page * page
    end = blocks.ctypes.data + blocks.nbytes
    LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), advice)


def trim_heap() -> None:
    """Give the allocator's freed load scratch back to the OS (glibc keeps it otherwise)."""
    if LIBC is not None and hasattr(LIBC, "malloc_trim"):
        LIBC.malloc_trim(0)


class NotEnoughMemoryError(ModelError):
    """Weights that would not fit in this machine's available memory: refused before loading."""


def check_fits(need: int, what: str, *, available: int | None = None) -> None:
    """Refuse (`NotEnoughMemoryError`, with the numbers) when `need` bytes for `what` exceed
    the memory this machine has available (psutil's estimate: free plus reclaimable cache,
    which counts a model file already in the page cache on both sides)."""
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if need > available:
        raise NotEnoughMemoryError(
            f"{what} need {need / 1e9:.2f} GB but this machine has {available / 1e9:.2f} GB "
            "of memory available")
