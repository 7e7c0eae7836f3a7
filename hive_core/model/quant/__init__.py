"""Our own GGUF quantisers (ggml's reference algorithms, vectorised over blocks), llama.cpp's
per-tensor type choice, and writers of requantised and random-weight GGUF files."""

from hive_core.model.quant.footprint import Footprint, NodeShare, read_footprint
from hive_core.model.quant.formats import (
    FORMATS,
    BlockFormat,
    QuantizeError,
    block_format,
    quantize,
)
from hive_core.model.quant.layout import FILE_TYPES, FileType, ModelShape, file_type, plan_formats
from hive_core.model.quant.requant import requantize
from hive_core.model.quant.synth import SHAPES, PublishedShape, write_synthetic

__all__ = [
    "FILE_TYPES", "FORMATS", "SHAPES", "BlockFormat", "FileType", "Footprint", "ModelShape",
    "NodeShare", "PublishedShape", "QuantizeError", "block_format", "file_type", "plan_formats",
    "quantize", "read_footprint", "requantize", "write_synthetic",
]
