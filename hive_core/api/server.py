"""Running the API: uvicorn serving the Starlette app on a socket we bind ourselves, inside the
caller's event loop (so `cadencia serve`, `hive up --http` and `node --http` share it with the
mesh), with the live view's tasks, until `close()`.

Binding the socket here makes a taken port an OSError with its reason (uvicorn would log it
and exit the process) and lets port 0 pick a free one; uvicorn's own signal capture is left
off, since the command running it owns SIGINT and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from hive_core.api.answer import drain_closing
from hive_core.api.app import Api, ApiConfig, build_app
from hive_core.api.engine import Engine, HiveEngine
from hive_core.api.feeds import HiveFeeds
from hive_core.api.live import Layout, LiveHub, Status
from hive_core.mesh.wschannel import parse_listen

logger = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the command that runs us handles signals


class ApiServer:
    """The HTTP server of one `Api`; `start()` binds and serves, `close()` stops everything."""

    def __init__(self, api: Api, listen: str, feeds: HiveFeeds | None = None) -> None:
        self.api = api
        self.feeds = feeds
        self.host, self.port = parse_listen(listen)
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen for HTTP on {self.host}:{self.port}: "
                                     f"{exc.strerror}") from None
        sock.listen(128)
        sock.setblocking(False)
        self._socket = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(build_app(self.api), log_config=None, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5)
        self._server = _Uvicorn(config)
        self.api.hub.start()
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError(f"the HTTP server on {self.url} stopped at start")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except TimeoutError:
                self._task.cancel()
        await self.api.hub.close()
        if self.feeds is not None:
            await self.feeds.close()
        await drain_closing()
        await self.api.engine.close()
        if self._socket is not None:
            self._socket.close()


def make_server(engine: Engine, tokenizer: Any, *, listen: str, model: str,
                config: ApiConfig | None = None, status: Status | None = None,
                layout: Layout | None = None, poll_s: float = 5.0) -> ApiServer:
    """An API server over `engine`, its live view fed by the engine's asker events, the
    nodes' live feeds (other askers' work) and `status` (the hive's status view, polled),
    with districts placed by `layout`."""
    hub = LiveHub(engine, model=model, status=status, layout=layout, poll_s=poll_s)
    feeds = None
    if isinstance(engine, HiveEngine):
        hive_feeds = feeds = HiveFeeds(engine, hub.on_event)  # what other askers make it do
        engine.on_event = hub.on_event

        def routed() -> None:
            hub.route_changed()
            hive_feeds.route_changed()

        engine.on_route = routed
    return ApiServer(Api(engine, tokenizer, hub, config), listen, feeds)
