"""What computes a stage here: the kernel class servers attest, the model file's digest, and
loading a stage on a chosen kernel path (tests, benches and evidence replays mix classes).

The class (`hive_core.trust.kernels`) is read from this process: the weights mode, the path
our kernel takes (`hive_core.native`: AVX-512, AVX2, portable) or torch's int4 kernel where
ours is off, torch's CPU dispatch, its thread count and version.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hive_core import native
from hive_core.base.stage import Stage
from hive_core.exec.errors import ExecError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.packed import BlockLinear, RowSlice

NATIVE_PATHS = {512: "avx512", 256: "avx2", 0: "portable"}  # native.simd() -> class path
VARIANTS = {"avx2": "avx2", "portable": "portable"}  # class path -> native.variant_ops name
_digests: dict[tuple[str, int, int], bytes] = {}
_lock = threading.Lock()
_env_lock = threading.Lock()


def native_path() -> str:
    """The path packed matrices take in this process: our kernel's widest, else "int4"."""
    ops = native.ops()
    return "int4" if ops is None else NATIVE_PATHS.get(int(ops.simd()), "portable")


def native_build(path: str) -> str:
    """Our kernel's build behind `path` (a hash of its sources, flags, torch and this CPU's
    features): two builds may round differently, so it is part of the kernel class."""
    flags = () if path == native_path() else (*native.VARIANTS[VARIANTS[path]],
                                              f"-DCADENCIA_OPS=cadencia_{VARIANTS[path]}")
    return native.library_path(flags).stem.rsplit("-", 1)[-1][:8]


def kernel_class(weights: str, path: str | None = None, threads: int | None = None) -> str:
    """This process's kernel class for `weights` (`path`: the packed path, if not the default)."""
    if weights == "packed":
        path = path or native_path()
        if path != "int4":
            path = f"{path}@{native_build(path)}"
    elif path not in (None, "torch"):
        raise ExecError(f"{weights} weights run on torch, not on {path!r}")
    else:
        path = "torch"
    cpu = torch.backends.cpu.get_cpu_capability()
    n = threads if threads is not None else torch.get_num_threads()
    return f"{weights}/{path}/{cpu}/t{n}/{torch.__version__.split('+')[0]}"


def model_digest(path: Path | str) -> bytes:
    """BLAKE2b-256 of a model file's bytes (computed once per file and process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        known = _digests.get(key)
    if known is not None:
        return known
    h = hashlib.blake2b(digest_size=32)
    with p.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    digest = h.digest()
    with _lock:
        _digests[key] = digest
    return digest


@contextmanager
def _native_off() -> Iterator[None]:
    """Our kernel turned off while a load packs for torch's int4 kernel instead. The switch is
    process-wide: a load on another thread meanwhile would pack for int4 too, so callers that
    mix paths load one at a time (`build_hive` starts such servers in turn)."""
    with _env_lock:
        old = os.environ.get(native.DISABLE_ENV)
        os.environ[native.DISABLE_ENV] = "0"
        try:
            yield
        finally:
            if old is None:
                del os.environ[native.DISABLE_ENV]
            else:
                os.environ[native.DISABLE_ENV] = old


def _swap(m: Any, kernel: Any, done: dict[int, Any]) -> Any:
    if isinstance(m, RowSlice):
        whole = done.get(id(m.whole))
        if whole is None:  # fused siblings keep sharing one matrix
            whole = done[id(m.whole)] = replace(m.whole, kernel=kernel)
        return RowSlice(whole, m.start, m.stop)
    if isinstance(m, BlockLinear):
        return replace(m, kernel=kernel)
    return m


def use_path(ex: ShardExecutor, path: str) -> ShardExecutor:
    """`ex` (packed on our kernel) with its matrices multiplied by our kernel's `path` build."""
    if path not in VARIANTS:
        return ex
    kernel = native.variant_ops(VARIANTS[path]).block_linear
    done: dict[int, Any] = {}
    w = ex.weights
    att = {layer: replace(a, q=_swap(a.q, kernel, done), k=_swap(a.k, kernel, done),
                          v=_swap(a.v, kernel, done), o=_swap(a.o, kernel, done))
           for layer, a in w.attention.items()}
    mlp = {layer: replace(f, gate=_swap(f.gate, kernel, done), up=_swap(f.up, kernel, done),
                          down=_swap(f.down, kernel, done)) for layer, f in w.mlp.items()}
    ex.weights = replace(w, attention=att, mlp=mlp)
    return ex


def load_stages(file: GGUFModelFile, stages: Iterable[Stage], weights: str,
                path: str | None = None) -> ShardExecutor:
    """Stages of `file` held in `weights` mode; packed ones on kernel `path` (None: this
    process's default; "int4": torch's int4 kernel; "avx2"/"portable": our narrower builds)."""
    stages = list(stages)
    if weights != "packed" or path in (None, native_path()):
        return ShardExecutor.load(file, stages, weights=weights)
    if path == "int4":
        with _native_off():
            return ShardExecutor.load(file, stages, weights=weights)
    if path not in VARIANTS or native.ops() is None:
        raise ExecError(f"kernel path {path!r} cannot run here (this process packs for "
                        f"{native_path()})")
    return use_path(ShardExecutor.load(file, stages, weights=weights), path)
