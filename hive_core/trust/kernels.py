"""Kernel classes: which computations give identical bits, and how far honest ones differ otherwise.

A kernel class names everything that decides the bits of a stage's output on a given model:
the weights mode, the matrix kernel's path (with our kernel's build: its sources, flags and
the CPU features it was built for, as ``path@build``), torch's CPU dispatch, the thread count
and torch's version, as ``weights/path/cpu/tN/torch`` (``packed/avx512@1f2e3d4c/AVX512/t2/
2.13.0``).
Two runs of one class on the same inputs and step structure give the same bytes (tested),
so their Merkle roots must be equal. Between classes, outputs differ by float rounding
only; `row_tolerance` is that difference's calibrated bound per token row, from
`hive_core.trust.calibration` (measured by ``python -m bench calibrate``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hive_core.trust import calibration
from hive_core.trust.errors import TrustError

WEIGHTS = ("fp32", "packed", "bf16")
PATHS = ("torch", "avx512", "avx2", "portable", "int4")
# The families whose honest outputs stay within a calibrated distance of each other: float32
# arithmetic on the GGUF's values (dense torch or our kernel's paths), torch's int4 kernel
# (its activations go through bfloat16), and bfloat16 weights.
FAMILY = {("fp32", "torch"): "f32", ("packed", "avx512"): "f32", ("packed", "avx2"): "f32",
          ("packed", "portable"): "f32", ("packed", "int4"): "int4", ("bf16", "torch"): "bf16"}
# Families whose honest classes differ too much for a bound to stop a careful liar (bfloat16:
# 3 % per row): there, only bit-identical outputs of one class agree, and nothing else judges.
EXACT_ONLY = frozenset({"bf16"})


@dataclass(frozen=True)
class KernelClass:
    """A parsed kernel class label."""

    weights: str  # fp32 | packed | bf16
    path: str  # torch (dense) | avx512 | avx2 | portable (our kernel) | int4 (torch's int4)
    cpu: str  # torch's CPU capability (AVX512, AVX2, DEFAULT, ...)
    threads: int  # torch threads of the computing process
    torch: str  # torch's version
    build: str = ""  # our kernel's build (sources, flags, CPU features); "" where not ours

    @property
    def family(self) -> str:
        return FAMILY[(self.weights, self.path)]

    def __str__(self) -> str:
        path = f"{self.path}@{self.build}" if self.build else self.path
        return f"{self.weights}/{path}/{self.cpu}/t{self.threads}/{self.torch}"


def parse_class(label: str) -> KernelClass:
    """The class a label names; TrustError for anything malformed or unknown."""
    parts = label.split("/")
    if len(parts) != 5:
        raise TrustError(f"kernel class {label[:64]!r} is not weights/path/cpu/tN/torch")
    weights, path, cpu, threads, torch = parts
    path, _, build = path.partition("@")
    if (weights, path) not in FAMILY:
        raise TrustError(f"unknown kernel {weights}/{path}")
    if not threads.startswith("t") or not threads[1:].isdigit() or not 0 < int(threads[1:]) < 4096:
        raise TrustError(f"bad thread count {threads!r} in kernel class")
    if not cpu or not torch or not (cpu + torch).isascii():
        raise TrustError(f"kernel class {label[:64]!r} lacks its CPU or torch version")
    if build and not (build.isascii() and build.isalnum()):
        raise TrustError(f"bad kernel build {build[:16]!r} in kernel class")
    return KernelClass(weights, path, cpu, int(threads[1:]), torch, build)


def exact(a: str, b: str) -> bool:
    """Whether outputs of classes `a` and `b` must be bit-identical (the same class)."""
    return parse_class(a) == parse_class(b)


def row_tolerance(a: str, b: str) -> float:
    """The largest honest per-row relative L2 difference between classes `a` and `b`: 0.0 for
    one class (bits must match), the calibrated bound otherwise; TrustError when honest
    outputs of the two are not comparable (bfloat16 weights against float32 ones)."""
    ka, kb = parse_class(a), parse_class(b)
    if ka == kb:
        return 0.0
    fa, fb = ka.family, kb.family
    if {fa, fb} & EXACT_ONLY:
        raise TrustError(f"{fa} outputs of different kernel classes cannot be compared")
    measured = calibration.MEASURED.get((min(fa, fb), max(fa, fb)))
    if measured is None:
        raise TrustError(f"outputs of {ka.family} and {kb.family} kernels cannot be compared")
    return float(measured) * calibration.SAFETY


def audit_tolerance(a: str, b: str) -> float:
    """The per-row bound between a worker's step-by-step outputs (class `a`) and an audit's
    one-prefill recomputation of the same inputs (class `b`): batching changes the order of
    some sums, so even one class is not bit-identical here."""
    fa, fb = parse_class(a).family, parse_class(b).family
    if {fa, fb} & EXACT_ONLY:
        raise TrustError(f"{fa} outputs cannot be audited by a prefill (its rounding spread "
                         "would hide a lie)")
    measured = calibration.AUDIT.get((min(fa, fb), max(fa, fb)))
    if measured is None:
        raise TrustError(f"outputs of {fa} and {fb} kernels cannot be compared")
    return float(measured) * calibration.SAFETY
