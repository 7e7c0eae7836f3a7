"""Random-weight GGUF files with the shapes of published llama models, written in seconds.

The tensors are laid out and typed as llama.cpp's quantiser would type the real model (see
`layout`), filled with random valid blocks (`random_blocks`) and streamed to disk a chunk at a
time, so the writer's memory stays a few tens of megabytes whatever the file's size. The
vocabulary is a synthetic byte-level BPE of the real size (`vocab`), so the file loads,
tokenizes and runs like the real one, and reads as its byte sizes and layer split.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGMLQuantizationType, GGUFValueType

from hive_core.model.quant.formats import QuantizeError, block_format
from hive_core.model.quant.layout import FileType, ModelShape, file_type, plan_formats
from hive_core.model.quant.random_blocks import random_blocks
from hive_core.model.quant.stream import Entry, GGUFStream, TensorPlan, array, f32, text, u32
from hive_core.model.quant.vocab import LLAMA3_CHAT_TEMPLATE, synthetic_vocab

CHUNK_BYTES = 4 << 20  # bytes of random blocks made and written at a time (bigger ones fault more pages in than they save)
Progress = Callable[[int, int, str], None]  # (tensors done, tensors in all, name)


@dataclass(frozen=True, slots=True)
class Llama3RopeScaling:
    """Llama 3.1's frequency scaling; llama.cpp stores its factors as ``rope_freqs.weight``."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192

    def factors(self, head_dim: int, theta: float) -> np.ndarray:
        """One factor per rotated pair, as llama.cpp's converter computes them."""
        freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        wavelen = 2 * math.pi / freqs
        low, high = (self.original_context / self.low_freq_factor,
                     self.original_context / self.high_freq_factor)
        smooth = ((self.original_context / wavelen - self.low_freq_factor)
                  / (self.high_freq_factor - self.low_freq_factor))
        mid = 1 / ((1 - smooth) / self.factor + smooth)
        out = np.where(wavelen < high, 1.0, np.where(wavelen > low, self.factor, mid))
        return out.astype(np.float32)


@dataclass(frozen=True, slots=True)
class PublishedShape:
    """A llama-architecture model's hyper-parameters, as its GGUF metadata states them."""

    name: str
    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    vocab: int
    context: int
    rope_theta: float
    rms_eps: float = 1e-5
    n_special: int = 256  # special tokens at the end of the vocabulary
    rope_scaling: Llama3RopeScaling | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads


SHAPES: dict[str, PublishedShape] = {s.name: s for s in (
    PublishedShape("llama3-8b", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.0,
                   rope_scaling=Llama3RopeScaling()),
    # Llama 3.1: the same matrices with a 128K context, whose KV cache outweighs a layer.
    PublishedShape("llama3.1-8b", 32, 4096, 14336, 32, 8, 128256, 131072, 500000.0,
                   rope_scaling=Llama3RopeScaling()),
    PublishedShape("llama3-70b", 80, 8192, 28672, 64, 8, 128256, 8192, 500000.0,
                   rope_scaling=Llama3RopeScaling()),
    # A miniature of the same family for tests: K formats fit its 256-wide rows.
    PublishedShape("tiny-llama3", 4, 256, 512, 4, 2, 1024, 256, 500000.0, n_special=16,
                   rope_scaling=Llama3RopeScaling()),
)}


def shape(name: str) -> PublishedShape:
    found = SHAPES.get(name)
    if found is None:
        raise QuantizeError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return found


