"""The model's chat template (`tokenizer.chat_template`) rendered with a sandboxed jinja2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from hive_core.model.errors import ModelError


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
