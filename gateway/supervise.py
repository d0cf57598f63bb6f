"""Supervision of the hub's long-lived tasks (issue 19.3: no part of carehub may die quietly).

A long-lived task (the down-message loop, the alarm-ack waiter, the ticker, the uplink's runner) that raises an
unexpected exception must not leave a live process doing nothing. :class:`Supervisor` runs each such task:

- an unexpected exception (or the task returning, which a long-lived task never should) is logged with its
  traceback and the task's name, counted in :attr:`Supervisor.failures`, and the task is started again after a
  capped exponential backoff (:func:`restart_delay`);
- more than ``max_restarts`` failures of one task within ``window`` seconds means restarting does not help: the
  supervisor raises :class:`SupervisorGaveUpError` into its task group, the gateway shuts down and the process exits
  non-zero, so systemd restarts it with a clean slate;
- cancellation is never caught: leaving the ``async with`` block cancels every task it started (the supervisor keeps
  its own task set; it does not reach into ``asyncio.TaskGroup`` internals).

Catching ``Exception`` here is the point of the module, not a swallowed defect: every failure is logged with its
traceback, counted and acted on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from gateway.errors import GatewayError

__all__ = ["SupervisionPolicy", "Supervisor", "SupervisorGaveUpError", "restart_delay"]

_log = logging.getLogger(__name__)


class SupervisorGaveUpError(GatewayError):
    """A supervised task kept failing; the process should exit (non-zero) and be restarted by systemd.

    Attributes:
        task: the task's name.
        failures: its failures within the policy's window.
    """

    def __init__(self, task: str, failures: int) -> None:
        self.task = task
        self.failures = failures
        super().__init__(f"task {task} failed {failures} times in a row; giving up")


@dataclass(frozen=True, slots=True)
class SupervisionPolicy:
    """How failing tasks are restarted.

    Attributes:
        max_restarts: failures of one task tolerated within ``window`` seconds; one more gives up.
        window: seconds over which failures are counted.
        base_delay: seconds before the first restart; doubled for each further recent failure.
        max_delay: the longest wait before a restart.
    """

    max_restarts: int = 5
    window: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"inconsistent supervision policy {self!r}")


def restart_delay(recent_failures: int, policy: SupervisionPolicy) -> float:
    """Seconds to wait before restarting a task that failed ``recent_failures`` (>= 1) times recently."""
    exponent = max(0, min(recent_failures - 1, 30))
    return float(min(policy.max_delay, policy.base_delay * 2**exponent))


class Supervisor:
    """Runs named long-lived tasks, restarting them on failure. An async context manager owning a task group.

    Args:
        policy: restart limits and backoff.
        sleep: awaited for the backoff (tests pass one that returns at once).
        monotonic: clock for the failure window.
    """

    def __init__(
        self,
        policy: SupervisionPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy or SupervisionPolicy()
        self._sleep = sleep
        self._monotonic = monotonic
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stack = contextlib.AsyncExitStack()
        self._restarted = asyncio.Condition()
        self.failures: collections.Counter[str] = collections.Counter()
        """Unexpected exceptions (or returns) per task name, since start."""
        self.restarts: collections.Counter[str] = collections.Counter()
        """Restarts per task name, since start."""

    async def __aenter__(self) -> Self:
        self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        self.cancel_all()
        try:
            return await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._group = None

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``factory()`` as the supervised task ``name`` (a new awaitable on each restart)."""
        if self._group is None:
            raise RuntimeError("the supervisor is not running")
        task = self._group.create_task(self._supervise(name, factory), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_all(self) -> None:
        """Cancel every task this supervisor started (shutdown)."""
        for task in list(self._tasks):
            task.cancel()

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        recent: collections.deque[float] = collections.deque()
        while True:
            try:
                await factory()
            except Exception:  # noqa: BLE001  logged with its traceback, counted, restarted or escalated below
                _log.exception("supervised task %s failed", name)
            else:
                _log.error("supervised task %s returned; a long-lived task must not end", name)
            self.failures[name] += 1
            now = self._monotonic()
            recent.append(now)
            while recent and now - recent[0] > self._policy.window:
                recent.popleft()
            if len(recent) > self._policy.max_restarts:
                _log.critical(
                    "task %s failed %d times within %.0f s: giving up", name, len(recent), self._policy.window
                )
                raise SupervisorGaveUpError(name, len(recent))
            delay = restart_delay(len(recent), self._policy)
            _log.warning("restarting supervised task %s in %.1f s (failure %d)", name, delay, len(recent))
            await self._sleep(delay)
            self.restarts[name] += 1
            async with self._restarted:
                self._restarted.notify_all()

    async def wait_restarts(self, name: str, count: int) -> None:
        """Return once the task ``name`` has been restarted ``count`` times (for tests and health checks)."""
        async with self._restarted:
            await self._restarted.wait_for(lambda: self.restarts[name] >= count)
