"""The API's errors: each is one HTTP status and one OpenAI-shaped error body.

Every refusal the server makes (bad JSON, an unknown model, a prompt over the context, a full
queue, a hive with no node for a stage) is an `ApiError`; `error_body` turns it into the JSON
OpenAI's clients parse (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

from typing import Any


class ApiError(ValueError):
    """A request the server refuses or cannot answer; `status` is its HTTP status."""

    status = 500
    kind = "server_error"  # OpenAI's error `type`

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


class BadRequest(ApiError):
    """Malformed JSON, a missing or mistyped field, a value out of range."""

    status = 400
    kind = "invalid_request_error"


class ModelNotFound(ApiError):
    """The request names a model this server does not serve."""

    status = 404
    kind = "invalid_request_error"


class NotFound(ApiError):
    """No such route."""

    status = 404
    kind = "invalid_request_error"


class MethodNotAllowed(ApiError):
    """A route asked with the wrong HTTP method."""

    status = 405
    kind = "invalid_request_error"


class TooLarge(ApiError):
    """The request body is over the server's limit."""

    status = 413
    kind = "invalid_request_error"


class Busy(ApiError):
    """Every generation slot is taken and the waiting line is full: try again shortly."""

    status = 429
    kind = "rate_limit_error"


class Unavailable(ApiError):
    """The hive cannot answer now: no server for a stage, every replica failed, or the wait
    for a free slot ran out."""

    status = 503
    kind = "server_error"


def error_body(exc: ApiError) -> dict[str, Any]:
    """OpenAI's error object for `exc`."""
    return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param,
                      "code": exc.code}}
