"""Our quantisers against ggml's algorithms.

The 32-value formats must give `gguf.quants.quantize`'s bytes exactly (it follows ggml's
reference). The K formats, which `gguf` cannot quantise, must give the bytes of our scalar
transcription of ``quantize_row_q{4,5,6}_K_ref`` on every block we check, and their values
must come back through `gguf.dequantize` within the error those bytes carry.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from hive_core.model.quant import formats as formats_module
from hive_core.model.quant._numeric import nearest_int, round_away
from hive_core.model.quant.formats import FORMATS, QuantizeError, block_format, quantize
from hive_core.model.quant.reference import REFERENCE

LEGACY = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
K_FORMATS = ["Q4_K", "Q5_K", "Q6_K"]


def weights(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Matrix-like values: small Gaussian weights with a per-row offset."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)) * 0.05 + rng.standard_normal((rows, 1)) * 0.02
    return w.astype(np.float32)


def awkward_blocks(size: int) -> np.ndarray:
    """Blocks where the algorithms branch: all zero, constant (negative, positive), a single
    spike, all positive, all negative, ties for the largest magnitude, heavy tails, values
    near fp16's range limits."""
    rng = np.random.default_rng(7)
    spike = np.zeros(size)
    spike[size // 3] = -4.0
    tie = rng.standard_normal(size)
    tie[1], tie[5] = 3.0, -3.0
    rows = [
        np.zeros(size), np.full(size, -0.3), np.full(size, 2.0), spike,
        np.abs(rng.standard_normal(size)) + 0.5, -np.abs(rng.standard_normal(size)) - 0.1,
        tie, rng.standard_t(2, size), rng.standard_normal(size) * 1e-6,
        rng.standard_normal(size) * 1e3, np.linspace(-1, 1, size),
    ]
    return np.stack(rows).astype(np.float32)


@pytest.mark.parametrize("name", LEGACY)
@pytest.mark.parametrize("seed", [0, 1])
def test_legacy_bytes_equal_gguf(name: str, seed: int) -> None:
    w = weights(48, 512, seed)
    ours = quantize(w, name)
    assert ours.dtype == np.uint8 and ours.shape == (48, 512 // 32 * FORMATS[name].block_bytes)
    assert np.array_equal(ours, gguf.quantize(w, gguf.GGMLQuantizationType[name]))


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_awkward_blocks_equal_gguf(name: str) -> None:
    w = awkward_blocks(32)
    assert np.array_equal(quantize(w, name), gguf.quantize(w, gguf.GGMLQuantizationType[name]))


@pytest.mark.parametrize("name", LEGACY + K_FORMATS)
def test_vectorised_equals_scalar_reference(name: str) -> None:
    fmt = FORMATS[name]
    w = np.concatenate([weights(4, 1024, 3).reshape(-1, fmt.block_values),
                        awkward_blocks(fmt.block_values)])
    ours = quantize(w, name)
    for i, block in enumerate(w):
        assert ours[i].tobytes() == REFERENCE[name](block), f"block {i} differs"


@pytest.mark.parametrize("name", K_FORMATS)
def test_k_round_trip_error(name: str) -> None:
    """Values read back with gguf's dequantiser: as close as the reference's bytes make them,
    and 6-bit closer than 5-bit closer than 4-bit (K) closer than the 32-value Q4_0."""
    w = weights(16, 1024, 5)
    back = gguf.dequantize(quantize(w, name), gguf.GGMLQuantizationType[name])
    rel = np.linalg.norm(back - w) / np.linalg.norm(w)
    limits = {"Q4_K": 0.075, "Q5_K": 0.037, "Q6_K": 0.019}
    assert rel < limits[name]
    q4_0 = gguf.dequantize(quantize(w, "Q4_0"), gguf.GGMLQuantizationType.Q4_0)
    assert rel < np.linalg.norm(q4_0 - w) / np.linalg.norm(w)
    # The reference's bytes for the first rows: the same error, block for block.
    fmt = FORMATS[name]
    blocks = w[:2].reshape(-1, fmt.block_values)
    ref = np.frombuffer(b"".join(REFERENCE[name](b) for b in blocks), np.uint8)
    ref_back = gguf.dequantize(ref.reshape(len(blocks), -1), fmt.ggml_type).reshape(2, -1)
    assert np.array_equal(ref_back, back[:2])


def test_k_formats_order_by_bits() -> None:
    w = weights(8, 2048, 9)
    err = {n: np.abs(gguf.dequantize(quantize(w, n), FORMATS[n].ggml_type) - w).mean()
           for n in K_FORMATS}
    assert err["Q6_K"] < err["Q5_K"] < err["Q4_K"]


def test_zero_block_is_zero_bytes_and_zero_values() -> None:
    for name in FORMATS:
        fmt = FORMATS[name]
        out = quantize(np.zeros((1, fmt.block_values), np.float32), name)
        assert not gguf.dequantize(out, fmt.ggml_type).any(), name


def test_chunked_rows_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    w = weights(37, 512, 11)
    whole = {n: quantize(w, n) for n in FORMATS}
    monkeypatch.setattr(formats_module, "CHUNK_VALUES", 3 * 512)  # 3 rows a call, 13 calls
    for n in FORMATS:
        assert np.array_equal(quantize(w, n), whole[n]), n


def test_vector_input_gives_one_row_of_bytes() -> None:
    v = weights(1, 256)[0]
    assert np.array_equal(quantize(v, "Q6_K"), quantize(v[None, :], "Q6_K")[0])


def test_plain_types_are_casts() -> None:
    w = weights(2, 64)
    assert quantize(w, "F32").dtype == np.float32
    assert np.array_equal(quantize(w, "F16"), w.astype(np.float16))


def test_rows_not_whole_blocks() -> None:
    with pytest.raises(QuantizeError, match="rows of 576 values are not whole Q4_K blocks of 256"):
        quantize(weights(2, 576), "Q4_K")


def test_unknown_format() -> None:
    with pytest.raises(QuantizeError, match="no quantiser for 'IQ2_XS'"):
        block_format("IQ2_XS")


def test_nearest_int_is_round_half_even_in_range() -> None:
    v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998, 1e6 + 0.5, -3.7], np.float32)
    assert nearest_int(v).tolist() == np.rint(v).astype(int).tolist()


def test_round_away_is_c_roundf() -> None:
    v = np.array([0.49999997, 0.5, 1.5, 2.5, -2.5, -0.49999997, 126.5], np.float32)
    assert round_away(v).tolist() == [0, 1, 2, 3, -3, 0, 127]
