"""The memory a node gives the hive (`--max-memory`): what it publishes and what it may load.

A node started with a cap publishes the cap (or the machine's available memory, if less) as
its free RAM, so the planner (`CostModel.max_layers`) places no more on it than that, and
refuses to load a stage past it. A stage costs what the planner counts for it, in the bytes
this node really holds: its matrices in the node's weights mode (packed: as the file stores
them; fp32 or bf16: dequantised) and, for each layer whose attention it runs, the KV cache of
a full context in float32 (`CostModel.kv_bytes_per_layer`): a session may grow it that far,
so a layer is taken only with room for it. An MLP stage holds no cache, which is what lets a
node short of memory for a long context serve the MLP half of a split (beta).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hive_core.base.stage import Part, Stage
from hive_core.model.errors import ModelError

MB = 1024 * 1024
MAX_MEMORY_MB = 1.0e9  # the Health Vector's bound on free RAM


class MemoryCapError(ModelError):
    """A stage would take this node past the memory it gives the hive (`--max-memory`), or the
    cap itself is out of range. A server answers a step it cannot load so as unsupported."""


@dataclass(frozen=True)
class LayerBytes:
    """What one layer's parts cost a node, in bytes."""

    attention: int  # attention matrices and norm, as held in the node's weights mode
    mlp: int  # MLP matrices and norm, as held
    kv: int  # KV cache of a full context in float32: reserved with the attention

    def of(self, part: Part) -> int:
        """Bytes a stage of `part` takes for this layer."""
        return ((self.attention + self.kv if part.has_attention else 0)
                + (self.mlp if part.has_mlp else 0))


def layer_bytes(path: str | os.PathLike[str], weights: str) -> list[LayerBytes]:
    """Each layer's `LayerBytes` for a node holding the GGUF file at `path` in mode `weights`
    ("packed", "fp32" or "bf16")."""
    # torch: imported only where a node serves
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.weights import DENSE_BYTES, needed_tensors

    file = GGUFModelFile(path)
    cfg = file.config
    kv = 2 * cfg.kv_dim * cfg.context_length * 4
    if weights in DENSE_BYTES:
        per = DENSE_BYTES[weights]
        attn = (2 * cfg.hidden * cfg.hidden + 2 * cfg.kv_dim * cfg.hidden + cfg.hidden) * per
        mlp = (3 * cfg.hidden * cfg.ffn + cfg.hidden) * per
        return [LayerBytes(attn, mlp, kv) for _ in range(cfg.n_layers)]

    def stored(layer: int, part: Part) -> int:  # the tensors a load of that part reads
        names = needed_tensors(file, [Stage(layer, layer + 1, part)], embed=False, head=False)
        return sum(int(file.raw(n)[0].nbytes) for n in names)

    return [LayerBytes(stored(i, Part.ATTENTION), stored(i, Part.MLP), kv)
            for i in range(cfg.n_layers)]


def published_free_mb(available_mb: float, max_memory_mb: float | None) -> float:
    """The free RAM a node publishes: what the machine has, at most its cap."""
    if max_memory_mb is None:
        return available_mb
    return min(available_mb, max_memory_mb)


def check_max_memory(value: float | None) -> float | None:
    """`value` (MiB) if it is a usable cap (or None: no cap); MemoryCapError otherwise."""
    return None if value is None else _checked(value)


def cap_bytes(max_memory_mb: float) -> int:
    """The bytes of a `--max-memory` cap given in MiB; MemoryCapError out of range."""
    return int(_checked(max_memory_mb) * MB)


def _checked(value: float) -> float:
    if isinstance(value, bool) or not 1.0 <= value <= MAX_MEMORY_MB:
        raise MemoryCapError(f"--max-memory must be 1 to {MAX_MEMORY_MB:.0f} MB, got {value!r}")
    return float(value)


class MemoryBudget:
    """The stages a node holds under its cap: `admit` one before loading it (MemoryCapError
    when it does not fit, with the numbers), `release` it when its weights go."""

    def __init__(self, cap_bytes: int, layers: list[LayerBytes]) -> None:
        if cap_bytes <= 0:
            raise MemoryCapError(f"a memory cap must be positive, got {cap_bytes} bytes")
        self.cap_bytes = cap_bytes
        self.layers = layers
        self.held: dict[Stage, int] = {}

    @property
    def used_bytes(self) -> int:
        return sum(self.held.values())

    def cost(self, stage: Stage) -> int:
        """Bytes `stage` takes here (see the module)."""
        stage.check(len(self.layers))
        return sum(self.layers[i].of(stage.part) for i in stage.layers)

    def check(self, stages: list[Stage]) -> None:
        """Raise MemoryCapError unless `stages` fit beside what is held (holds nothing)."""
        new = [s for s in dict.fromkeys(stages) if s not in self.held]
        need = sum(self.cost(s) for s in new)
        if self.used_bytes + need > self.cap_bytes:
            what = f"stage {new[0]}" if len(new) == 1 else f"stages {', '.join(map(str, new))}"
            raise MemoryCapError(
                f"{what} need{'s' if len(new) == 1 else ''} {need / MB:.0f} MB (weights, and a full context's KV cache for "
                f"each attention) but this node gives at most {self.cap_bytes / MB:.0f} MB "
                f"(--max-memory) and holds {self.used_bytes / MB:.0f} MB")

    def admit(self, stage: Stage) -> None:
        """Count `stage` as held, or raise MemoryCapError if it would pass the cap."""
        self.check([stage])
        self.held.setdefault(stage, self.cost(stage))

    def release(self, stage: Stage) -> None:
        """Forget `stage` (its weights were dropped)."""
        self.held.pop(stage, None)
