"""The model's chat template (`tokenizer.chat_template`) rendered with a sandboxed jinja2, and
the one helper every client uses to turn a prompt or messages into token ids."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hive_core.model.errors import ModelError

if TYPE_CHECKING:
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.tokenizer import GGUFTokenizer


class ChatTemplateError(ModelError):
    """The model has no chat template, or it fails to render these messages."""


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """transformers' `tojson`: plain JSON, not jinja's HTML-escaped one (tool schemas)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _plain(value: Any) -> Any:
    """`value` rebuilt from JSON types only: the template sees no object with methods of ours."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise ChatTemplateError(f"a chat message holds a {type(value).__name__}; only JSON values can be rendered")


class ChatTemplate:
    """Renders messages as the model was trained to read them, with the environment and
    variables transformers gives a template (`messages`, `add_generation_prompt`, the special
    tokens' texts, `tools` and `documents` None, `raise_exception`, `strftime_now`)."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "",
                 unk_token: str | None = None, pad_token: str | None = None) -> None:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # A template comes from a file we did not write: the sandbox stops it reaching Python.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[jinja2.ext.loopcontrols])

        def raise_exception(message: str) -> None:
            raise ChatTemplateError(f"chat template refused the messages: {message}")

        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template does not parse: {exc}") from exc
        self.bos_token = bos_token
        self.eos_token = eos_token
        # transformers passes every special token the tokenizer has, and only those.
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token,
                        "pad_token": pad_token}

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        chat = [_plain(m) for m in messages]
        try:
            return self._template.render(
                messages=chat, tools=None, documents=None,
                add_generation_prompt=add_generation_prompt,
                **{k: v for k, v in self._tokens.items() if v is not None},
            )
        except ChatTemplateError:
            raise
        except Exception as exc:
            raise ChatTemplateError(f"the model's chat template failed: {type(exc).__name__}: {exc}") from exc


def chat_template(file: GGUFModelFile, tokenizer: GGUFTokenizer) -> ChatTemplate:
    """The model's own template (`tokenizer.chat_template`), with its special tokens' texts."""
    source = file.metadata.get("tokenizer.chat_template")
    if not isinstance(source, str):
        raise ChatTemplateError("the model has no chat template; pass --raw to feed the prompt as is")

    def text(token_id: int | None) -> str | None:
        return None if token_id is None else tokenizer.tokens[token_id]

    def file_id(key: str) -> int | None:
        value = file.metadata.get(f"tokenizer.ggml.{key}")
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < tokenizer.vocab_size
        return value if ok else None

    return ChatTemplate(source, bos_token=text(tokenizer.bos_id) or "",
                        eos_token=text(tokenizer.eos_id) or "",
                        unk_token=text(file_id("unknown_token_id")),
                        pad_token=text(file_id("padding_token_id")))


def chat_text(file: GGUFModelFile, tokenizer: GGUFTokenizer, messages: Sequence[Mapping[str, Any]],
              *, add_generation_prompt: bool = True) -> str:
    """`messages` rendered by the model's template, ready for the answer."""
    return chat_template(file, tokenizer).render(messages, add_generation_prompt=add_generation_prompt)


def encode_chat(file: GGUFModelFile, tokenizer: GGUFTokenizer, messages: Sequence[Mapping[str, Any]],
                *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of `messages` in the model's chat template: what every client feeds the model.

    BOS comes once: the vocabulary's rule adds it unless the template already wrote it
    (Llama-3's and Mistral's do), as llama.cpp and transformers avoid a doubled BOS.
    """
    text = chat_text(file, tokenizer, messages, add_generation_prompt=add_generation_prompt)
    bos = tokenizer.bos_text
    return tokenizer.encode(text, add_bos=tokenizer.add_bos and not (bos and text.startswith(bos)))


def prompt_ids(file: GGUFModelFile, tokenizer: GGUFTokenizer, prompt: str, *, raw: bool = False) -> list[int]:
    """`prompt` as one user turn in the chat template (as is with `raw`), checked against the context.

    The one path from a user's prompt to token ids: `generate`, `ask`, the game and the API use it.
    """
    from hive_core.model.generation import check_prompt

    if raw:
        ids = tokenizer.encode(prompt)
    else:
        ids = encode_chat(file, tokenizer, [{"role": "user", "content": prompt}])
    check_prompt(ids, file.config.context_length)
    return ids
