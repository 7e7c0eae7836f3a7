"""Loading models of every kernel format in packed mode: each matrix stays in its blocks on our
kernel (none is dequantised whole) and the model computes what its float32 load computes; a
type no kernel takes is refused in one line naming the type and the float32 cost, unless the
caller allows the dequantised fallback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hive_core import native
from hive_core.model.errors import UnsupportedModelError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed import BlockLinear, RowSlice, RowTable, unfused
from hive_core.model.pipeline import LocalPipeline
from hive_core.model.tiny import TinySpec, write_tiny_llama

# Hidden 256 and ffn 512: widths the K-quants' 256-weight super-blocks fit.
SPEC = TinySpec(n_layers=2, hidden=256, ffn=512, quantized=False)
# Per layer, a type for each matrix: every kernel format appears, fused groups (q/k/v,
# gate/up) in one type or split across types.
LAYER_TYPES = [
    {"attn_q": "Q4_K", "attn_k": "Q4_K", "attn_v": "Q4_K", "attn_output": "Q5_K",
     "ffn_gate": "Q5_0", "ffn_up": "Q5_0", "ffn_down": "Q6_K"},
    {"attn_q": "Q2_K", "attn_k": "Q3_K", "attn_v": "Q8_0", "attn_output": "Q4_0",
     "ffn_gate": "Q5_1", "ffn_up": "Q4_1", "ffn_down": "Q6_K"},
]


@pytest.fixture(scope="module")
def float_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("formats") / "f32.gguf", SPEC)


def mixed_types(name: str) -> str | None:
    if name == "token_embd.weight":
        return "Q4_K"  # the table reads its rows; the tied head runs on our kernel
    layer, kind = name.split(".")[1:3]
    return LAYER_TYPES[int(layer)][kind]


def logits(pipe: LocalPipeline) -> torch.Tensor:
    return pipe.new_session(kv_factory("fp32")).forward([5, 70, 200, 31, 99, 4, 150, 8], all_logits=True)


def test_every_kernel_format_loads_packed_and_computes_as_float32(
    float_gguf: Path, tmp_path: Path, retype_gguf: Any,
) -> None:
    if native.ops() is None:
        pytest.fail(f"the CPU kernels must build here: {native.unavailable_reason()}")
    path = retype_gguf(float_gguf, tmp_path / "mixed.gguf", mixed_types)
    packed = LocalPipeline.load_single(GGUFModelFile(path), weights="packed")
    w = packed.client.weights
    for layer, types in enumerate(LAYER_TYPES):
        att, mlp = w.attention[layer], w.mlp[layer]
        held = {"attn_q": att.q, "attn_k": att.k, "attn_v": att.v, "attn_output": att.o,
                "ffn_gate": mlp.gate, "ffn_up": mlp.up, "ffn_down": mlp.down}
        for kind, matrix in held.items():
            whole = unfused(matrix)
            assert isinstance(whole, BlockLinear) and whole.qtype == types[kind], (layer, kind)
    # One type: q, k and v are one fused matrix; split across types, each is its own.
    assert isinstance(w.attention[0].q, RowSlice) and unfused(w.attention[0].q) is unfused(w.attention[0].v)
    assert not isinstance(w.attention[1].q, RowSlice)
    assert isinstance(w.embedding, RowTable) and w.head is not None
    assert isinstance(w.head.output, BlockLinear)  # 267 rows: no int4 head, no float32 one
    reference = LocalPipeline.load_single(GGUFModelFile(path))  # gguf.dequantize, float32
    a, b = logits(packed), logits(reference)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()


@pytest.mark.parametrize("qtype", ["F16", "BF16"])
def test_a_type_no_kernel_takes_is_refused_unless_allowed(
    float_gguf: Path, tmp_path: Path, retype_gguf: Any, qtype: str,
) -> None:
    path = retype_gguf(float_gguf, tmp_path / f"{qtype}.gguf",
                       lambda name: qtype if name.endswith("ffn_down.weight") else "Q8_0")
    with pytest.raises(UnsupportedModelError) as refused:
        LocalPipeline.load_single(GGUFModelFile(path), weights="packed")
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(f"blk.0.ffn_down.weight is {qtype} [256 x 512] and no kernel here")
    # 256 x 512 float32 weights: 0.52 MB, twice the 0.26 MB of 16-bit ones.
    assert "as float32 it would take 0.5 MB, 2.0x its 0.26 MB in the file" in line
    assert line.endswith("pass --allow-dequant (allow_dequant=True) to load it so")
    allowed = LocalPipeline.load_single(GGUFModelFile(path), weights="packed", allow_dequant=True)
    down = allowed.client.weights.mlp[0].down
    assert isinstance(down, torch.Tensor) and down.dtype == torch.float32
    assert isinstance(unfused(allowed.client.weights.mlp[0].gate), BlockLinear)
    reference = LocalPipeline.load_single(GGUFModelFile(path))
    a, b = logits(allowed), logits(reference)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max() <= 1e-4 * b.abs().max()
    # fp32 and bf16 modes dequantise by design: nothing to refuse there.
    LocalPipeline.load_single(GGUFModelFile(path), weights="bf16")


def test_the_commands_refuse_such_a_type_up_front_unless_allowed(
    float_gguf: Path, tmp_path: Path, retype_gguf: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    """`generate` and `hive up` say which tensor and why in one line, exit 2, and start
    nothing (hive up checks before any node process); --allow-dequant lets generate run."""
    import psutil

    from cadencia.cli import main as cli

    path = retype_gguf(float_gguf, tmp_path / "f16.gguf",
                       lambda name: "F16" if name.endswith("ffn_down.weight") else "Q8_0")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    for argv in (["generate", "hi", "--raw", "--max-new-tokens", "2", "--model", str(path)],
                 ["hive", "up", "--nodes", "2", "--model", str(path), "--data-dir",
                  str(tmp_path), "--no-world", "--tflops", "0.5"]):
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "blk.0.ffn_down.weight is F16 [256 x 512]" in err
        assert "--allow-dequant" in err
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    assert cli(["generate", "hi", "--raw", "--max-new-tokens", "2", "--model", str(path),
                "--allow-dequant", "--json"]) == 0
