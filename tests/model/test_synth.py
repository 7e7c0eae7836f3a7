"""Random-weight GGUFs of published shapes: they parse, have the shapes' byte sizes, load,
tokenize and run, and the writer's memory stays far below the file's size."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from hive_core.model.quant.formats import FORMATS, QuantizeError
from hive_core.model.quant.layout import file_type
from hive_core.model.quant.random_blocks import random_blocks
from hive_core.model.quant.stream import GGUFStream, TensorPlan, text, u32
from hive_core.model.quant.synth import SHAPES, Llama3RopeScaling, plan, write_synthetic
from hive_core.model.quant.vocab import byte_alphabet, synthetic_vocab

REPO = Path(__file__).resolve().parents[2]


def expected_bytes(shape: tuple[int, ...], kind: str) -> int:
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[kind]]
    return int(np.prod(shape)) // block * size


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "tiny.gguf"
    write_synthetic(path, "tiny-llama3", "Q4_K_M", seed=3)
    return path


def test_tiny_parses_with_gguf_reader_and_sizes_match_the_shape(tiny: Path) -> None:
    s = SHAPES["tiny-llama3"]
    reader = gguf.GGUFReader(tiny)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 1 + 9 * s.n_layers + 1  # embd, rope_freqs, layers, norm+output
    kv = s.n_kv_heads * s.head_dim
    shapes = {"attn_q": (s.hidden, s.hidden), "attn_k": (kv, s.hidden),
              "attn_v": (kv, s.hidden), "attn_output": (s.hidden, s.hidden),
              "ffn_gate": (s.ffn, s.hidden), "ffn_up": (s.ffn, s.hidden),
              "ffn_down": (s.hidden, s.ffn), "attn_norm": (s.hidden,), "ffn_norm": (s.hidden,)}
    for name, t in tensors.items():
        role = name.split(".")[-2]
        shape = shapes.get(role) or {"token_embd": (s.vocab, s.hidden), "output": (s.vocab, s.hidden),
                                     "output_norm": (s.hidden,),
                                     "rope_freqs": (s.head_dim // 2,)}[role]
        assert tuple(reversed(t.shape.tolist())) == shape, name
        assert t.n_bytes == expected_bytes(shape, t.tensor_type.name), name
    # The 4-layer mix: Q6_K for attn_v/ffn_down in layers 2 and 3 (use_more_bits) and output.
    assert {n for n, t in tensors.items() if t.tensor_type.name == "Q6_K"} == {
        "blk.2.attn_v.weight", "blk.3.attn_v.weight", "blk.2.ffn_down.weight",
        "blk.3.ffn_down.weight", "output.weight"}
    assert reader.fields["general.file_type"].contents() == file_type("Q4_K_M").number
    last = max(t.data_offset + t.n_bytes for t in reader.tensors)
    assert tiny.stat().st_size == -(-last // 32) * 32


def test_tiny_loads_tokenizes_and_runs_a_forward_pass(tiny: Path) -> None:
    from hive_core.model.chat import prompt_ids
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(tiny)
    cfg = file.config
    assert (cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (
        4, 256, 512, 4, 2, 1024)
    tok = GGUFTokenizer(file)
    text = "Hello, world! 123 ünïcode\n"
    assert tok.decode(tok.encode(text)) == text
    ids = prompt_ids(file, tok, "What is the capital of France?")
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    session = LocalPipeline.load_single(file, weights="fp32").new_session(kv_factory("fp32"))
    with torch.inference_mode():
        logits = session.forward(ids)
    assert logits.shape == (1024,) and bool(torch.isfinite(logits).all())
    assert 0.1 < float(logits.std()) < 100


def test_layer_prefix_keeps_the_whole_models_formats() -> None:
    """A 70B prefix: layer types as in the 80-layer file (attn_v Q5_K in the middle layers,
    llama.cpp's 70B rule), embedding and head present."""
    full = {t.name: t for t in plan(SHAPES["llama3-70b"], file_type("Q4_K_M"))}
    part = plan(SHAPES["llama3-70b"], file_type("Q4_K_M"), 11)
    assert all(full[t.name] == t for t in part)
    names = {t.name for t in part}
    assert "blk.10.attn_v.weight" in names and "blk.11.attn_q.weight" not in names
    assert full["blk.10.attn_v.weight"].ggml_type.name == "Q5_K"
    assert {"token_embd.weight", "output.weight", "output_norm.weight"} <= names
    with pytest.raises(QuantizeError, match="--layers must be 1 to 80 for llama3-70b, got 81"):
        plan(SHAPES["llama3-70b"], file_type("Q4_K_M"), 81)


def test_llama3_8b_q4_k_m_bytes() -> None:
    """Every tensor's bytes from the published shape and llama.cpp's Q4_K_M mix, counted here
    independently: Q6_K attn_v/ffn_down in layers 0-3, 6, 9, ..., 27 and 28-31."""
    more = set(range(4)) | set(range(28, 32)) | {i for i in range(4, 28) if (i - 4) % 3 == 2}
    h, f, kv, vocab = 4096, 14336, 1024, 128256
    total = expected_bytes((vocab, h), "Q4_K") + expected_bytes((vocab, h), "Q6_K")
    total += 4 * 64 + 4 * h + 32 * 2 * 4 * h  # rope_freqs, output_norm, two norms a layer
    for i in range(32):
        v, d = ("Q6_K", "Q6_K") if i in more else ("Q4_K", "Q4_K")
        total += expected_bytes((h, h), "Q4_K") * 2 + expected_bytes((kv, h), "Q4_K")
        total += expected_bytes((kv, h), v) + expected_bytes((f, h), "Q4_K") * 2
        total += expected_bytes((h, f), d)
    tensors = plan(SHAPES["llama3-8b"], file_type("Q4_K_M"))
    assert sum(t.nbytes for t in tensors) == total == 4_912_898_304


def test_stream_honours_a_declared_alignment(tmp_path: Path) -> None:
    out = tmp_path / "aligned.gguf"
    a = np.arange(5, dtype=np.float32)
    b = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    plans = [TensorPlan("a", (5,), GGMLQuantizationType.F32),
             TensorPlan("b", (3, 7), GGMLQuantizationType.F32)]
    with GGUFStream(out, [text("general.architecture", "llama"), u32("general.alignment", 64)],
                    plans) as stream:
        stream.write(plans[0], [a[:2], a[2:]])  # chunks follow one another
        stream.write(plans[1], [b])
    reader = gguf.GGUFReader(out)
    assert all(t.data_offset % 64 == 0 for t in reader.tensors)
    assert np.array_equal(reader.tensors[0].data, a)
    assert np.array_equal(reader.tensors[1].data, b)


def test_stream_leaves_no_file_when_a_tensor_is_short(tmp_path: Path) -> None:
    out = tmp_path / "short.gguf"
    plans = [TensorPlan("a", (8,), GGMLQuantizationType.F32)]
    with (pytest.raises(QuantizeError, match="tensor a: wrote 16 bytes, expected 32"),
          GGUFStream(out, [text("general.architecture", "llama")], plans) as stream):
        stream.write(plans[0], [np.zeros(4, np.float32)])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(QuantizeError, match="general.alignment must be a UINT32 power of two"):
        GGUFStream(out, [u32("general.alignment", 48)], plans)


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_random_blocks_are_centred_with_the_asked_spread(kind: str) -> None:
    rng = np.random.Generator(np.random.SFC64(1))
    values = gguf.dequantize(random_blocks(kind, 2048, 0.02, rng), FORMATS[kind].ggml_type)
    assert np.isfinite(values).all()
    # Q4_0's codes run -8..7 and Q5_0's -16..15: their mean is half a step below zero.
    bias = {"Q4_0": -0.5 / 4.8, "Q5_0": -0.5 / 9.6}.get(kind, 0.0)
    assert abs(values.mean() / values.std() - bias) < 0.03
    assert 0.017 < values.std() < 0.023


def test_synthetic_vocab_is_a_valid_bpe() -> None:
    from hive_core.model.tokenizer import _bytes_to_unicode

    v = synthetic_vocab(2000, n_special=16, seed=1)
    assert len(v.tokens) == len(v.types) == 2000 and len(set(v.tokens)) == 2000
    assert v.tokens[:256] == byte_alphabet() == [_bytes_to_unicode()[b] for b in range(256)]
    assert len(v.merges) == 2000 - 16 - 256
    index = {t: i for i, t in enumerate(v.tokens)}
    for rank, merge in enumerate(v.merges):
        left, right = merge.split(" ")
        assert index[left] < 256 + rank and index[right] < 256 and index[left + right] == 256 + rank
    assert v.tokens[v.bos_id] == "<|begin_of_text|>" and v.tokens[v.eot_id] == "<|eot_id|>"
    assert v.types[-16:] == [3] * 16 and set(v.types[:-16]) == {1}
    with pytest.raises(ValueError, match="no room for the 256 byte tokens"):
        synthetic_vocab(300, n_special=64)


def test_rope_factors_match_transformers_llama3() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import _compute_llama3_parameters

    scaling = Llama3RopeScaling()
    config = transformers.LlamaConfig(
        hidden_size=4096, num_attention_heads=32, max_position_embeddings=131072,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": scaling.factor,
                         "low_freq_factor": scaling.low_freq_factor,
                         "high_freq_factor": scaling.high_freq_factor,
                         "original_max_position_embeddings": scaling.original_context})
    scaled, _ = _compute_llama3_parameters(config)
    plain = 1.0 / 500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128)
    ours = scaling.factors(128, 500000.0)
    assert np.allclose(ours, (plain / scaled.double()).numpy(), rtol=1e-5)
    assert ours[0] == 1.0 and ours[-1] == 8.0


