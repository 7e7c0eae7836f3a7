"""GGUF loading: config from metadata, same values as gguf.GGUFReader, damaged and hostile
files, other architectures, per-shard loading, the tokenizer's packed vocabulary."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.base.stage import Part, Stage
from hive_core.model.config import LlamaConfig
from hive_core.model.errors import GGUFFormatError, UnsupportedModelError
from hive_core.model.gguf_file import GGUFModelFile, _unpermute
from hive_core.model.gguf_parse import parse_header
from hive_core.model.tiny import TinySpec, write_tiny_llama
from hive_core.model.tokenizer import GGUFTokenizer
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
    path = write_tiny_llama(tmp_path / "q.gguf", TinySpec(architecture="gemma2", n_layers=1))
    with pytest.raises(UnsupportedModelError, match="unsupported architecture .gemma2."):
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
    head, embedding, q = w.head.output, w.embedding, w.attention[0].q
    assert isinstance(head, torch.Tensor) and isinstance(embedding, torch.Tensor)
    assert isinstance(q, torch.Tensor)  # float weights load as plain tensors
    assert head.data_ptr() != embedding.data_ptr()
    assert q.dtype == torch.bfloat16


@pytest.mark.real_model
def test_real_shard_10_19_loads_nothing_else(smollm_path: Path) -> None:
    f = GGUFModelFile(smollm_path)
    cfg = f.config
    assert (cfg.n_layers, cfg.hidden, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    w = load_shard_weights(f, [Stage(10, 20)])
    layers = {int(n.split(".")[1]) for n in f.loaded}
    assert layers == set(range(10, 20))
    assert len(f.loaded) == 90  # 9 tensors per layer, no embedding, no head
    k = w.attention[10].k
    assert isinstance(k, torch.Tensor) and k.shape == (192, 576)


def _assert_same_as_gguf_reader(path: Path, dequantise: set[str] | None = None) -> None:
    """Metadata, arrays, tensor names, raw blocks and dequantised tensors all equal what
    `gguf.GGUFReader` gives for the same file (`dequantise`: the tensors to compare, or all)."""
    ours, reader = GGUFModelFile(path), gguf.GGUFReader(path)
    lazy = {k for k in reader.fields if k not in ours.metadata}
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"} <= lazy
    expected = {k: f.contents() for k, f in reader.fields.items() if k not in lazy}
    assert ours.metadata == expected
    assert [type(v) for v in ours.metadata.values()] == [type(v) for v in expected.values()]
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    assert ours.config == LlamaConfig.from_metadata(expected, vocab_size=vocab)
    for key in lazy:
        assert ours.array(key) == reader.fields[key].contents(), key
        assert ours.array_len(key) == len(reader.fields[key].data), key
    assert ours.tensor_names == [t.name for t in reader.tensors]
    for t in reader.tensors:
        blocks, qtype = ours.raw(t.name)
        assert qtype == t.tensor_type.name, t.name
        assert (blocks.shape, blocks.dtype) == (t.data.shape, t.data.dtype), t.name
        assert isinstance(blocks, np.memmap) and not blocks.flags.writeable, t.name
        assert np.array_equal(blocks, t.data), t.name
        if dequantise is not None and t.name not in dequantise:
            continue
        want = gguf.dequantize(t.data, t.tensor_type)
        if ".attn_q." in t.name:
            want = _unpermute(want, ours.config.n_heads)
        elif ".attn_k." in t.name:
            want = _unpermute(want, ours.config.n_kv_heads)
        got = ours.tensor(t.name, tuple(want.shape), torch.float32)
        assert torch.equal(got, torch.from_numpy(np.array(want, dtype=np.float32))), t.name


@pytest.mark.parametrize("spec", [TinySpec(), TinySpec(tied=False, quantized=False)],
                         ids=["q4_1-tied", "f32-untied"])
def test_tiny_file_reads_as_gguf_reader_reads_it(tmp_path: Path, spec: TinySpec) -> None:
    _assert_same_as_gguf_reader(write_tiny_llama(tmp_path / "t.gguf", spec))


@pytest.mark.real_model
def test_real_file_reads_as_gguf_reader_reads_it(smollm_path: Path) -> None:
    _assert_same_as_gguf_reader(smollm_path, dequantise={
        "token_embd.weight", "output_norm.weight", *(f"blk.0.{n}.weight" for n in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
            "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"))})


def test_array_is_a_fresh_list_the_file_does_not_keep(tiny_gguf: Path) -> None:
    f = GGUFModelFile(tiny_gguf)
    tokens = f.array("tokenizer.ggml.tokens")
    assert tokens is not None and tokens[:2] == ["<|endoftext|>", "<|im_start|>"]
    assert sys.getrefcount(tokens) == 2  # this name and getrefcount's argument: no copy kept
    assert f.array("tokenizer.ggml.tokens") == tokens
    assert f.array_len("tokenizer.ggml.tokens") == len(tokens)
    assert f.array("general.languages") is None and f.array_len("general.languages") is None
    with pytest.raises(GGUFFormatError, match="general.name is not an array"):
        f.array("general.name")


def test_tokenizer_holds_its_vocabulary_packed(tiny_gguf: Path) -> None:
    f = GGUFModelFile(tiny_gguf)
    tokens = f.array("tokenizer.ggml.tokens")
    assert tokens is not None
    tok = GGUFTokenizer(f)
    assert [tok.tokens[i] for i in range(len(tokens))] == tokens
    assert len(tok.tokens) == tok.vocab_size == len(tokens)
    assert tok.tokens[-1] == tokens[-1]
    assert tok.token_bytes(3 + ord("A")) == b"A"  # three specials, then one token per byte
    assert tok.token_bytes(2) == b""  # <|im_end|> is a control token
    with pytest.raises(IndexError, match="outside a vocabulary"):
        tok.token_bytes(len(tokens))
    assert tok.decode(tok.encode("the cat")) == "the cat"


def test_merge_of_unknown_tokens_is_refused(tmp_path: Path) -> None:
    data = bytearray(write_tiny_llama(tmp_path / "t.gguf").read_bytes())
    merge = "Ġ t".encode()
    at = data.index(struct.pack("<Q", len(merge)) + merge)
    data[at + 8 + len(merge) - 1] = ord("q")  # "Ġ q": its product "Ġq" is not in the vocabulary
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(UnsupportedModelError, match="BPE vocabulary is inconsistent"):
        GGUFTokenizer(GGUFModelFile(bad))


def _open_everything(path: Path) -> None:
    """Everything a node does with a model file short of running it."""
    f = GGUFModelFile(path)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        f.array(key)
    for name in f.tensor_names:
        f.raw(name)
    GGUFTokenizer(f)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_file_gives_a_model_error_and_nothing_else(
    tiny_gguf: Path, tmp_path: Path, data: st.DataObject
) -> None:
    original = tiny_gguf.read_bytes()
    raw = bytearray(original)
    header_end = parse_header(memoryview(original)).data_offset  # later bytes are weights
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, header_end - 1), label="at")
        raw[at] = data.draw(st.integers(0, 255), label="byte")
    if data.draw(st.booleans(), label="cut"):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1), label="length")]
    _assert_only_model_errors(tmp_path / "damaged.gguf", bytes(raw))


def test_every_header_field_set_hostile_gives_a_model_error(tiny_gguf: Path, tmp_path: Path) -> None:
    """Each count, length, type, dimension and offset of the header set to zero, off by one,
    and huge, one at a time."""
    original = tiny_gguf.read_bytes()
    fields = _integer_fields(original)
    assert len(fields) > 6 * 38  # every tensor info's fields are among them
    for at, width in fields:
        for hostile in (0, int.from_bytes(original[at:at + width], "little") ^ 1, 1 << (8 * width - 4)):
            raw = bytearray(original)
            raw[at:at + width] = hostile.to_bytes(width, "little")
            _assert_only_model_errors(tmp_path / "damaged.gguf", bytes(raw))


def _assert_only_model_errors(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        _open_everything(path)
    except (GGUFFormatError, UnsupportedModelError) as exc:
        assert str(exc) and "\n" not in str(exc)


def _integer_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of the header's integer fields: counts, type tags, string and array
    lengths (the first few strings of each array), tensor dimensions and offsets."""
    fields: list[tuple[int, int]] = [(4, 4), (8, 8), (16, 8)]
    pos = 24

    def string() -> None:
        nonlocal pos
        fields.append((pos, 8))
        pos += 8 + int.from_bytes(data[pos:pos + 8], "little")

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    for _ in range(n_kv):
        string()
        vtype = struct.unpack_from("<I", data, pos)[0]
        fields.append((pos, 4))
        pos += 4
        if vtype == 8:
            string()
        elif vtype == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            fields += [(pos, 4), (pos + 4, 8)]
            pos += 12
            for i in range(count):
                if item != 8:
                    pos += sizes[item] * count
                    break
                if i < 3:
                    string()
                else:
                    pos += 8 + int.from_bytes(data[pos:pos + 8], "little")
        else:
            pos += sizes[vtype]
    for _ in range(n_tensors):
        string()
        n_dims = struct.unpack_from("<I", data, pos)[0]
        fields += [(pos, 4), *((pos + 4 + 8 * d, 8) for d in range(n_dims))]
        pos += 4 + 8 * n_dims
        fields += [(pos, 4), (pos + 4, 8)]
        pos += 12
    return fields


@pytest.mark.parametrize("key,value", [
    ("llama.attention.layer_norm_rms_epsilon", "1e-5"),
    ("llama.rope.freq_base", [10000.0]),
    ("llama.attention.head_count_kv", 2.5),
    ("llama.rope.dimension_count", True),
])
def test_config_refuses_metadata_that_is_not_a_number(key: str, value: object) -> None:
    from hive_core.model.config import LlamaConfig

    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
            "llama.feed_forward_length": 128, "llama.attention.head_count": 4,
            "llama.context_length": 64, "llama.attention.layer_norm_rms_epsilon": 1e-5}
    assert LlamaConfig.from_metadata(meta, vocab_size=300).head_dim == 16
    with pytest.raises(GGUFFormatError, match=f"{key} = .* is not a number"):
        LlamaConfig.from_metadata({**meta, key: value}, vocab_size=300)
