"""The virtual-time loop: timers fire in order at their simulated times without sleeping."""

from __future__ import annotations

import asyncio
import time

import pytest

from hive_core.sim.clock import SimulationDeadlock, run_virtual


def test_simulated_hours_take_no_wall_time() -> None:
    order: list[float] = []

    async def main() -> float:
        loop = asyncio.get_running_loop()

        async def at(delay: float) -> None:
            await asyncio.sleep(delay)
            order.append(loop.time())

        await asyncio.gather(*(at(d) for d in (3600.0, 0.5, 7200.0, 0.001)))
        return loop.time()

    t0 = time.perf_counter()
    end = run_virtual(main())
    assert time.perf_counter() - t0 < 5.0  # generous: 2 simulated hours, no sleeping
    assert order == [0.001, 0.5, 3600.0, 7200.0]
    assert end == pytest.approx(7200.0)


def test_timeouts_fire_in_simulated_time() -> None:
    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(asyncio.sleep(10.0), 2.0)
        except TimeoutError:
            return True, loop.time()
        return False, loop.time()

    timed_out, at = run_virtual(main())
    assert timed_out and at == pytest.approx(2.0)


def test_waiting_for_nothing_is_a_deadlock_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimulationDeadlock, match="stalled"):
        run_virtual(main())


def test_errors_propagate() -> None:
    async def main() -> None:
        await asyncio.sleep(1.0)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_virtual(main())
