"""Vocabularies we cannot build a tokenizer from: one `TokenizerError` line naming what is
wrong, and no tokenizer half-built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hive_core.model.errors import TokenizerError, UnsupportedModelError
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tokenizer import PRE_TOKENIZERS, GGUFTokenizer
from tests.model.families import families, with_vocab, write_family


def build(tmp_path: Path, name: str, **changes: object) -> GGUFTokenizer:
    fam = dataclasses.replace(with_vocab(families()[name], **changes), n_layers=1)
    return GGUFTokenizer(GGUFModelFile(write_family(tmp_path / "v.gguf", fam)))


@pytest.mark.parametrize("name, changes, message", [
    ("qwen2", {"merges": None}, "^the byte-level BPE vocabulary has no merges"),
    ("qwen2", {"pre": "no-such-split"}, "^unknown pre-tokenizer 'no-such-split' .tokenizer.ggml.pre."),
    ("llama2", {"scores": None}, "^the SentencePiece vocabulary has no scores"),
    ("qwen2", {"model": "bert"}, "^tokenizer 'bert' is not supported"),
    ("qwen2", {"merges": ["Ġ t", "Ġt zzz"]}, "^the GGUF's BPE vocabulary is inconsistent"),
])
def test_bad_vocabulary_is_one_error(tmp_path: Path, name: str, changes: dict[str, object],
                                     message: str) -> None:
    with pytest.raises(TokenizerError, match=message) as err:
        build(tmp_path, name, **changes)
    assert isinstance(err.value, UnsupportedModelError) and "\n" not in str(err.value)


def test_token_types_that_disagree_with_the_tokens(tmp_path: Path) -> None:
    fam = families()["qwen2"]
    with pytest.raises(TokenizerError, match=r"token_type has \d+ entries for \d+ tokens"):
        build(tmp_path, "qwen2", types=fam.vocab.types[:-1])


def test_every_known_pre_tokenizer_compiles() -> None:
    """Each split pattern in the table is valid for the `tokenizers` regex engine."""
    from tokenizers import Regex, pre_tokenizers

    for name, pre in PRE_TOKENIZERS.items():
        for pattern in pre.splits:
            split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
            assert split.pre_tokenize_str("Hello, world 123!\n"), name


def test_missing_pre_tokenizer_is_gpt2s_split(tmp_path: Path) -> None:
    """GPT-2's split keeps a run of digits whole where Llama-3's cuts it in threes."""
    plain = build(tmp_path, "llama3", pre=None)
    assert [plain.tokens[i] for i in plain.encode("2024", add_bos=False)] == ["2024"]
    llama3 = GGUFTokenizer(GGUFModelFile(write_family(
        tmp_path / "l.gguf", dataclasses.replace(families()["llama3"], n_layers=1))))
    assert [llama3.tokens[i] for i in llama3.encode("2024", add_bos=False)] == ["202", "4"]