@pytest.mark.real_model
def test_llama3_8b_is_written_in_seconds_with_small_memory(tmp_path: Path) -> None:
    """The whole Llama-3-8B Q4_K_M (4.9 GB) through the CLI in a fresh process whose peak RSS
    must stay a small fraction of the file; then parsed by gguf and by us.

    The peak is the process's own ``VmHWM``: ``ru_maxrss`` would count the pytest parent's
    pages, which the child maps between fork and exec."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux's /proc to read the child's peak RSS")
    out = tmp_path / "llama3-8b.gguf"
    probe = (
        "import sys\n"
        "from cadencia.cli import main\n"
        "rc = main(['model', 'synth', '--shape', 'llama3-8b', '--type', 'Q4_K_M', sys.argv[1]])\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]))\n"
        "sys.exit(rc)\n"
    )
    try:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe, str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=300, check=True)
        seconds = time.perf_counter() - t0
        peak = int(done.stdout.strip().splitlines()[-1]) * 1024
        size = out.stat().st_size
        assert size > 4.9e9
        assert peak < 250e6, f"peak RSS {peak / 1e6:.0f} MB for a {size / 1e9:.2f} GB file"
        assert seconds < 180
        reader = gguf.GGUFReader(out)
        assert len(reader.tensors) == 292
        assert sum(int(t.n_bytes) for t in reader.tensors) == 4_912_898_304
        from hive_core.model.gguf_file import GGUFModelFile

        cfg = GGUFModelFile(out).config
        assert (cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads) == (
            32, 4096, 14336, 32, 8)
        assert (cfg.vocab_size, cfg.context_length, cfg.rope_base) == (128256, 8192, 500000.0)
        del reader
    finally:
        if out.exists():
            os.unlink(out)


@pytest.mark.real_model
def test_llama3_70b_prefix_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two of Llama-3-70B's 80 layers: the file loads as a 2-layer model with the real widths,
    its layers typed as in the whole model, and `model info` splits it."""
    from cadencia.cli import main
    from hive_core.model.gguf_file import GGUFModelFile

    out = tmp_path / "llama3-70b-2.gguf"
    try:
        assert main(["model", "synth", "--shape", "llama3-70b", "--layers", "2", str(out)]) == 0
        cfg = GGUFModelFile(out).config
        assert (cfg.n_layers, cfg.hidden, cfg.ffn, cfg.n_heads, cfg.n_kv_heads) == (
            2, 8192, 28672, 64, 8)
        tensors = {t.name: t for t in gguf.GGUFReader(out).tensors}
        assert tensors["blk.1.attn_v.weight"].tensor_type.name == "Q6_K"  # layer 1 < 80/8
        assert tensors["blk.1.ffn_gate.weight"].n_bytes == expected_bytes((28672, 8192), "Q4_K")
        capsys.readouterr()
        assert main(["model", "info", str(out), "--nodes", "2", "--json"]) == 0
        import json

        info = json.loads(capsys.readouterr().out)
        assert info["embedding_bytes"] == expected_bytes((128256, 8192), "Q4_K")
        assert info["head_bytes"] == expected_bytes((128256, 8192), "Q6_K") + 4 * 8192
        assert [n["kv_bytes"] for n in info["nodes"]] == [8192 * 2 * 1024 * 4] * 2
    finally:
        if out.exists():
            os.unlink(out)
