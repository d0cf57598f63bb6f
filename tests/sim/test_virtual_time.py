"""sim.virtual_time: simulated time moves only when the loop, its threads and its child processes are idle."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from sim.virtual_time import VirtualTimeLoop

_T = TypeVar("_T")


def play(main: Coroutine[Any, Any, _T], **kwargs: Any) -> _T:
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(**kwargs)) as runner:
        return runner.run(main)


def test_a_day_of_timers_passes_at_once_and_exactly() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        for delay in (86_400.0, 3_600.0, 5.0):
            loop.call_later(delay, lambda: fired.append(loop.time()))
        await asyncio.sleep(86_400.0)
        await asyncio.sleep(0)
        return fired

    started = time.monotonic()
    assert play(main()) == [5.0, 3_600.0, 86_400.0]
    assert time.monotonic() - started < 30  # a day of timers did not wait a day (generous: a loaded CI machine)


def test_a_thread_job_finishes_before_a_timer_however_long_it_takes() -> None:
    async def main() -> list[str]:
        order: list[str] = []

        def slow() -> None:
            time.sleep(0.2)  # real time: a commit's fsync
            order.append("thread")

        timer = asyncio.get_running_loop().call_later(0.001, lambda: order.append("timer"))
        await asyncio.to_thread(slow)
        await asyncio.sleep(1)
        assert timer.cancelled() or "timer" in order
        return order

    assert play(main()) == ["thread", "timer"]


def test_a_busy_child_process_is_waited_for() -> None:
    """A child that computes for a while before answering (a broker under load) answers before the next timer."""

    async def main() -> list[str]:
        order: list[str] = []
        loop = asyncio.get_running_loop()
        code = "import time\nend = time.monotonic() + 0.3\nwhile time.monotonic() < end: pass\nprint('answer')"
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        loop.call_later(0.5, lambda: order.append("timer"))
        line = await proc.stdout.readline()
        order.append(line.decode().strip())
        await proc.wait()
        await asyncio.sleep(1)
        return order

    assert play(main()) == ["answer", "timer"]


def test_pace_holds_simulated_time_back() -> None:
    async def main() -> None:
        await asyncio.sleep(100.0)

    started = time.monotonic()
    play(main(), pace=1000.0)  # 100 simulated seconds at 1000x: at least 0.1 real seconds
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("kwargs", [{"grace": -1.0}, {"pace": 0.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"grace|pace"):
        VirtualTimeLoop(**kwargs)  # type: ignore[arg-type]
