"""The model's chat template (`tokenizer.chat_template`) rendered with a sandboxed jinja2, and
the one helper every client uses to turn a prompt or messages into token ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hive_core.model.errors import ModelError

if TYPE_CHECKING:
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.tokenizer import GGUFTokenizer


class ChatTemplateError(ModelError):
    """The model has no chat template, or it fails to render these messages."""


class ChatTemplate:
    """Renders messages as the model was trained to read them (as transformers does)."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # A template comes from a file we did not write: the sandbox stops it reaching Python.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ChatTemplateError(f"chat template refused the messages: {message}")

        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template does not parse: {exc}") from exc
        self._jinja_error = jinja2.TemplateError
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except self._jinja_error as exc:
            raise ChatTemplateError(f"the model's chat template failed: {exc}") from exc


def chat_template(file: GGUFModelFile, tokenizer: GGUFTokenizer) -> ChatTemplate:
    """The model's own template (`tokenizer.chat_template`), with its BOS and EOS texts."""
    source = file.metadata.get("tokenizer.chat_template")
    if not isinstance(source, str):
        raise ChatTemplateError("the model has no chat template; pass --raw to feed the prompt as is")

    def text(token_id: int | None) -> str:
        return "" if token_id is None else tokenizer.tokens[token_id]

    return ChatTemplate(source, bos_token=text(tokenizer.bos_id), eos_token=text(tokenizer.eos_id))


def chat_text(file: GGUFModelFile, tokenizer: GGUFTokenizer, messages: Sequence[Mapping[str, Any]],
              *, add_generation_prompt: bool = True) -> str:
    """`messages` rendered by the model's template, ready for the answer."""
    return chat_template(file, tokenizer).render(messages, add_generation_prompt=add_generation_prompt)


def encode_chat(file: GGUFModelFile, tokenizer: GGUFTokenizer, messages: Sequence[Mapping[str, Any]],
                *, add_generation_prompt: bool = True) -> list[int]:
    """Token ids of `messages` in the model's chat template: what every client feeds the model."""
    return tokenizer.encode(chat_text(file, tokenizer, messages,
                                      add_generation_prompt=add_generation_prompt))


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
