"""Weight containers for one layer's attention and MLP, the embedding and the LM head, and
loading exactly the ones a set of stages needs from a GGUF file."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from hive_core.base.stage import Stage
from hive_core.model.errors import ModelError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.modes import WEIGHT_MODES
from hive_core.model.packed import (
    BlockLinear,
    DenseLinear,
    Matrix,
    RowTable,
    Table,
    check_dequant,
    fuse_rows,
    head_matrix,
    held_bytes,
    int4_shape,
    packable,
    packed_matrix,
    release_pages,
    row_table,
    trim_heap,
    unfused,
)

Progress = Callable[[int, int], None]  # (done, total) tensors
WeightsMode = Literal["packed", "fp32", "bf16"]  # see `hive_core.model.modes`


@dataclass(frozen=True, slots=True)
class AttentionWeights:
    """Layer norm and projections of one attention block; q/k rows in the HF layout."""

    norm: torch.Tensor  # [hidden]
    q: Matrix  # [n_heads * head_dim, hidden]
    k: Matrix  # [n_kv_heads * head_dim, hidden]
    v: Matrix  # [n_kv_heads * head_dim, hidden]
    o: Matrix  # [hidden, n_heads * head_dim]
    # Biases added after the q/k/v projections (Qwen2 has them; llama and mistral do not).
    q_bias: torch.Tensor | None = None  # [n_heads * head_dim]
    k_bias: torch.Tensor | None = None  # [n_kv_heads * head_dim]
    v_bias: torch.Tensor | None = None  # [n_kv_heads * head_dim]

    def biases(self) -> list[torch.Tensor]:
        return [b for b in (self.q_bias, self.k_bias, self.v_bias) if b is not None]


@dataclass(frozen=True, slots=True)
class MlpWeights:
    """Layer norm and SwiGLU projections of one MLP block."""

    norm: torch.Tensor  # [hidden]
    gate: Matrix  # [ffn, hidden]
    up: Matrix  # [ffn, hidden]
    down: Matrix  # [hidden, ffn]


@dataclass(frozen=True, slots=True)
class HeadWeights:
    """Final norm and output projection (the embedding itself when the model ties them)."""

    norm: torch.Tensor  # [hidden]
    output: Matrix  # [vocab, hidden]


@dataclass(slots=True)
class ShardWeights:
    """Everything one executor holds: some layers' parts, and maybe embedding and head."""

    attention: dict[int, AttentionWeights]
    mlp: dict[int, MlpWeights]
    embedding: Table | None = None  # [vocab, hidden]
    head: HeadWeights | None = None

    def nbytes(self) -> int:
        """Bytes of weights held: tensors, and the file bytes of matrices multiplied where the
        file holds them (a packed embedding counts its memory-mapped blocks)."""
        held: list[torch.Tensor | Matrix | Table] = []
        for a in self.attention.values():
            held += [a.norm, a.q, a.k, a.v, a.o, *a.biases()]
        for m in self.mlp.values():
            held += [m.norm, m.gate, m.up, m.down]
        if self.embedding is not None:
            held.append(self.embedding)
        if self.head is not None:
            held += [self.head.norm, self.head.output]
        return held_bytes(held)

    def release(self) -> None:
        """Let the file pages of the layers' matrices go (weights no longer served here)."""
        for m in {id(w): w for w in self._layer_matrices()}.values():
            if isinstance(m, BlockLinear):
                m.release()

    def _layer_matrices(self) -> list[object]:
        out: list[object] = []
        for a in self.attention.values():
            out += [unfused(x) for x in (a.q, a.k, a.v, a.o)]
        for m in self.mlp.values():
            out += [unfused(x) for x in (m.gate, m.up, m.down)]
        return out


