"""Each architecture we run (llama 2/3/3.1/3.2, mistral, qwen2) against transformers' own model
on tiny random GGUFs: prefill and decode logits within 1e-4 and the same greedy tokens, with
Llama-3.1's rope_freqs, Mistral's sliding window and Qwen2's biases in play; and what we refuse."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from hive_core.base.stage import Stage
from hive_core.model.config import LlamaConfig, llama3_factors
from hive_core.model.errors import GGUFFormatError, UnsupportedModelError
from hive_core.model.generation import generate
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.pipeline import LocalPipeline
from hive_core.model.weights import needed_tensors
from tests.model.families import LLAMA31_ROPE, families, family_gguf, llama3_rope_factors

NEW_TOKENS = 8
PROMPT = list(range(7, 47))  # 40 positions: past Mistral's window of 16


def hf_reference(path: Path, fam: Any) -> Any:
    """transformers' model of the file, set up as the original checkpoint would be: Llama-3.1's
    rope scaling (which its GGUF loader leaves out) and Mistral's sliding window."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    if fam.llama3_rope is not None:
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        model.config.rope_parameters = {"rope_type": "llama3", "rope_theta": fam.rope_base,
                                        **fam.llama3_rope}
        model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config)
    if fam.sliding_window is not None:
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                "rms_norm_eps", "rope_parameters", "tie_word_embeddings", "head_dim")
        cfg = transformers.MistralConfig(**{k: v for k, v in model.config.to_dict().items() if k in keys},
                                         sliding_window=fam.sliding_window)
        mistral = transformers.MistralForCausalLM(cfg)
        mistral.load_state_dict(model.state_dict())
        model = mistral
    return model.eval()


def hf_greedy(hf: Any, ids: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=n, min_new_tokens=n, output_logits=True,
            return_dict_in_generate=True, pad_token_id=0,
        )
    return out.sequences[0, len(ids):].tolist(), [step[0] for step in out.logits]


def mistral_arch() -> Any:
    """Mistral as transformers names it ("mistral" keys, q/k rows in rotate-half order)."""
    return dataclasses.replace(families()["mistral"], name="mistral-arch", architecture="mistral")


@pytest.mark.parametrize("name", ["llama2", "llama3", "llama32", "mistral", "qwen2"])
def test_greedy_and_logits_match_transformers(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    fam = families()[name]
    path = family_gguf(tmp_path_factory, fam)
    file = GGUFModelFile(path)
    pipe = LocalPipeline.load_single(file)
    hf = hf_reference(path, fam)
    with torch.inference_mode():
        prefill = pipe.new_session(kv_factory("fp32")).forward(PROMPT, all_logits=True)
        ref = hf(torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long)).logits[0]
    assert prefill.shape == ref.shape == (len(PROMPT), len(fam.vocab.tokens))
    assert (prefill - ref).abs().max().item() <= 1e-4

    session = pipe.new_session(kv_factory("fp32"))
    steps: list[torch.Tensor] = []

    def step(new: Any) -> torch.Tensor:
        steps.append(session.forward(new))
        return steps[-1]

    ours = generate(step, PROMPT, max_new_tokens=NEW_TOKENS, context_length=file.config.context_length)
    ref_ids, ref_logits = hf_greedy(hf, PROMPT, NEW_TOKENS)
    assert ours.new_ids == ref_ids
    for i, (a, b) in enumerate(zip(steps, ref_logits, strict=True)):
        assert (a - b).abs().max().item() <= 1e-4, f"step {i}"


