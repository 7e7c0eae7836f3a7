"""Our executor against Hugging Face transformers loading the same GGUF, offline.

The same token ids go into both; greedy continuations must match token for token and every
prefill and decode step's logits must agree within 1e-4. Tokenizer and chat template are
checked against transformers' GGUF tokenizer too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hive_core.model.chat import chat_text as render_chat
from hive_core.model.fixed_prompts import CHAT_PROMPT, TEXT_PROMPTS
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory

pytestmark = pytest.mark.real_model

NEW_TOKENS = 24
PROMPTS = TEXT_PROMPTS
CHAT = CHAT_PROMPT


@pytest.fixture(scope="module")
def hf_tokenizer(smollm_path: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(smollm_path.parent),
                                                      gguf_file=smollm_path.name)


def chat_text(smollm: Any) -> str:
    return render_chat(smollm.file, smollm.tokenizer, [{"role": "user", "content": CHAT_PROMPT}])


def hf_greedy(hf: Any, ids: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """transformers' own greedy loop (its KV cache), never stopping early: ids and logits."""
    with torch.inference_mode():
        out = hf.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False, max_new_tokens=n, min_new_tokens=n, output_logits=True,
            return_dict_in_generate=True, pad_token_id=0,
        )
    return out.sequences[0, len(ids):].tolist(), [step[0] for step in out.logits]


def test_tokenizer_matches_transformers(smollm: Any, hf_tokenizer: Any) -> None:
    for text in [*PROMPTS, chat_text(smollm), "  leading spaces\n\n\ttabs 2024-11-25 <|im_end|>"]:
        assert smollm.tokenizer.encode(text) == hf_tokenizer(text)["input_ids"], text


def test_chat_template_matches_transformers(smollm: Any, hf_tokenizer: Any) -> None:
    expected = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT}], tokenize=False, add_generation_prompt=True)
    assert chat_text(smollm) == expected


@pytest.mark.parametrize("index", range(len(PROMPTS) + 1))
def test_greedy_and_logits_match_transformers(smollm: Any, hf_smollm: Any, index: int) -> None:
    text = PROMPTS[index] if index < len(PROMPTS) else chat_text(smollm)
    ids = smollm.tokenizer.encode(text)
    session = smollm.pipeline.new_session(kv_factory("fp32"))
    with torch.inference_mode():
        prefill = session.forward(ids, all_logits=True)
        ref_prefill = hf_smollm(torch.tensor([ids])).logits[0]
    assert prefill.shape == ref_prefill.shape == (len(ids), 49152)
    assert (prefill - ref_prefill).abs().max().item() <= 1e-4

    ours_logits: list[torch.Tensor] = []
    session = smollm.pipeline.new_session(kv_factory("fp32"))

    def step(new: Any) -> torch.Tensor:
        logits = session.forward(new)
        ours_logits.append(logits)
        return logits

    ours = generate(step, ids, max_new_tokens=NEW_TOKENS,
                    context_length=smollm.pipeline.config.context_length)
    ref_ids, ref_logits = hf_greedy(hf_smollm, ids, NEW_TOKENS)
    assert ours.new_ids == ref_ids
    for i, (a, b) in enumerate(zip(ours_logits, ref_logits, strict=True)):
        diff = (a - b).abs().max().item()
        assert diff <= 1e-4, f"decode step {i}: logits differ by {diff}"