def tensor_list(s: PublishedShape, n_layers: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes (rows, width) of the first `n_layers` layers' model, in file order."""
    h, kv, f = s.hidden, s.n_kv_heads * s.head_dim, s.ffn
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (s.vocab, h))]
    if s.rope_scaling is not None:
        out.append(("rope_freqs.weight", (s.head_dim // 2,)))
    for i in range(n_layers):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (h,)), (p + "attn_q.weight", (h, h)),
                (p + "attn_k.weight", (kv, h)), (p + "attn_v.weight", (kv, h)),
                (p + "attn_output.weight", (h, h)), (p + "ffn_norm.weight", (h,)),
                (p + "ffn_gate.weight", (f, h)), (p + "ffn_up.weight", (f, h)),
                (p + "ffn_down.weight", (h, f))]
    out += [("output_norm.weight", (h,)), ("output.weight", (s.vocab, h))]
    return out


def plan(s: PublishedShape, ftype: FileType, n_layers: int | None = None) -> list[TensorPlan]:
    """Every tensor of the file with its type: the whole model's layout (counted over all
    its layers, as for the real file), kept for the first `n_layers` layers."""
    keep = s.n_layers if n_layers is None else n_layers
    if not 1 <= keep <= s.n_layers:
        raise QuantizeError(f"--layers must be 1 to {s.n_layers} for {s.name}, got {keep}")
    full = tensor_list(s, s.n_layers)
    formats = plan_formats([(n, len(sh), sh[-1]) for n, sh in full], ftype,
                           ModelShape(s.n_layers, s.n_heads, s.n_kv_heads))
    wanted = {name for name, _ in tensor_list(s, keep)}
    return [TensorPlan(name, sh, GGMLQuantizationType[formats[name] or "F32"])
            for name, sh in full if name in wanted]


def metadata(s: PublishedShape, ftype: FileType, n_layers: int) -> list[Entry]:
    """The file's key/values: llama hyper-parameters, file type and the synthetic tokenizer."""
    a = "llama"
    vocab = synthetic_vocab(s.vocab, s.n_special)
    part = f" (first {n_layers} of {s.n_layers} layers)" if n_layers < s.n_layers else ""
    return [
        text("general.architecture", a),
        text("general.name", f"random {s.name}{part}"),
        u32(f"{a}.block_count", n_layers),
        u32(f"{a}.context_length", s.context),
        u32(f"{a}.embedding_length", s.hidden),
        u32(f"{a}.feed_forward_length", s.ffn),
        u32(f"{a}.attention.head_count", s.n_heads),
        u32(f"{a}.attention.head_count_kv", s.n_kv_heads),
        f32(f"{a}.rope.freq_base", s.rope_theta),
        f32(f"{a}.attention.layer_norm_rms_epsilon", s.rms_eps),
        u32(f"{a}.rope.dimension_count", s.head_dim),
        u32(f"{a}.vocab_size", s.vocab),
        u32("general.file_type", ftype.number),
        u32("general.quantization_version", 2),
        text("tokenizer.ggml.model", "gpt2"),
        text("tokenizer.ggml.pre", "llama-bpe"),
        array("tokenizer.ggml.tokens", vocab.tokens, GGUFValueType.STRING),
        array("tokenizer.ggml.token_type", vocab.types, GGUFValueType.INT32),
        array("tokenizer.ggml.merges", vocab.merges, GGUFValueType.STRING),
        u32("tokenizer.ggml.bos_token_id", vocab.bos_id),
        u32("tokenizer.ggml.eos_token_id", vocab.eot_id),
        Entry("tokenizer.ggml.add_bos_token", True, GGUFValueType.BOOL),
        text("tokenizer.chat_template", LLAMA3_CHAT_TEMPLATE),
    ]


def _chunks(t: TensorPlan, s: PublishedShape, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor's bytes a chunk at a time: random blocks, or the vectors' real values."""
    name = t.name
    if name == "rope_freqs.weight":
        assert s.rope_scaling is not None
        yield s.rope_scaling.factors(s.head_dim, s.rope_theta)
        return
    if len(t.shape) == 1:  # norm weights: ones, as a freshly initialised model has
        yield np.ones(t.shape, np.float32)
        return
    rows, width = t.shape
    fmt = t.ggml_type.name
    std = 1.0 if name == "token_embd.weight" else width ** -0.5
    row_bytes = t.nbytes // rows
    per_chunk = max(1, CHUNK_BYTES // row_bytes)
    blocks_per_row = row_bytes // block_format(fmt).block_bytes
    for start in range(0, rows, per_chunk):
        n = min(per_chunk, rows - start)
        yield random_blocks(fmt, n * blocks_per_row, std, rng)


def write_synthetic(path: str | os.PathLike[str], shape_name: str, type_name: str,
                    n_layers: int | None = None, seed: int = 0,
                    progress: Progress | None = None) -> list[TensorPlan]:
    """Write a random-weight `shape_name` GGUF of file type `type_name` to `path`; returns
    the tensors written."""
    s = shape(shape_name)
    ftype = file_type(type_name)
    tensors = plan(s, ftype, n_layers)
    keep = s.n_layers if n_layers is None else n_layers
    rng = np.random.Generator(np.random.SFC64(seed))
    with GGUFStream(Path(path), metadata(s, ftype, keep), tensors) as out:
        for i, t in enumerate(tensors):
            out.write(t, _chunks(t, s, rng))
            if progress is not None:
                progress(i + 1, len(tensors), t.name)
    return tensors
