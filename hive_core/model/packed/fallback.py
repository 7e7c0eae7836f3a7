"""Matrices no packed kernel takes: what they would cost as float32, said in one line, and a
refusal to load them that way unless the caller allows it."""

from __future__ import annotations

import logging

from hive_core import native
from hive_core.model.errors import UnsupportedModelError
from hive_core.model.packed.formats import FORMATS

log = logging.getLogger(__name__)

ALLOW_HINT = "pass --allow-dequant (allow_dequant=True) to load it so"


def dequant_line(name: str, qtype: str, shape: tuple[int, ...], stored_bytes: int) -> str:
    """One line: the tensor, its type, and the memory it takes dequantised to float32."""
    dense = 4
    for n in shape:
        dense *= n
    why = (f"our CPU kernel, which would multiply it in its blocks, is unavailable here "
           f"({native.unavailable_reason()})" if qtype in FORMATS
           else "no kernel here multiplies that type in its blocks")
    dims = " x ".join(str(n) for n in shape)
    return (f"{name} is {qtype} [{dims}] and {why}: as float32 it would take "
            f"{dense / 1e6:.1f} MB, {dense / max(stored_bytes, 1):.1f}x its "
            f"{stored_bytes / 1e6:.2f} MB in the file")


def check_dequant(name: str, qtype: str, shape: tuple[int, ...], stored_bytes: int, *,
                  allow: bool) -> None:
    """Let a matrix be dequantised to float32 whole: F32 ones always (the file holds float32),
    others only when `allow` (logged as a warning, one line); else `UnsupportedModelError`."""
    if qtype == "F32":
        return
    line = dequant_line(name, qtype, shape, stored_bytes)
    if not allow:
        raise UnsupportedModelError(f"{line}; {ALLOW_HINT}")
    log.warning("%s; loading it dequantised, as allowed", line)
