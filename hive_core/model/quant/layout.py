"""Which block format each tensor of a llama-architecture model gets for a file type, chosen
as llama.cpp's quantiser chooses it (``llama_tensor_get_type`` in ``src/llama-quant.cpp``)
for the types we write, without an importance matrix.

For Q4_K_M and Q5_K_M, ``attn_v`` and ``ffn_down`` get Q6_K in the first and last eighth of
the layers and every third layer between; an untied ``output.weight`` gets Q6_K; a tied
embedding is quantised like the output it doubles as. A row that is not whole blocks of the
chosen format falls back as llama.cpp does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then
F16 when even 32-value blocks do not fit), so
SmolLM2 (width 576) keeps K formats only for its 1536-wide ``ffn_down``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from hive_core.model.quant.formats import QuantizeError


@dataclass(frozen=True, slots=True)
class FileType:
    """A llama.cpp file type: its name, ``general.file_type`` number and default format."""

    name: str  # "Q4_K_M"
    number: int  # the general.file_type value (llama_ftype)
    default: str  # the format of a tensor no rule singles out


FILE_TYPES: dict[str, FileType] = {t.name: t for t in (
    FileType("Q4_0", int(LlamaFileType.MOSTLY_Q4_0), "Q4_0"),
    FileType("Q4_1", int(LlamaFileType.MOSTLY_Q4_1), "Q4_1"),
    FileType("Q5_0", int(LlamaFileType.MOSTLY_Q5_0), "Q5_0"),
    FileType("Q5_1", int(LlamaFileType.MOSTLY_Q5_1), "Q5_1"),
    FileType("Q8_0", int(LlamaFileType.MOSTLY_Q8_0), "Q8_0"),
    FileType("Q4_K_M", int(LlamaFileType.MOSTLY_Q4_K_M), "Q4_K"),
    FileType("Q5_K_M", int(LlamaFileType.MOSTLY_Q5_K_M), "Q5_K"),
    FileType("Q6_K", int(LlamaFileType.MOSTLY_Q6_K), "Q6_K"),
)}

# A K format on rows that are not whole 256-value blocks: llama.cpp's 32-value substitute.
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the choice depends on besides each tensor's name and width."""

    n_layers: int  # blocks of the whole model (a prefix file still counts all of them)
    n_heads: int
    n_kv_heads: int
    architecture: str = "llama"

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B: a llama of 80 layers with grouped-query attention."""
        return (self.architecture == "llama" and self.n_layers == 80
                and self.n_heads != self.n_kv_heads)


def file_type(name: str) -> FileType:
    """The file type called `name` (case-insensitive); a QuantizeError lists ours."""
    ft = FILE_TYPES.get(name.upper())
    if ft is None:
        raise QuantizeError(f"unknown file type {name!r}: choose one of {', '.join(FILE_TYPES)}")
    return ft


def quantizable(name: str, n_dims: int) -> bool:
    """Whether llama.cpp requantises this tensor at all: 2-D weights except norms."""
    return n_dims >= 2 and name.endswith("weight") and "_norm.weight" not in name


def _more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits``: the first and last eighth, and every third between."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


def _block(fmt: str) -> int:
    return GGML_QUANT_SIZES[GGMLQuantizationType[fmt]][0]


def tensor_format(name: str, width: int, ftype: FileType, shape: ModelShape, *, tied: bool) -> str:
    """The format of a quantizable tensor `name` whose rows hold `width` values; `tied` when
    the file has no ``output.weight`` (the embedding doubles as the head)."""
    fmt = ftype.default
    match = _LAYER.match(name)
    layer = int(match.group(1)) if match else -1
    more = layer >= 0 and _more_bits(layer, shape.n_layers)
    k_mix = ftype.name in ("Q4_K_M", "Q5_K_M")
    if name == "output.weight" or (tied and name == "token_embd.weight"):
        if width % _block(fmt) or fmt == "Q8_0":
            fmt = "Q8_0"
        else:
            fmt = "Q6_K"
    elif name.endswith("attn_v.weight"):
        if k_mix and more:
            fmt = "Q6_K"
        if shape.is_70b and fmt == "Q4_K":  # 8 heads share attn_v: more bits cost little
            fmt = "Q5_K"
    elif name.endswith("ffn_down.weight") and k_mix and more:
        fmt = "Q6_K"
    if width % _block(fmt):
        fmt = _FALLBACK.get(fmt, fmt)
        if width % _block(fmt):  # not even 32-value blocks: llama.cpp stores it as F16
            fmt = "F16"
    return fmt


def plan_formats(tensors: Sequence[tuple[str, int, int]], ftype: FileType,
                 shape: ModelShape) -> dict[str, str | None]:
    """Format of every tensor ``(name, n_dims, width)``; None for those kept as they are
    (norms, vectors such as ``rope_freqs``)."""
    tied = not any(name == "output.weight" for name, _, _ in tensors)
    return {name: tensor_format(name, width, ftype, shape, tied=tied)
            if quantizable(name, n_dims) else None
            for name, n_dims, width in tensors}
