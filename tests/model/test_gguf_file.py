"""GGUF loading: config from metadata, damaged files, other architectures, per-shard loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hive_core.model.errors import GGUFFormatError, UnsupportedModelError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.stage import Part, Stage
from hive_core.model.tiny import TinySpec, write_tiny_llama
from hive_core.model.weights import load_shard_weights


def test_tiny_config_from_metadata(tiny_gguf: Path) -> None:
    cfg = GGUFModelFile(tiny_gguf).config
    assert (cfg.n_layers, cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim) == (4, 64, 4, 2, 16)
    assert cfg.context_length == 64 and cfg.ffn == 128


def test_truncated_file_is_rejected(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    for cut in (3, 100, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFFormatError, match="truncated|malformed|not a GGUF"):
            GGUFModelFile(bad)


def test_not_a_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        GGUFModelFile(bad)


def test_other_architecture_is_refused(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "q.gguf", TinySpec(architecture="qwen2", n_layers=1))
    with pytest.raises(UnsupportedModelError, match="unsupported architecture 'qwen2'"):
        GGUFModelFile(path)


def test_shard_dequantises_only_its_layers(tiny_gguf: Path) -> None:
    f = GGUFModelFile(tiny_gguf)
    w = load_shard_weights(f, [Stage(1, 3)])
    assert sorted(w.attention) == [1, 2] and sorted(w.mlp) == [1, 2]
    assert all(n.startswith(("blk.1.", "blk.2.")) for n in f.loaded)
    assert w.embedding is None and w.head is None

    f = GGUFModelFile(tiny_gguf)
    w = load_shard_weights(f, [Stage(2, 3, Part.MLP)])
    assert f.loaded == [f"blk.2.{n}.weight" for n in ("ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
    assert w.attention == {}

    f = GGUFModelFile(tiny_gguf)
    w = load_shard_weights(f, [], head=True)  # tied head: the embedding is the output matrix
    assert sorted(f.loaded) == ["output_norm.weight", "token_embd.weight"]
    assert w.head is not None and w.embedding is None


def test_untied_head_and_bfloat16(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "u.gguf", TinySpec(tied=False, quantized=False))
    f = GGUFModelFile(path)
    w = load_shard_weights(f, [Stage(0, 1, Part.ATTENTION)], embed=True, head=True,
                           dtype=torch.bfloat16)
    assert "output.weight" in f.loaded
    assert w.head is not None and w.embedding is not None
    assert w.head.output.data_ptr() != w.embedding.data_ptr()
    assert w.attention[0].q.dtype == torch.bfloat16


@pytest.mark.real_model
def test_real_shard_10_19_loads_nothing_else(smollm_path: Path) -> None:
    f = GGUFModelFile(smollm_path)
    cfg = f.config
    assert (cfg.n_layers, cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    w = load_shard_weights(f, [Stage(10, 20)])
    layers = {int(n.split(".")[1]) for n in f.loaded}
    assert layers == set(range(10, 20))
    assert len(f.loaded) == 90  # 9 tensors per layer, no embedding, no head
    assert w.attention[10].k.shape == (192, 576)