def needed_tensors(file: GGUFModelFile, stages: Iterable[Stage], *, embed: bool, head: bool) -> list[str]:
    """GGUF tensor names a shard must dequantise, in load order."""
    names: list[str] = []
    for stage in stages:
        stage.check(file.config.n_layers)
        for i in stage.layers:
            if stage.part.has_attention:
                names += [f"blk.{i}.{n}.weight" for n in
                          ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output")]
                names += [b for n in ("attn_q", "attn_k", "attn_v")
                          if file.has_tensor(b := f"blk.{i}.{n}.bias")]
            if stage.part.has_mlp:
                names += [f"blk.{i}.{n}.weight" for n in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    tied = not file.has_tensor("output.weight")
    if embed or (head and tied):
        names.append("token_embd.weight")
    if head:
        names.append("output_norm.weight")
        if not tied:
            names.append("output.weight")
    return list(dict.fromkeys(names))  # two stages may share a layer: load once


def _shapes(file: GGUFModelFile) -> dict[str, tuple[int, ...]]:
    """Each tensor kind's shape, by the part of its name before ".weight"."""
    cfg = file.config
    h, kv, ffn, vocab = cfg.hidden, cfg.kv_dim, cfg.ffn, cfg.vocab_size
    return {
        "attn_norm": (h,), "attn_q": (h, h), "attn_k": (kv, h), "attn_v": (kv, h),
        "attn_output": (h, h), "ffn_norm": (h,), "ffn_gate": (ffn, h), "ffn_up": (ffn, h),
        "ffn_down": (h, ffn), "token_embd": (vocab, h), "output_norm": (h,), "output": (vocab, h),
    }


def check_loadable(file: GGUFModelFile, stages: Iterable[Stage], *, head: bool = False,
                   mode: str = "packed", allow_dequant: bool = False) -> None:
    """Refuse now, before anything loads (a parent process before it starts its nodes), what
    `load_shard_weights` would refuse for `stages` and the head: in packed mode, a matrix no
    kernel here multiplies unless `allow_dequant` (`UnsupportedModelError`, one line)."""
    if mode != "packed" or allow_dequant:
        return
    shapes = _shapes(file)
    for name in needed_tensors(file, stages, embed=False, head=head):
        shape = shapes[name.split(".")[-2]]
        if len(shape) == 1 or name.endswith(".bias"):
            continue
        blocks, qtype = file.raw(name)
        matrix = (shape[0], shape[1])
        is_head = name in ("output.weight", "token_embd.weight")
        if qtype != "F32" and not packable(qtype, matrix) and not (is_head and int4_shape(matrix)):
            check_dequant(name, qtype, matrix, blocks.nbytes, allow=False)


def load_shard_weights(
    file: GGUFModelFile,
    stages: Iterable[Stage],
    *,
    embed: bool = False,
    head: bool = False,
    dtype: torch.dtype = torch.float32,
    progress: Progress | None = None,
    mode: WeightsMode | str = "fp32",
    allow_dequant: bool = False,
) -> ShardWeights:
    """Load only the tensors `stages` (and the embedding/head when asked) need.

    `dtype` is the compute dtype (norms and activations); `mode` says how matrices are held
    (see `WEIGHT_MODES`): a shard keeps only its own layers, in that form. In "packed" mode a
    matrix no packed kernel takes is refused (`UnsupportedModelError`, saying what float32
    would cost) unless `allow_dequant` lets it be dequantised whole.
    """
    if mode not in WEIGHT_MODES:
        raise ModelError(f"weights mode must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
    stages = list(stages)
    shapes = _shapes(file)
    names = needed_tensors(file, stages, embed=embed, head=head)
    tied = not file.has_tensor("output.weight")
    got: dict[str, torch.Tensor | Matrix] = {}
    table: Table | None = None
    for n, name in enumerate(names):
        shape = shapes[name.split(".")[-2]]
        if name.endswith(".bias"):
            shape = shape[:1]  # a projection's bias: one value per output row
        if name in got:  # fused with an earlier matrix
            pass
        elif mode == "packed" and name.endswith(_FUSED_FIRST):
            got.update(_load_fused(file, name, shapes, dtype, allow_dequant))
        elif name == "token_embd.weight":
            table, tied_head = _load_embedding(file, shape, dtype, mode, embed=embed,
                                               head=head and tied, allow_dequant=allow_dequant)
            if tied_head is not None:
                got[name] = tied_head
        elif len(shape) == 1 or mode == "fp32":
            got[name] = file.tensor(name, shape, dtype)
        else:
            got[name] = _load_matrix(file, name, (shape[0], shape[1]), dtype, mode, allow_dequant)
        if progress is not None:
            progress(n + 1, len(names))
    out = ShardWeights(attention={}, mlp={})
    for stage in stages:
        for i in stage.layers:
            p = f"blk.{i}."
            if stage.part.has_attention and i not in out.attention:
                bias = {n: _vec(got[p + f"attn_{n}.bias"]) if p + f"attn_{n}.bias" in got else None
                        for n in "qkv"}
                out.attention[i] = AttentionWeights(
                    _vec(got[p + "attn_norm.weight"]), got[p + "attn_q.weight"],
                    got[p + "attn_k.weight"], got[p + "attn_v.weight"],
                    got[p + "attn_output.weight"], bias["q"], bias["k"], bias["v"])
            if stage.part.has_mlp and i not in out.mlp:
                out.mlp[i] = MlpWeights(
                    _vec(got[p + "ffn_norm.weight"]), got[p + "ffn_gate.weight"],
                    got[p + "ffn_up.weight"], got[p + "ffn_down.weight"])
    if embed:
        out.embedding = table
    if head:
        output = got.get("output.weight", got.get("token_embd.weight"))
        assert output is not None
        out.head = HeadWeights(_vec(got["output_norm.weight"]), output)
    if mode != "fp32":
        trim_heap()
    file.release_pages()  # pages the loads faulted in around what they read
    return out


def _vec(t: torch.Tensor | Matrix) -> torch.Tensor:
    assert isinstance(t, torch.Tensor)  # norms are always loaded as plain vectors
    return t


def _row_order(file: GGUFModelFile, name: str, rows: int) -> np.ndarray | None:
    """The q/k un-permutation (see `GGUFModelFile.tensor`) as an order of output rows."""
    heads = file.qk_heads(name)
    if heads == 0:
        return None
    dim = rows // heads // 2
    return np.arange(rows).reshape(heads, dim, 2).swapaxes(2, 1).reshape(-1)


# Matrices that share their input, loaded as one packed matrix: named by the first one.
_FUSED = {"attn_q.weight": ("attn_q", "attn_k", "attn_v"), "ffn_gate.weight": ("ffn_gate", "ffn_up")}
_FUSED_FIRST = tuple(_FUSED)


def _load_fused(
    file: GGUFModelFile, first: str, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype,
    allow_dequant: bool,
) -> dict[str, Matrix]:
    """q, k and v (or gate and up) of one layer as row slices of one packed matrix, when all
    are packable blocks of one type; otherwise each loaded on its own."""
    prefix = first[: -len(first.split(".", 2)[-1])]  # "blk.N."
    parts = _FUSED[first.split(".", 2)[-1]]
    names = [f"{prefix}{p}.weight" for p in parts]
    raw = [file.raw(n) for n in names]
    qtypes = {qtype for _, qtype in raw}
    cols = {shapes[p][1] for p in parts}
    if len(qtypes) == 1 and len(cols) == 1 and all(
        packable(qtype, (shapes[p][0], shapes[p][1])) for p, (_, qtype) in zip(parts, raw, strict=True)
    ):
        pieces = [(blocks, _row_order(file, n, shapes[p][0]))
                  for n, p, (blocks, _) in zip(names, parts, raw, strict=True)]
        fused = fuse_rows(pieces, qtypes.pop(), cols.pop())
        for blocks, _ in raw:
            release_pages(blocks)
        return dict(zip(names, fused, strict=True))
    return {n: _load_matrix(file, n, (shapes[p][0], shapes[p][1]), dtype, "packed", allow_dequant)
            for n, p in zip(names, parts, strict=True)}


def _load_matrix(
    file: GGUFModelFile, name: str, shape: tuple[int, int], dtype: torch.dtype, mode: str,
    allow_dequant: bool = False,
) -> Matrix:
    """One matrix held as `mode` says. Packed: in its blocks on the kernel here (an untied
    head as `head_matrix` says); float32 tensors as they are; another type dequantised only
    when `allow_dequant` (see `check_dequant`)."""
    if mode == "bf16":
        return DenseLinear(file.tensor(name, shape, torch.bfloat16))
    blocks, qtype = file.raw(name)
    if name == "output.weight" and qtype != "F32":
        head = head_matrix(blocks, qtype, shape, dtype)
        if head is not None:
            return head
    elif packable(qtype, shape):
        return packed_matrix(blocks, qtype, shape, _row_order(file, name, shape[0]))
    check_dequant(name, qtype, shape, blocks.nbytes, allow=allow_dequant)
    return file.tensor(name, shape, dtype)


def _load_embedding(
    file: GGUFModelFile, shape: tuple[int, ...], dtype: torch.dtype, mode: str, *, embed: bool,
    head: bool, allow_dequant: bool = False,
) -> tuple[Table | None, Matrix | None]:
    """The embedding table (when `embed`) and the tied LM head (when `head`) from one tensor:
    packed, rows read from the file as looked up and the head as `head_matrix` says, for any
    type but float32 (held as it is)."""
    name = "token_embd.weight"
    rows, cols = shape
    if mode == "fp32":
        t = file.tensor(name, shape, dtype)
        return (t if embed else None), (t if head else None)
    if mode == "bf16":
        t = file.tensor(name, shape, torch.bfloat16)
        return (RowTable(t, "dense", dtype) if embed else None), (DenseLinear(t) if head else None)
    blocks, qtype = file.raw(name)
    if qtype == "F32":
        t = file.tensor(name, shape, dtype)
        return (t if embed else None), (t if head else None)
    table = row_table(blocks, qtype, (rows, cols), dtype, (str(file.path), file.file_offset(blocks)))
    out: Matrix | None = head_matrix(blocks, qtype, (rows, cols), dtype, table) if head else None
    if head and out is None:
        check_dequant(name, qtype, (rows, cols), blocks.nbytes, allow=allow_dequant)
        out = file.tensor(name, shape, dtype)
    return (table if embed else None), out


DENSE_BYTES = {"fp32": 4, "bf16": 2}  # bytes per weight of the dequantised modes


def weights_need(path: str | os.PathLike[str], layers: Iterable[int], mode: str, *,
                 head: bool = False) -> int:
    """Bytes a load of `layers` (and the LM head when `head`) in weights `mode` holds: packed,
    the tensors as the file stores them (the pages its products map); fp32 or bf16, each
    weight dequantised. The embedding, read row by row, counts nothing."""
    from hive_core.model.quant.footprint import read_footprint

    fp = read_footprint(path)
    wanted = sorted(set(layers))
    if mode in DENSE_BYTES:
        h, kv, ffn = fp.hidden, fp.n_kv_heads * fp.head_dim, fp.ffn
        per_layer = (2 * h * h + 2 * kv * h + 3 * h * ffn) * DENSE_BYTES[mode]
        need = len(wanted) * per_layer + (fp.vocab_size * h * DENSE_BYTES[mode] if head else 0)
    else:
        need = sum(fp.layer_bytes[i] for i in wanted)
        need += (fp.embedding_bytes if fp.tied else fp.head_bytes) if head else 0
    return need + (fp.shared_bytes if wanted else 0)