def test_mistral_architecture_name_reads_its_keys_and_unpermuted_rows(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same weights written as "mistral" (mistral.* keys, no q/k interleave) and as llama.cpp
    writes Mistral ("llama", interleaved): the same logits."""
    as_llama = GGUFModelFile(family_gguf(tmp_path_factory, "mistral"))
    as_mistral = GGUFModelFile(family_gguf(tmp_path_factory, mistral_arch()))
    assert as_mistral.config.architecture == "mistral" and not as_mistral.config.qk_permuted
    assert as_mistral.config.sliding_window == as_llama.config.sliding_window == 16
    with torch.inference_mode():
        a = LocalPipeline.load_single(as_llama).new_session(kv_factory("fp32")).forward(PROMPT)
        b = LocalPipeline.load_single(as_mistral).new_session(kv_factory("fp32")).forward(PROMPT)
    assert torch.equal(a, b)


def test_llama3_rope_scaling_from_the_tensor_or_the_metadata(tmp_path_factory: pytest.TempPathFactory) -> None:
    fam = families()["llama3"]
    cfg = GGUFModelFile(family_gguf(tmp_path_factory, fam)).config
    expected = llama3_rope_factors(16, fam.rope_base, LLAMA31_ROPE)
    assert cfg.rope_factors == tuple(float(x) for x in expected)
    assert 1.0 in cfg.rope_factors and 8.0 in cfg.rope_factors  # both ends of the band in use
    meta = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
            "llama.feed_forward_length": 96, "llama.attention.head_count": 4,
            "llama.context_length": 128, "llama.attention.layer_norm_rms_epsilon": 1e-5,
            "llama.rope.freq_base": fam.rope_base, "llama.vocab_size": 10,
            "llama.rope.scaling.type": "llama3", "llama.rope.scaling.factor": 8.0,
            "llama.rope.scaling.original_context_length": 256}
    from_meta = LlamaConfig.from_metadata(meta).rope_factors
    assert from_meta is not None
    assert torch.allclose(torch.tensor(from_meta), torch.from_numpy(expected), rtol=1e-6)
    linear = LlamaConfig.from_metadata({**meta, "llama.rope.scaling.type": "linear"}).rope_factors
    assert linear == (8.0,) * 8
    with pytest.raises(UnsupportedModelError, match="RoPE scaling 'yarn' is not supported"):
        LlamaConfig.from_metadata({**meta, "llama.rope.scaling.type": "yarn"})
    with pytest.raises(GGUFFormatError, match="rope_freqs holds 3 factors for 8"):
        LlamaConfig.from_metadata(meta, rope_freqs=[1.0, 2.0, 3.0])
    assert llama3_factors(16, 500000.0, 8.0, 1.0, 4.0, 256.0) == tuple(from_meta)


def test_qwen2_keys_biases_and_tied_head(tmp_path_factory: pytest.TempPathFactory) -> None:
    file = GGUFModelFile(family_gguf(tmp_path_factory, "qwen2"))
    cfg = file.config
    assert (cfg.architecture, cfg.rope_base, cfg.n_layers, cfg.qk_permuted) == ("qwen2", 1e6, 2, False)
    names = needed_tensors(file, [Stage(0, 2)], embed=True, head=True)
    assert "blk.1.attn_k.bias" in names and "output.weight" not in names
    llama3 = GGUFModelFile(family_gguf(tmp_path_factory, "llama3"))
    assert "output.weight" in needed_tensors(llama3, [], embed=False, head=True)


@pytest.mark.parametrize("weights", ["packed", "bf16"])
def test_qwen2_quantised_weights_modes_agree_with_fp32(weights: str,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """Q8_0 matrices with biases and no q/k interleave, run by the packed kernels and in bf16."""
    fam = dataclasses.replace(families()["qwen2"], name="qwen2-q8", quantized=True)
    file = GGUFModelFile(family_gguf(tmp_path_factory, fam))
    with torch.inference_mode():
        ref = LocalPipeline.load_single(file).new_session(kv_factory("fp32")).forward(PROMPT)
        got = LocalPipeline.load_single(file, weights=weights).new_session(kv_factory("fp32")).forward(PROMPT)
    tolerance = 0.05 if weights == "packed" else 0.3  # bf16 rounds every matrix
    assert (got - ref).abs().max().item() <= tolerance
    assert got.argmax().item() == ref.argmax().item()


@pytest.mark.parametrize("arch", ["gemma2", "mistral3", "phi3"])
def test_other_architectures_are_refused_by_name(arch: str, tmp_path: Path) -> None:
    from tests.model.families import write_family

    fam = dataclasses.replace(families()["qwen2"], name=arch, architecture=arch, biases=False)
    path = write_family(tmp_path / f"{arch}.gguf", fam)
    with pytest.raises(UnsupportedModelError, match=f"^unsupported architecture '{arch}': only llama,"):
        GGUFModelFile(path)


def test_a_bias_we_would_not_apply_is_refused(tmp_path: Path) -> None:
    import gguf

    from tests.model.families import write_vocab

    fam = families()["qwen2"]
    w = gguf.GGUFWriter(tmp_path / "b.gguf", "qwen2")
    for key, value in (("block_count", 1), ("context_length", 8), ("embedding_length", 8),
                       ("feed_forward_length", 8), ("attention.head_count", 2)):
        w.add_uint32(f"qwen2.{key}", value)
    w.add_float32("qwen2.attention.layer_norm_rms_epsilon", 1e-6)
    write_vocab(w, fam.vocab)
    w.add_tensor("blk.0.attn_output.bias", torch.zeros(8).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="blk.0.attn_output.bias is a bias we do not apply"):
        GGUFModelFile(tmp_path / "b.gguf")
