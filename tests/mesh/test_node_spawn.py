"""Background tasks of a node: a failure while the node stops is retrieved, not reported unseen.

Found by the soak (`python -m bench soak`): askers closing their mesh nodes while join links
were still failing printed dozens of "Task exception was never retrieved" tracebacks, since
the done callback skipped `exception()` once the node was stopping.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from hive_core.base.identity import Identity
from hive_core.mesh.node import Node


async def test_a_task_failing_while_the_node_stops_is_not_reported_as_never_retrieved() -> None:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    try:
        node = Node(Identity.generate())
        gate = asyncio.Event()

        async def link_attempt() -> None:
            await gate.wait()
            raise ConnectionError("no route to the peer: its link was dropped by the stop")

        node.spawn(link_attempt(), name="join link", expected=(ConnectionError,))
        node._stopping = True  # as while `close` says bye on its links, before it cancels tasks
        gate.set()
        for _ in range(3):
            await asyncio.sleep(0)
        assert not node._tasks  # it finished and left the node's set
        gc.collect()
        assert not [c for c in seen if "never retrieved" in str(c.get("message"))]
        await node.close()
    finally:
        loop.set_exception_handler(None)


async def test_a_task_failing_while_the_node_runs_is_still_logged(caplog: Any) -> None:
    node = Node(Identity.generate())

    async def broken() -> None:
        raise RuntimeError("a handler bug")

    task = node.spawn(broken(), name="handler")
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert "background task handler failed" in caplog.text
    await node.close()
