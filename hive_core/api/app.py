"""The HTTP routes: OpenAI's chat and text completions and model list, the web page and its
live WebSocket, on Starlette. Every refusal is an OpenAI error body with its status code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from hive_core.api.admission import Admission
from hive_core.api.answer import Job, Outcome, answer_body, chunk, last_chunks, run_answer
from hive_core.api.engine import Engine
from hive_core.api.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    TooLarge,
    error_body,
)
from hive_core.api.live import LiveHub
from hive_core.api.schema import (
    ChatRequest,
    CompletionRequest,
    Sampling,
    chat_request,
    completion_request,
    parse_json,
)
from hive_core.model.chat import encode_chat
from hive_core.model.errors import ModelError

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
DISCARD_FACTOR = 16  # a refused body is read (and dropped) up to this many times the limit


@dataclass(frozen=True)
class ApiConfig:
    """Limits of one API server."""

    slots: int = 4  # answers generated at once
    queue: int = 16  # requests waiting for a slot; beyond this, 429
    wait_s: float = 120.0  # longest wait for a slot; then 503
    max_body_bytes: int = 512 * 1024  # request bodies over this are refused (413)
    default_max_tokens: int = 512  # answer length when a chat request names none


class Api:
    """What the routes share: the engine, the tokenizer, the line and the live view."""

    def __init__(self, engine: Engine, tokenizer: Any, hub: LiveHub,
                 config: ApiConfig | None = None) -> None:
        self.engine, self.tokenizer, self.hub = engine, tokenizer, hub
        self.config = config or ApiConfig()
        self.admission = Admission(self.config.slots, self.config.queue, self.config.wait_s)
        stem = engine.file.path.name.removesuffix(".gguf")
        self.model_id = stem
        self.model_names = {stem, engine.file.path.name}

    # -- requests ---------------------------------------------------------------------------

    async def body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _discard(request, DISCARD_FACTOR * limit)
            raise TooLarge(f"the request body is {declared} bytes; this server takes at most "
                           f"{limit}", code="request_too_large")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                await _discard(request, DISCARD_FACTOR * limit - size)
                raise TooLarge(f"the request body is over {limit} bytes", code="request_too_large")
            parts.append(part)
        return b"".join(parts)

    def check_model(self, sampling: Sampling) -> None:
        if sampling.model not in self.model_names:
            raise ModelNotFound(f"the model '{sampling.model[:200]}' is not served here; "
                                f"this server answers with '{self.model_id}'",
                                param="model", code="model_not_found")

    async def job(self, req: ChatRequest | CompletionRequest) -> Job:
        """Tokenise (off the event loop: a long prompt takes a while) and size the answer."""
        self.check_model(req.sampling)
        try:
            if isinstance(req, ChatRequest):
                ids = await asyncio.to_thread(encode_chat, self.engine.file, self.tokenizer,
                                              list(req.messages))
                kind, param = "chat", "messages"
            else:
                ids = await asyncio.to_thread(self.tokenizer.encode, req.prompt)
                kind, param = "text", "prompt"
        except ModelError as exc:
            raise BadRequest(str(exc), param="messages") from None
        if not ids:
            raise BadRequest("the prompt is empty", param=param)
        context = self.engine.file.config.context_length
        s = req.sampling
        room = context - len(ids)
        if room < 1 or (s.max_tokens is not None and s.max_tokens > room):
            asked = s.max_tokens or 1
            raise BadRequest(f"this model's context is {context} tokens; the prompt is "
                             f"{len(ids)} tokens and {asked} more were asked for",
                             param="max_tokens" if room >= 1 else param,
                             code="context_length_exceeded")
        max_tokens = s.max_tokens or min(room, self.config.default_max_tokens)
        return Job(kind, self.model_id, list(ids), max_tokens, s)

    def done(self, outcome: Outcome) -> None:
        self.hub.answered(outcome.completion_tokens, outcome.tokens_per_s, outcome.ttft_s,
                          outcome.extension)

    async def respond(self, job: Job) -> Response:
        if not job.sampling.stream:
            async with self.admission.seat():
                outcome = await run_answer(self.engine, self.tokenizer, job, lambda _p: None)
            self.done(outcome)
            return JSONResponse(answer_body(job, outcome))
        await self.admission.acquire()  # refused with a status code before any byte is sent
        queue: asyncio.Queue[str | Outcome | ApiError] = asyncio.Queue()
        task = asyncio.ensure_future(self._stream_job(job, queue))
        return StreamingResponse(self._events(job, queue, task), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream_job(self, job: Job, queue: asyncio.Queue[str | Outcome | ApiError]) -> None:
        try:
            outcome = await run_answer(self.engine, self.tokenizer, job, queue.put_nowait)
            self.done(outcome)
            queue.put_nowait(outcome)
        except ApiError as exc:
            queue.put_nowait(exc)
        except Exception as exc:  # a bug must end the stream with an error, never hang it
            logger.exception("answer failed")
            queue.put_nowait(ApiError(f"internal error: {type(exc).__name__}"))
        finally:
            self.admission.release()

    async def _events(self, job: Job, queue: asyncio.Queue[str | Outcome | ApiError],
                      task: asyncio.Future[None]) -> AsyncIterator[str]:
        try:
            yield _sse(chunk(job, "", first=True))
            while True:
                item = await queue.get()
                if isinstance(item, str):
                    yield _sse(chunk(job, item))
                elif isinstance(item, Outcome):
                    for doc in last_chunks(job, item):
                        yield _sse(doc)
                    yield "data: [DONE]\n\n"
                    return
                else:
                    yield _sse(error_body(item))
                    return
        finally:
            if not task.done():  # the client hung up: stop generating, free the sessions
                task.cancel()


async def _discard(request: Request, budget: int) -> None:
    """Read and drop a refused body (up to `budget` bytes), so the client, still sending,
    reads our answer instead of a reset connection."""
    async for part in request.stream():
        budget -= len(part)
        if budget < 0:
            return


def _sse(doc: dict[str, Any]) -> str:
    return f"data: {json.dumps(doc, separators=(',', ':'))}\n\n"


def _error(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": "2"} if exc.status in (429, 503) else None
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)


def build_app(api: Api) -> Starlette:
    """The ASGI application serving `api`."""

    async def chat(request: Request) -> Response:
        return await api.respond(await api.job(chat_request(parse_json(await api.body(request)))))

    async def completions(request: Request) -> Response:
        doc = parse_json(await api.body(request))
        return await api.respond(await api.job(completion_request(doc)))

    async def models(_request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": api.model_id, "object": "model", "created": 0, "owned_by": "cadencia",
             "cadencia": {"mode": api.engine.mode,
                          "context_length": api.engine.file.config.context_length,
                          "layers": api.engine.file.config.n_layers}}]})

    async def health(_request: Request) -> Response:
        a = api.admission
        return JSONResponse({"ok": True, "mode": api.engine.mode, "model": api.model_id,
                             "active": a.active, "waiting": a.waiting,
                             "admitted": a.stats.admitted, "refused": a.stats.refused,
                             "timed_out": a.stats.timed_out})

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def live(ws: WebSocket) -> None:
        await ws.accept()
        queue = api.hub.subscribe()

        async def send() -> None:
            while True:
                await ws.send_text(json.dumps(await queue.get(), separators=(",", ":")))

        async def receive() -> None:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass

        tasks = [asyncio.ensure_future(send()), asyncio.ensure_future(receive())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except WebSocketDisconnect:
            pass
        finally:
            api.hub.unsubscribe(queue)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return _error(MethodNotAllowed(f"this route does not take {_request.method}"))
        if exc.status_code == 404:
            return _error(NotFound(f"no route {_request.url.path[:200]}"))
        return _error(BadRequest(str(exc.detail)))

    async def internal(_request: Request, exc: Exception) -> Response:
        logger.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return _error(ApiError(f"internal error: {type(exc).__name__}"))

    routes = [
        Route("/", page),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        WebSocketRoute("/live", live),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(routes=routes, exception_handlers={ApiError: api_error,
                                                        HTTPException: http_error,
                                                        Exception: internal})
