"""Injected time for the simulated home: a real clock, a compressed one and a manually advanced one.

Every simulated device and the scenario runner read time only through a :class:`Clock`, so a simulated day can run
in seconds (:class:`CompressedClock`; :class:`LoopClock` on simulated loop time) or step by step under a test's
control (:class:`ManualClock`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol

from gateway.clock import Clock as HubClock


class Clock(HubClock, Protocol):
    """The hub's clock (`gateway.clock.Clock`: wall and monotonic time) and a sleep that follows it; a simulated
    home and the hub it drives share one."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on this clock (at once when ``seconds <= 0``)."""
        ...


async def sleep_until(clock: Clock, when: datetime) -> None:
    """Sleep on ``clock`` until its wall time reaches ``when`` (at once when it already has)."""
    await clock.sleep((when - clock.now()).total_seconds())


class RealClock:
    """The system clocks; ``sleep`` is :func:`asyncio.sleep`."""

    def __init__(self, tz: tzinfo | None = None) -> None:
        self._tz = tz or UTC

    def now(self) -> datetime:
        """The system wall time in this clock's zone."""
        return datetime.now(self._tz)

    def wall(self) -> float:
        """The wall time as seconds since the Unix epoch."""
        return self.now().timestamp()

    def monotonic(self) -> float:
        """Seconds from :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep in real time."""
        await asyncio.sleep(max(0.0, seconds))


class CompressedClock:
    """Simulated time running ``speed`` times faster than real time from ``start``.

    Starts counting at construction; at ``speed=3600`` a simulated hour passes in one real second.
    """

    def __init__(self, start: datetime, speed: float) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self._start = start
        self._speed = speed
        self._t0 = time.monotonic()

    @property
    def speed(self) -> float:
        """How many simulated seconds pass per real second."""
        return self._speed

    def monotonic(self) -> float:
        """Simulated seconds since construction."""
        return (time.monotonic() - self._t0) * self._speed

    def now(self) -> datetime:
        """``start`` plus the simulated seconds elapsed."""
        return self._start + timedelta(seconds=self.monotonic())

    def wall(self) -> float:
        """The wall time as seconds since the Unix epoch."""
        return self.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time, i.e. ``seconds / speed`` of real time."""
        await asyncio.sleep(max(0.0, seconds) / self._speed)


class LoopClock:
    """Time as the running event loop counts it, from ``start``: on a :class:`sim.virtual_time.VirtualTimeLoop` that
    is simulated time, so the home, the hub and every ``asyncio`` timer share one timeline; ``sleep`` is
    :func:`asyncio.sleep`.

    Reads the loop it was made on (construct it inside that loop)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._start = start
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()

    def monotonic(self) -> float:
        """Seconds on the loop's clock since construction."""
        return self._loop.time() - self._t0

    def now(self) -> datetime:
        """``start`` plus the loop's seconds elapsed."""
        return self._start + timedelta(seconds=self.monotonic())

    def wall(self) -> float:
        """The wall time as seconds since the Unix epoch."""
        return self.now().timestamp()

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` on the loop's clock."""
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when :meth:`advance` is awaited; sleepers wake in deadline order.

    While advancing, time stops at each sleeper's deadline until that sleeper has resumed, so a task woken at
    07:30 reads 07:30 even when the test advances a whole day at once.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._start = start
        self._elapsed = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None], asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        """``start`` plus the time advanced so far."""
        return self._start + timedelta(seconds=self._elapsed)

    def wall(self) -> float:
        """The wall time as seconds since the Unix epoch."""
        return self.now().timestamp()

    def monotonic(self) -> float:
        """Seconds advanced since construction."""
        return self._elapsed

    @property
    def next_deadline(self) -> float | None:
        """The monotonic time of the earliest pending sleeper, if any."""
        return self._sleepers[0][0] if self._sleepers else None

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced by ``seconds``."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        resumed: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._elapsed + seconds, next(self._order), wake, resumed))
        try:
            await wake
        finally:
            if not resumed.done():
                resumed.set_result(None)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline falls inside, in order."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        target = self._elapsed + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, wake, resumed = heapq.heappop(self._sleepers)
            self._elapsed = max(self._elapsed, deadline)
            if wake.cancelled():
                continue
            wake.set_result(None)
            await resumed
        self._elapsed = target

    async def advance_to(self, when: datetime) -> None:
        """Advance until the wall time is ``when`` (no-op when it already is later)."""
        await self.advance(max(0.0, (when - self.now()).total_seconds()))
