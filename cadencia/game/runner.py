"""What the `play`, `spectate`, `edit` and `demo` commands share: flags, window set-up, the loop.

Each command builds a source (and maybe an editor and background work), then
`run_view` opens the app, steps it from asyncio alongside the work, and saves the
screenshot. Heavy imports (panda3d, torch) happen here, not at CLI start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from hive_core.mesh.runner import number
from world.view.config import ViewConfig, has_display
from world.view.frame import ViewError

MAX_FRAMES = 10_000_000  # --frames beyond this is a mistake (days of rendering)


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offscreen", action="store_true",
                        help="render without a display (EGL offscreen buffer); implied when there is none")
    parser.add_argument("--frames", type=int, default=None, metavar="N",
                        help="stop after N frames (default: run until the window closes)")
    parser.add_argument("--screenshot", default=None, metavar="PATH", help="save the last frame as PNG")
    parser.add_argument("--size", default="1280x720", metavar="WxH", help="window size (default 1280x720)")
    parser.add_argument("--fps", type=number(float, 1, 1000), default=30.0,
                        help="frame rate cap (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")


def view_config(args: argparse.Namespace) -> ViewConfig:
    try:
        w, h = (int(v) for v in str(args.size).lower().split("x"))
    except ValueError:
        raise ViewError(f"--size must look like 1280x720, got {str(args.size)[:40]!r}") from None
    if not (16 <= w <= 16384 and 16 <= h <= 16384):
        raise ViewError(f"--size must be 16..16384 pixels each way, got {w}x{h}")
    if args.frames is not None and not 1 <= args.frames <= MAX_FRAMES:
        raise ViewError(f"--frames must be at least 1 and at most {MAX_FRAMES}, got {args.frames}")
    if args.fps <= 0:
        raise ViewError(f"--fps must be positive, got {args.fps}")
    offscreen = bool(args.offscreen) or not has_display()
    if offscreen and args.frames is None:
        raise ViewError("offscreen (no display) needs --frames N to know when to stop")
    return ViewConfig(width=w, height=h, offscreen=offscreen)


def early_fork_server(model: str | None):  # -> hive_core.exec.worker_fork.ForkServer | None
    """Start the embedded hive's fork server now (`hive_core.exec.worker_fork`): it imports
    torch and maps the model while this process imports the game and opens its window, so
    the stage workers fork from it at once. None where there is none to start (no fork
    server on this system, or a model path that does not
    resolve: the hive's start says why). Light: this process has not imported torch yet."""
    from hive_core.exec.worker_fork import ForkServer
    from hive_core.model.errors import ModelError
    from hive_core.model.locate import resolve_model_path

    if not ForkServer.available():
        return None
    try:
        return ForkServer(str(resolve_model_path(model)))
    except (ModelError, OSError):
        return None


def check_hive_url(url: str) -> str:
    """Only ws:// on loopback: the game joins hives on this machine or namespaces it made."""
    parsed = urlparse(url)
    if parsed.scheme not in ("ws", "wss") or not parsed.hostname or parsed.port is None:
        raise ViewError(f"--hive must be ws://HOST:PORT, got {url!r}")
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ViewError(f"--hive {url}: only loopback hives (127.0.0.1) are allowed")
    return url


@dataclass
class RunReport:
    """What a view run did, for `--json` and the exit line."""

    mode: str
    frames: int = 0
    screenshot: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def run_view(app, args: argparse.Namespace, *,  # app: world.view.app.WorldApp
                   work: Callable[[], Coroutine[object, object, None]] | None = None,
                   until_work_done: bool = False, linger_frames: int = 30,
                   ready: asyncio.Event | None = None) -> RunReport:
    """Step `app` while `work` runs; stop at --frames, on close, or (if asked) when work ends.

    With `ready`, frames before it is set (the hive loading) do not count towards --frames,
    so `--frames N --screenshot` catches the world N frames into its live part.
    """
    report = RunReport(app.modes.name)
    task: asyncio.Task[None] | None = asyncio.create_task(work()) if work is not None else None
    try:
        while not app.closed:
            if args.frames is not None and report.frames >= args.frames:
                break
            if until_work_done and task is not None and task.done():
                await app.run(frames=linger_frames, fps=args.fps)
                report.frames += linger_frames
                break
            await app.run(frames=1, fps=args.fps)
            if ready is None or ready.is_set():
                report.frames += 1
            elif task is not None and task.done():
                break  # the work failed before the world went live
            if report.frames and report.frames % 120 == 0 and app.cfg.offscreen:
                say(f"rendered {report.frames} frames")
        if task is not None and task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    finally:
        if task is not None and not task.done():
            # Stopping mid-ask (at --frames): requests the hive still had in flight fail as
            # their links close; that is the expected end of this run, not an error to show.
            asyncio.get_running_loop().set_exception_handler(_quiet_at_shutdown)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # work stopped with the view (e.g. at --frames)
    if args.screenshot:
        report.screenshot = str(app.screenshot(Path(args.screenshot)))
    return report


def _quiet_at_shutdown(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    logging.getLogger(__name__).debug("after stop: %s", context.get("message"))
