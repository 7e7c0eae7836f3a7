"""The chat template sandbox: what a template may use (transformers' variables, `tojson`, loop
controls), what it may not (mutating our objects), and one clear error when it fails."""

from __future__ import annotations

import json

import pytest

from hive_core.model.chat import ChatTemplate, ChatTemplateError
from hive_core.model.errors import ModelError

USER = [{"role": "user", "content": "héllo"}]


def test_variables_transformers_passes() -> None:
    t = ChatTemplate("{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ documents is none }}|"
                     "{{ add_generation_prompt }}|{{ messages[0].content }}",
                     bos_token="<s>", eos_token="</s>")
    assert t.render(USER) == "<s>|</s>|True|True|True|héllo"
    assert t.render(USER, add_generation_prompt=False).endswith("|False|héllo")


def test_tojson_is_plain_json_and_loop_controls_work() -> None:
    t = ChatTemplate("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
                     "{{ m | tojson }}{% endfor %}")
    out = t.render([*USER, {"role": "assistant", "content": "x"}])
    assert json.loads(out) == USER[0] and "héllo" in out  # not \u-escaped, not HTML-escaped


def test_a_template_that_refuses_says_why() -> None:
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ChatTemplateError, match="^chat template refused the messages: roles must alternate$"):
        t.render(USER)


@pytest.mark.parametrize("source, why", [
    ("{{ 1 + messages }}", "TypeError"),
    ("{{ messages.append(1) }}", "SecurityError"),  # the sandbox keeps our objects immutable
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
])
def test_a_template_that_fails_to_render_is_one_model_error(source: str, why: str) -> None:
    """A hostile or broken template from a downloaded file: one error, never Python reached."""
    with pytest.raises(ChatTemplateError, match=f"^the model's chat template failed: {why}: ") as err:
        ChatTemplate(source).render(USER)
    assert isinstance(err.value, ModelError) and "\n" not in str(err.value)


def test_a_template_that_does_not_parse() -> None:
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for m in messages %}")


def test_messages_must_be_plain_data() -> None:
    with pytest.raises(ChatTemplateError, match="holds a object"):
        ChatTemplate("{{ messages }}").render([{"role": "user", "content": object()}])
