"""Per-tensor formats as llama.cpp's quantiser picks them (``llama_tensor_get_type``)."""

from __future__ import annotations

from collections import Counter

import pytest

from hive_core.model.quant.formats import QuantizeError
from hive_core.model.quant.layout import ModelShape, file_type, plan_formats

MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def llama(n_layers: int, hidden: int, ffn: int, *, tied: bool) -> list[tuple[str, int, int]]:
    """(name, n_dims, row width) of a llama model's tensors."""
    out = [("token_embd.weight", 2, hidden), ("output_norm.weight", 1, hidden)]
    if not tied:
        out.append(("output.weight", 2, hidden))
    for i in range(n_layers):
        out += [(f"blk.{i}.attn_norm.weight", 1, hidden), (f"blk.{i}.ffn_norm.weight", 1, hidden)]
        out += [(f"blk.{i}.{m}.weight", 2, ffn if m == "ffn_down" else hidden) for m in MATRICES]
    return out


SMOL = llama(30, 576, 1536, tied=True)
SMOL_SHAPE = ModelShape(30, 9, 3)
L8B = llama(32, 4096, 14336, tied=False)
L8B_SHAPE = ModelShape(32, 32, 8)


def test_smollm2_q4_k_m_is_mostly_q5_0_and_q8_0() -> None:
    """Hidden 576 is not whole 256-blocks: Q4_K falls back to Q5_0, Q6_K to Q8_0; only the
    1536-wide ffn_down keeps K formats (Q6_K in the layers that get more bits)."""
    f = plan_formats(SMOL, file_type("Q4_K_M"), SMOL_SHAPE)
    assert f["token_embd.weight"] == "Q8_0"  # tied: quantised as the output it doubles as
    assert f["output_norm.weight"] is None and f["blk.0.attn_norm.weight"] is None
    # use_more_bits(i, 30): i < 3, i >= 26, or (i - 3) % 3 == 2.
    more = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29}
    for i in range(30):
        assert f[f"blk.{i}.attn_v.weight"] == ("Q8_0" if i in more else "Q5_0")
        assert f[f"blk.{i}.ffn_down.weight"] == ("Q6_K" if i in more else "Q4_K")
        assert f[f"blk.{i}.attn_q.weight"] == f[f"blk.{i}.ffn_up.weight"] == "Q5_0"
    counts = Counter(v for v in f.values() if v)
    assert counts == {"Q5_0": 166, "Q8_0": 15, "Q6_K": 14, "Q4_K": 16}


@pytest.mark.parametrize("ftype,expect", [
    ("Q5_K_M", {"Q5_1": 166, "Q8_0": 15, "Q6_K": 14, "Q5_K": 16}),
    ("Q6_K", {"Q8_0": 181, "Q6_K": 30}),
    ("Q8_0", {"Q8_0": 211}),
    ("Q4_0", {"Q4_0": 210, "Q8_0": 1}),  # the tied embedding: Q6_K, then Q8_0 for 576
])
def test_smollm2_other_types(ftype: str, expect: dict[str, int]) -> None:
    f = plan_formats(SMOL, file_type(ftype), SMOL_SHAPE)
    assert Counter(v for v in f.values() if v) == expect
    assert f["token_embd.weight"] == "Q8_0"


def test_llama3_8b_q4_k_m() -> None:
    f = plan_formats(L8B, file_type("Q4_K_M"), L8B_SHAPE)
    assert f["token_embd.weight"] == "Q4_K"  # untied: the embedding keeps the default
    assert f["output.weight"] == "Q6_K"
    # use_more_bits(i, 32): i < 4, i >= 28, or (i - 4) % 3 == 2.
    assert [f[f"blk.{i}.attn_v.weight"] for i in (0, 3, 4, 5, 6, 25, 28)] == [
        "Q6_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q6_K"]
    assert f["blk.6.ffn_down.weight"] == "Q6_K" and f["blk.7.ffn_down.weight"] == "Q4_K"
    assert f["blk.7.attn_k.weight"] == f["blk.7.ffn_gate.weight"] == "Q4_K"


def test_llama3_70b_gives_attn_v_five_bits() -> None:
    shape = ModelShape(80, 64, 8)
    assert shape.is_70b
    f = plan_formats(llama(80, 8192, 28672, tied=False), file_type("Q4_K_M"), shape)
    assert f["blk.10.attn_v.weight"] == "Q5_K"  # Q4_K raised: 8 heads share it
    assert f["blk.0.attn_v.weight"] == "Q6_K"
    assert f["blk.10.attn_q.weight"] == "Q4_K"


def test_untied_q4_0_keeps_embedding_and_raises_output() -> None:
    f = plan_formats(L8B, file_type("Q4_0"), L8B_SHAPE)
    assert f["token_embd.weight"] == "Q4_0" and f["output.weight"] == "Q6_K"
    assert f["blk.0.attn_v.weight"] == f["blk.0.ffn_down.weight"] == "Q4_0"


def test_file_type_names() -> None:
    assert file_type("q4_k_m").number == 15 and file_type("Q6_K").number == 18
    with pytest.raises(QuantizeError, match="unknown file type 'Q3_K_S'"):
        file_type("Q3_K_S")


def test_width_no_block_fits_is_f16() -> None:
    f = plan_formats([("blk.0.attn_q.weight", 2, 40), ("blk.0.attn_k.weight", 2, 64)],
                     file_type("Q4_K_M"), SMOL_SHAPE)
    assert f == {"blk.0.attn_q.weight": "F16", "blk.0.attn_k.weight": "Q5_0"}
