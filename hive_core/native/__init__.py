"""Our CPU kernels (`kernels.cpp`, `formats.h`, `simd.h`): GGUF block matrices multiplied in
float32, built for this machine's CPU and loaded into torch as ``torch.ops.cadencia``.

`./setup.sh` builds them (``python -m hive_core.native build``); a process that finds them
missing builds them once on first use (tens of seconds of g++), under a file lock so that
processes starting together build once. The library lives in the user cache directory, named
by a hash of the sources, torch's version, the compiler flags and this CPU's features, so a
change to any of them builds a new one. The build takes the widest path this CPU has
(AVX-512, AVX2, or portable C++); `variant_ops` builds the narrower ones beside it, each
under its own op namespace, for the tests and the bench to hold side by side.

Without a compiler, or with ``CADENCIA_NATIVE=0``, `ops` returns None: packed Q4_0, Q4_1 and
Q8_0 weights then run on torch's int4 kernel (slower), and other block formats can only be
dequantised, which a load must be allowed to do (see `hive_core.model.packed`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import platformdirs

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
SOURCES = (SOURCE, SOURCE.with_name("formats.h"), SOURCE.with_name("simd.h"))
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++20")
DISABLE_ENV = "CADENCIA_NATIVE"  # "0" turns the kernels off
CACHE_ENV = "CADENCIA_NATIVE_DIR"  # where built libraries go (default: the user cache dir)
# Narrower builds of the same source: the flags that turn this CPU's wider paths off (only
# x86 has SIMD paths here, so elsewhere the main build is already the portable one).
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
VARIANTS = ({"avx2": ("-mno-avx512f",), "portable": ("-mno-avx512f", "-mno-avx2", "-mno-fma")}
            if _X86 else {"portable": ()})
PATHS = {512: "AVX-512", 256: "AVX2", 0: "portable"}  # simd() -> the path block_linear takes


class NativeBuildError(RuntimeError):
    """The kernels could not be compiled; the message carries the compiler's own words."""


def _cpu_features() -> str:
    """This CPU's feature flags (the build is -march=native)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compiler() -> str | None:
    """The C++ compiler to use: $CXX, else g++ or c++ on PATH."""
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    return None


def _torch_build_args() -> tuple[list[str], list[str]]:
    import torch
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    libdir = cpp_extension.library_paths()[0]
    links = [f"-L{libdir}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{libdir}"]
    return [abi, *includes], links


def library_path(extra_flags: tuple[str, ...] = ()) -> Path:
    """Where this source, torch, flag set and CPU's library is (or will be) built."""
    import torch

    h = hashlib.sha256()
    for part in (*(p.read_bytes() for p in SOURCES), torch.__version__.encode(),
                 " ".join((*FLAGS, *extra_flags)).encode(), _cpu_features().encode(),
                 sys.version.encode()):
        h.update(part)
        h.update(b"\0")
    root = Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("cadencia", appauthor=False))
    return root.expanduser() / "native" / f"kernels-{h.hexdigest()[:16]}.so"


def build(path: Path | None = None, *, force: bool = False, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile `kernels.cpp` to `path` (default `library_path(extra_flags)`) unless it is already
    there.

    Builds into a temporary file and renames it into place, holding a lock next to it, so a
    half-written library is never loaded. Raises `NativeBuildError` on failure.
    """
    path = path or library_path(extra_flags)
    cxx = compiler()
    if cxx is None:
        raise NativeBuildError("no C++ compiler found (install g++, or set CXX)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists() and not force:
                return path
            _compile(cxx, path, extra_flags)
    except OSError as e:
        raise NativeBuildError(f"cannot build into {path.parent}: {e}") from e
    return path


def _compile(cxx: str, path: Path, extra_flags: tuple[str, ...]) -> None:
    compile_args, link_args = _torch_build_args()
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = [cxx, *FLAGS, *extra_flags, *compile_args, str(SOURCE), *link_args, "-o", tmp]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-20:])
            raise NativeBuildError(f"{cxx} failed (exit {done.returncode}):\n{tail}")
        os.replace(tmp, path)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NativeBuildError(f"{cxx} could not run: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_lock = threading.Lock()
_state: dict[str, Any] = {}


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "off", "no", "false")


def ops() -> Any | None:
    """``torch.ops.cadencia`` with our kernels loaded (building them the first time), or None
    when they are turned off or cannot be built here (the reason: `unavailable_reason`)."""
    if disabled():
        return None
    with _lock:
        if "ops" not in _state:
            _state["ops"], _state["why"] = _load()
        return _state["ops"]


def unavailable_reason() -> str | None:
    """Why `ops` returned None (None when the kernels are loaded)."""
    if disabled():
        return f"{DISABLE_ENV}={os.environ.get(DISABLE_ENV)}"
    ops()
    return _state.get("why")


def _load() -> tuple[Any | None, str | None]:
    import torch

    path = library_path()
    try:
        if not path.exists():
            print(f"cadencia: compiling CPU kernels for this machine into {path} (once)",
                  file=sys.stderr, flush=True)
            build(path)
        torch.ops.load_library(str(path))
        return torch.ops.cadencia, None
    except (NativeBuildError, OSError, RuntimeError) as e:
        why = f"CPU kernels unavailable: {e}"
        log.warning("%s; packed weights use torch's int4 kernel (slower)", why)
        return None, why


def variant_ops(name: str) -> Any:
    """``torch.ops.cadencia_<name>``: this source built as the narrower variant `name` (see
    `VARIANTS`; once, into the cache) and loaded beside the main library. On a CPU without
    the variant's instructions its ``simd()`` says which path it did get. Raises
    `NativeBuildError` when it cannot be built."""
    import torch

    if name not in VARIANTS:
        raise ValueError(f"no kernel variant {name!r}; variants: {', '.join(VARIANTS)}")
    flags = (*VARIANTS[name], f"-DCADENCIA_OPS=cadencia_{name}")
    with _lock:
        key = f"variant:{name}"
        if key not in _state:
            path = library_path(flags)
            if not path.exists():
                build(path, extra_flags=flags)
            torch.ops.load_library(str(path))
            _state[key] = getattr(torch.ops, f"cadencia_{name}")
        return _state[key]
