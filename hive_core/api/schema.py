"""OpenAI request bodies, checked: JSON bytes in, a `ChatRequest` or `CompletionRequest` out.

Only what the server honours is read (`messages` or `prompt`, `max_tokens`, `temperature`,
`top_p`, `seed`, `stop`, `stream`, `stream_options.include_usage`); fields OpenAI defines
that would change the answer and are not supported here (`n` above 1, tools, logprobs) are
refused rather than silently ignored. Every refusal is a `BadRequest` naming the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from hive_core.api.errors import BadRequest

MAX_STOP = 4  # stop sequences per request, as OpenAI allows
MAX_STOP_CHARS = 256
MAX_MESSAGES = 1024
ROLES = ("system", "user", "assistant", "developer", "tool")
# Fields that would change the answer in a way this server cannot honour.
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "logit_bias", "suffix", "best_of")


@dataclass(frozen=True)
class Sampling:
    """What every generation request shares."""

    model: str
    max_tokens: int | None  # None: up to the context (capped by the server's default)
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream a last chunk with token counts


@dataclass(frozen=True)
class ChatRequest:
    """POST /v1/chat/completions."""

    messages: tuple[dict[str, str], ...]
    sampling: Sampling


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions: a plain prompt, no chat template."""

    prompt: str
    sampling: Sampling


def _unicode(text: str, param: str) -> str:
    """`text` if it is valid Unicode: JSON's escapes can spell a lone surrogate, which no
    tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"'{param}' holds an unpaired surrogate (\\u{ord(text[exc.start]):04x}) "
                         f"at character {exc.start}: not valid Unicode", param=param) from None
    return text


def _no_constant(name: str) -> Any:
    raise BadRequest(f"malformed JSON: {name} is not a JSON number")


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object in `body`; BadRequest when it is not UTF-8, not JSON, or not an object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise BadRequest("the request body is empty: send a JSON object")
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest(f"the request body must be a JSON object, not {type(doc).__name__}")
    return doc


def _number(doc: dict[str, Any], name: str, default: float, lo: float, hi: float,
            *, open_lo: bool = False) -> float:
    value = doc.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"'{name}' must be a number", param=name)
    if value > hi or value < lo or (open_lo and value == lo):
        side = "(" if open_lo else "["
        raise BadRequest(f"'{name}' must be in {side}{lo:g}, {hi:g}], got {value}", param=name)
    return float(value)


def _int(doc: dict[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer", param=name)
    return value


def _sampling(doc: dict[str, Any]) -> Sampling:
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: a model id from GET /v1/models", param="model")
    for name in UNSUPPORTED:
        if doc.get(name) not in (None, False, [], {}):
            raise BadRequest(f"'{name}' is not supported by this server", param=name,
                             code="unsupported_parameter")
    n = _int(doc, "n")
    if n is not None and n != 1:
        raise BadRequest("'n' must be 1: one answer per request", param="n")
    max_tokens = _int(doc, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _int(doc, "max_tokens")
    if max_tokens is not None and max_tokens < 1:
        raise BadRequest(f"'max_tokens' must be at least 1, got {max_tokens}", param="max_tokens")
    seed = _int(doc, "seed")
    if seed is not None and not 0 <= seed < 2**63:
        raise BadRequest("'seed' must be in [0, 2^63)", param="seed")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("'stream' must be true or false", param="stream")
    options = doc.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise BadRequest("'stream_options' must be an object like {\"include_usage\": true}",
                         param="stream_options")
    return Sampling(model=model, max_tokens=max_tokens,
                    temperature=_number(doc, "temperature", 1.0, 0.0, 2.0),
                    top_p=_number(doc, "top_p", 1.0, 0.0, 1.0, open_lo=True), seed=seed,
                    stop=_stop(doc.get("stop")), stream=stream,
                    include_usage=bool(options.get("include_usage", False)))


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)):
        raise BadRequest(f"'stop' must be a string or a list of up to {MAX_STOP} non-empty "
                         f"strings of at most {MAX_STOP_CHARS} characters", param="stop")
    return tuple(_unicode(s, "stop") for s in stops)


def _content(message: dict[str, Any], k: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):
                raise BadRequest(f"messages[{k}].content: only text parts are supported",
                                 param=f"messages[{k}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise BadRequest(f"messages[{k}].content must be a string or a list of text parts",
                     param=f"messages[{k}].content")


def chat_request(doc: dict[str, Any]) -> ChatRequest:
    """A checked chat completion request from its JSON object."""
    sampling = _sampling(doc)
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects",
                         param="messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"'messages' holds more than {MAX_MESSAGES} messages", param="messages")
    out = []
    for k, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{k}] must be an object", param=f"messages[{k}]")
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"messages[{k}].role must be one of {', '.join(ROLES)}",
                             param=f"messages[{k}].role")
        out.append({"role": "system" if role == "developer" else str(role),
                    "content": _unicode(_content(message, k), f"messages[{k}].content")})
    return ChatRequest(tuple(out), sampling)


def completion_request(doc: dict[str, Any]) -> CompletionRequest:
    """A checked (legacy) completion request from its JSON object."""
    sampling = _sampling(doc)
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string (one prompt per request)", param="prompt")
    if sampling.max_tokens is None:  # OpenAI's default for completions
        sampling = Sampling(**{**sampling.__dict__, "max_tokens": 16})
    return CompletionRequest(_unicode(prompt, "prompt"), sampling)
