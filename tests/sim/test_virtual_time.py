"""sim.virtual_time: simulated time moves only when the loop, its executor jobs, its holds (threads that report their
work) and its child processes are idle."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.outbox import Lane, OutboxItem, open_outbox
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


def _spin(seconds: float) -> None:
    """CPU work for about ``seconds`` of real time (the thread is runnable throughout, competing for the GIL)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


def test_a_held_thread_finishes_before_a_due_timer() -> None:
    """A thread of its own (no executor) that blocks on I/O, then computes, holding the loop with hold_while: the
    due timer waits until the thread reports idle. Without the hold the loop judges the thread from /proc, where a
    thread blocked on a disk or waiting for the interpreter lock sleeps ('S'), and fires the timer first."""

    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        order: list[tuple[str, float]] = []
        done = threading.Event()

        def work() -> None:
            time.sleep(0.2)  # stands for a blocked fsync: the thread sleeps, yet its work is not done
            _spin(0.2)
            order.append(("thread", loop.time()))
            done.set()

        release = loop.hold_while(lambda: not done.is_set())
        loop.call_later(0.001, lambda: order.append(("timer", loop.time())))
        thread = threading.Thread(target=work)
        thread.start()
        await asyncio.sleep(1)
        release()
        thread.join()
        return order

    assert play(main()) == [("thread", 0.0), ("timer", 0.001)]


def test_a_released_hold_lets_time_move() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        loop.hold_while(lambda: True)()  # held and released at once
        await asyncio.sleep(3_600.0)
        return loop.time()

    assert play(main()) == 3_600.0


def test_an_outbox_commit_takes_no_simulated_time(tmp_path: Path) -> None:
    """The hub's outbox holds the loop while its database thread has a job: a slow commit (the hook blocks the
    thread, as a slow SD card does) is stored before a timer due a millisecond later."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        def slow_disk(_writes: int) -> None:
            time.sleep(0.3)  # the database thread blocked in fsync: state 'S' in /proc

        async with open_outbox(tmp_path / "outbox.sqlite", max_bytes=1 << 20, commit_hook=slow_disk) as outbox:
            loop.call_later(0.001, lambda: order.append("timer"))
            await outbox.put(OutboxItem(1, b"sealed", Lane.PRIORITY, "alarm", ("r-1",), 0.0))
            order.append("stored")
            assert outbox.jobs_in_flight == 0
            await asyncio.sleep(1)
        return order

    assert play(main()) == ["stored", "timer"]


def test_a_child_exit_is_seen_before_a_timer() -> None:
    """asyncio learns of a child's exit through a watcher thread; time stands still until it has."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        loop.call_later(0.001, lambda: order.append("timer"))
        await proc.wait()
        order.append("exited")
        await asyncio.sleep(1)
        return order

    assert play(main()) == ["exited", "timer"]


def test_pace_holds_simulated_time_back() -> None:
    async def main() -> None:
        await asyncio.sleep(100.0)

    started = time.monotonic()
    play(main(), pace=1000.0)  # 100 simulated seconds at 1000x: at least 0.1 real seconds
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize("kwargs", [{"grace": -1.0}, {"pace": 0.0}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"grace|pace"):
        VirtualTimeLoop(**kwargs)
