"""Requantise a llama-architecture GGUF file to another file type, as llama.cpp's
``llama-quantize`` would lay it out, with our quantisers.

Metadata (vocabulary, chat template, hyper-parameters) is copied key for key with
``general.file_type`` set to the new type; each tensor is dequantised (`gguf.dequantize`)
and requantised a slice of rows at a time, straight into the output stream. A tensor whose
chosen format is the one it already has is copied unchanged, as llama.cpp does (requantising
a quantised tensor to its own format would only add rounding).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType, GGUFValueType

from hive_core.model.quant.formats import CHUNK_VALUES, QuantizeError, quantize
from hive_core.model.quant.layout import FileType, ModelShape, file_type, plan_formats
from hive_core.model.quant.stream import Entry, GGUFStream, TensorPlan, u32

Progress = Callable[[int, int, str, str], None]  # (done, total, tensor name, its type)
# Keys the output sets itself (the reader's GGUF.* entries are the header's counts).
_REPLACED = ("general.file_type", "general.quantization_version")


def _entries(reader: Any, ftype: FileType) -> list[Entry]:
    out: list[Entry] = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in _REPLACED:
            continue
        vtype = GGUFValueType(field.types[0])
        item = GGUFValueType(field.types[-1]) if vtype is GGUFValueType.ARRAY else None
        if vtype is GGUFValueType.ARRAY and len(field.types) != 2:
            raise QuantizeError(f"metadata {key} is a nested array, which we do not copy")
        out.append(Entry(key, field.contents(), vtype, item))
    return out + [u32("general.file_type", ftype.number), u32("general.quantization_version", 2)]


def _chunks(tensor: Any, target: TensorPlan) -> Iterator[np.ndarray]:
    """The target's bytes a slice of rows at a time: copied, or dequantised and requantised."""
    data = tensor.data
    source = GGMLQuantizationType(tensor.tensor_type)
    if data.ndim == 1 or target.ggml_type == source:
        yield data
        return
    rows = data.reshape(-1, data.shape[-1])
    step = max(1, CHUNK_VALUES // target.shape[-1])
    import gguf

    for start in range(0, len(rows), step):
        try:
            values = gguf.dequantize(np.asarray(rows[start:start + step]), source)
        except NotImplementedError:
            raise QuantizeError(f"tensor {tensor.name} is {source.name}, which gguf cannot "
                                "dequantise") from None
        yield quantize(values.reshape(-1, target.shape[-1]), target.ggml_type.name)


def _target_type(fmt: str | None, source: int) -> GGMLQuantizationType:
    """The chosen format, or the tensor's own type when it is kept as it is."""
    return GGMLQuantizationType[fmt] if fmt is not None else GGMLQuantizationType(source)


def requantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], type_name: str,
               progress: Progress | None = None) -> list[TensorPlan]:
    """Write `src` as file type `type_name` to `dst`; returns the tensors written."""
    import gguf

    from hive_core.model.gguf_file import GGUFModelFile

    ftype = file_type(type_name)
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise QuantizeError(f"the output {dst} is the input file")
    cfg = GGUFModelFile(src).config  # validates the file and its architecture first
    reader = gguf.GGUFReader(src)
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    formats = plan_formats([(name, len(sh), sh[-1]) for name, sh in shapes.items()], ftype,
                           ModelShape(cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.architecture))
    plans = [TensorPlan(t.name, shapes[t.name], _target_type(formats[t.name], t.tensor_type))
             for t in reader.tensors]
    with GGUFStream(dst, _entries(reader, ftype), plans) as out:
        for i, (tensor, target) in enumerate(zip(reader.tensors, plans, strict=True)):
            out.write(target, _chunks(tensor, target))
            if progress is not None:
                progress(i + 1, len(plans), target.name, target.ggml_type.name)
    return plans
