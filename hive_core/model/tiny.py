"""Write a small random-weight llama GGUF: a fast stand-in for the real model in tests and
simulations, laid out like a llama.cpp conversion (Q4_1 linears, Q8_0 embedding, permuted q/k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hive_core.model.tokenizer import _bytes_to_unicode

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# A few merges so the tokenizer really runs BPE: "Ġt"+"he" -> "Ġthe", and so on.
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class TinySpec:
    """Shape of the tiny model (multiples of 32 so Q4_1/Q8_0 blocks fit)."""

    n_layers: int = 4
    hidden: int = 64
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn: int = 128
    context_length: int = 64
    architecture: str = "llama"
    tied: bool = True  # no output.weight: the head reuses the embedding, as SmolLM2 does
    quantized: bool = True  # Q4_1 linears and Q8_0 embedding; float32 when False


def tiny_vocab() -> list[str]:
    tokens = list(SPECIALS) + [_bytes_to_unicode()[b] for b in range(256)]
    for m in MERGES:
        tokens.append(m.replace(" ", ""))
    return tokens


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert's q/k row permutation (the loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_llama(
    path: str | os.PathLike[str], spec: TinySpec = TinySpec(), seed: int = 0
) -> Path:
    """Write the model to `path` and return it."""
    import gguf

    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens = tiny_vocab()
    vocab = len(tokens)
    head_dim = spec.hidden // spec.n_heads
    arch = spec.architecture
    w = gguf.GGUFWriter(path, arch)
    w.add_name("tiny-random-llama")
    w.add_uint32(f"{arch}.block_count", spec.n_layers)
    w.add_uint32(f"{arch}.context_length", spec.context_length)
    w.add_uint32(f"{arch}.embedding_length", spec.hidden)
    w.add_uint32(f"{arch}.feed_forward_length", spec.ffn)
    w.add_uint32(f"{arch}.attention.head_count", spec.n_heads)
    w.add_uint32(f"{arch}.attention.head_count_kv", spec.n_kv_heads)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32(f"{arch}.vocab_size", vocab)
    w.add_uint32(f"{arch}.rope.dimension_count", head_dim)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(SPECIALS) + [1] * (vocab - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    def matrix(rows: int, cols: int, scale: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def put(name: str, data: np.ndarray, qtype: gguf.GGMLQuantizationType) -> None:
        if not spec.quantized or data.ndim == 1:
            w.add_tensor(name, data.astype(np.float32))
            return
        packed = gguf.quantize(data, qtype)
        w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)

    q4, q8 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0
    h, kv, f = spec.hidden, spec.n_kv_heads * head_dim, spec.ffn
    put("token_embd.weight", matrix(vocab, h, 1.0), q8)
    for i in range(spec.n_layers):
        p = f"blk.{i}."
        put(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(h)).astype(np.float32), q4)
        put(p + "attn_q.weight", _permute(matrix(h, h, h**-0.5), spec.n_heads), q4)
        put(p + "attn_k.weight", _permute(matrix(kv, h, h**-0.5), spec.n_kv_heads), q4)
        put(p + "attn_v.weight", matrix(kv, h, h**-0.5), q4)
        put(p + "attn_output.weight", matrix(h, h, h**-0.5), q4)
        put(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(h)).astype(np.float32), q4)
        put(p + "ffn_gate.weight", matrix(f, h, h**-0.5), q4)
        put(p + "ffn_up.weight", matrix(f, h, h**-0.5), q4)
        put(p + "ffn_down.weight", matrix(h, f, f**-0.5), q4)
    put("output_norm.weight", np.ones(h, dtype=np.float32), q4)
    if not spec.tied:
        put("output.weight", matrix(vocab, h, h**-0.5), q8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
