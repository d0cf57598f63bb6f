"""An asyncio event loop whose clock is simulated time, so a whole simulated day plays the same way every run.

`carehub demo` used to compress real time (a thousand simulated seconds per real one). The story then depended on
how fast this machine answered: 50 real milliseconds of scheduling delay are a simulated minute, so reactions moved
between minutes, a timer the hub runs in real time (the ticker, the reconnect backoff) meant something different at
every speed, and the panic timings had to be stretched by the speed factor to stay meaningful. Here the loop's own
clock (:meth:`VirtualTimeLoop.time`, which every ``asyncio.sleep``, ``call_later`` and ``asyncio.timeout`` reads) is
simulated: it stands still while anything is running and jumps to the next timer only when the loop has nothing to
do. Work takes no simulated time, every timer fires at its exact simulated instant, and the order of events is the
order of their deadlines. Given the same scenario and seed, the day is the same.

"Nothing to do" means, each time the loop would block waiting for its next timer:

- no callback is ready (asyncio's own rule: the loop only selects with a timeout when its ready queue is empty);
- no job handed to a thread with :meth:`~VirtualTimeLoop.run_in_executor` (or ``asyncio.to_thread``) is still
  running: its result comes back through the loop's self-pipe;
- no registered hold is on (:meth:`~VirtualTimeLoop.hold_while`): a thread that works for the loop outside an
  executor says so itself. The hub's outbox registers its database thread this way (busy while a job it was handed
  has not been settled on the loop), so a commit never takes simulated time, however long the disk or the scheduler
  takes;
- no child process started through this loop has exited without the loop having been told (the exit is delivered by
  asyncio's child watcher, a thread);
- no child process started through this loop (an MQTT broker: Mosquitto, or amqtt run as a child by
  :mod:`sim.embedded_broker`) is running or in uninterruptible I/O (state ``R`` or ``D`` in
  ``/proc/<pid>/task/<tid>/stat``; a process waiting for a CPU is ``R`` too; one blocked in ``epoll`` is ``S``). The
  states are read before the last zero-timeout poll, so whatever the process wrote before it went to sleep is
  already seen by that poll;
- no socket or pipe is readable after that zero-timeout poll, and none after a second poll ``grace`` real seconds
  later (in-process peers on loopback: their bytes are already queued when the writer's ``send`` returns).

Only then does simulated time move, straight to the earliest deadline. ``pace`` (simulated seconds per real
second) optionally holds a jump back so a person can watch the day unfold; it changes how long the run takes, never
what happens in it.

Why threads are not judged from ``/proc``: a Python thread that is runnable but waiting for the interpreter lock
sleeps on a futex and shows as ``S``, so "no thread is running" cannot be read from the scheduler; a thread whose
work matters to the loop must be accounted for explicitly (an executor job or a hold). Threads that never report
back to the loop (the indication journal's writer: its flush is awaited through ``asyncio.to_thread``) need no hold.
A child process has no such lock: waiting for a CPU it is ``R``.

What the code on the loop must do for the day to repeat: measure every timeout on the loop's clock (the hub's uplink
once took its ack deadlines from ``time.monotonic`` while sleeping on the loop, so a resend came after 20 real
seconds: a load-dependent number of simulated minutes), and take its randomness (reconnect jitter) from the seed.

Limits: threads of C libraries are not looked at; a child's bytes on loopback are taken to be in the receiving
socket when its ``send`` returns (Linux delivers loopback packets in the sender's system call unless it defers them
to ``ksoftirqd`` under heavy network load); real-time reads (``time.monotonic``) still measure real time, so
latencies the hub reports in real seconds stay real.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import selectors
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["VirtualTimeLoop"]

_T = TypeVar("_T")
_BUSY_POLL_S = 0.0005  # real seconds between looks at an exiting or busy child process
_THREAD_POLL_S = 0.005  # real seconds between looks at a hold (a thread's outcome wakes the loop before)
_BUSY_STATES = frozenset({"R", "D"})


def _children() -> list[str]:
    """This process's child processes (each thread's ``children`` list in ``/proc``)."""
    pids: list[str] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                pids.extend(f.read().split())
        except OSError:
            continue
    return pids


def _state(stat_path: str) -> str | None:
    """The scheduler state letter of a task (``/proc/.../stat``'s third field), or None once it is gone."""
    try:
        with open(stat_path, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return text[text.rindex(")") + 2 :][:1]  # the command name in parentheses may hold spaces


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited (a zombie, left for asyncio's watcher to reap, or already reaped)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped


def _process_busy(pid: str) -> bool:
    """Whether a thread of process ``pid`` is running, waiting for a CPU or in uninterruptible I/O."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any(_state(f"/proc/{pid}/task/{tid}/stat") in _BUSY_STATES for tid in tids)


class _VirtualSelector(selectors.BaseSelector):
    """The loop's selector, with timeouts spent in simulated time instead of waited for."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualTimeLoop) -> None:
        self._real = real
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_map(self) -> Any:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._real.select(0)
        ready = self._real.select(0)
        if ready:
            return ready
        loop = self._loop
        while True:
            # A thread's result comes back through the loop's self-pipe (which ends the wait at once), a child's exit
            # and a broker's answer on a pipe or socket: wait for them in real time.
            if loop.threads_busy():
                ready = self._real.select(_THREAD_POLL_S)
            elif loop.processes_busy():
                ready = self._real.select(_BUSY_POLL_S)
            else:
                break
            if ready:
                return ready
        ready = self._real.select(loop.grace)  # the last poll: after busy() found everything idle
        if ready:
            return ready
        if timeout is None:
            return self._real.select(None)  # no timer at all: only I/O can wake the loop
        loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop on simulated time (see the module docstring).

    Args:
        grace: real seconds to poll for I/O once more before simulated time jumps (0: in-process peers only).
        pace: simulated seconds per real second at most (None: as fast as the work allows).
    """

    def __init__(self, *, grace: float = 0.0, pace: float | None = None) -> None:
        super().__init__(selectors.DefaultSelector())
        if grace < 0 or (pace is not None and pace <= 0):
            self.close()
            raise ValueError("grace must not be negative and pace must be positive")
        self._selector: selectors.BaseSelector = _VirtualSelector(self._selector, self)
        self.grace = grace
        self._pace = pace
        self._now = 0.0
        self._real_start = time.monotonic()
        self.threads_in_flight = 0
        self.jumps = 0
        self._holds: dict[int, Callable[[], bool]] = {}
        self._next_hold = 0
        self._processes: list[asyncio.SubprocessTransport] = []

    def hold_while(self, busy: Callable[[], bool]) -> Callable[[], None]:
        """Keep simulated time still whenever ``busy()`` is true; returns the function that removes the hold.

        For a thread that works for this loop outside an executor: ``busy`` (called on the loop's thread, often)
        must be true from the moment work is handed to the thread until its outcome is visible to the loop (a
        callback it scheduled with ``call_soon_threadsafe`` has run, or bytes it wrote are readable). The loop then
        waits for it in real time, polling ``busy`` and its file descriptors.
        """
        key = self._next_hold
        self._next_hold += 1
        self._holds[key] = busy

        def release() -> None:
            self._holds.pop(key, None)

        return release

    def busy(self) -> bool:
        """Whether anything outside the loop's own callbacks still works for it: an executor job, a hold, a child
        whose exit the loop has not been told, or a child process running or in uninterruptible I/O."""
        return self.threads_busy() or self.processes_busy()

    def threads_busy(self) -> bool:
        """Whether an executor job is running or a hold is on."""
        return bool(self.threads_in_flight) or any(busy() for busy in list(self._holds.values()))

    def processes_busy(self) -> bool:
        """Whether a child started through this loop has exited unannounced, or one is busy (:meth:`others_busy`)."""
        if self._processes:
            self._processes = [t for t in self._processes if t.get_returncode() is None]
            if any(_exited(transport.get_pid()) for transport in self._processes):
                return True  # asyncio's watcher thread has not delivered the exit yet
        return self.others_busy()

    def others_busy(self) -> bool:
        """Whether a child process started through this loop (an MQTT broker) is running, waiting for a CPU or in
        uninterruptible I/O (a subclass may look differently, e.g. at every child of the process)."""
        return any(_process_busy(str(transport.get_pid())) for transport in self._processes)

    def time(self) -> float:
        """Simulated seconds since the loop was made; moves only in :meth:`advance`."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move simulated time forward (the selector does, when the loop is idle); held back to ``pace``."""
        if seconds < 0:
            raise ValueError("time cannot go backwards")
        self._now += seconds
        self.jumps += 1
        if self._pace is not None:
            due = self._real_start + self._now / self._pace
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # pacing for a watching person; the loop has nothing else to do

    def run_in_executor(  # type: ignore[override]  # same signature as the base class, typed more narrowly
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        """As the base class; simulated time stands still until the job is done."""
        future = super().run_in_executor(executor, func, *args)
        self.threads_in_flight += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, _future: asyncio.Future[Any]) -> None:
        self.threads_in_flight -= 1

    async def subprocess_exec(  # type: ignore[override]  # same signature as the base class
        self, protocol_factory: Callable[[], asyncio.SubprocessProtocol], *args: Any, **kwargs: Any
    ) -> tuple[asyncio.SubprocessTransport, asyncio.SubprocessProtocol]:
        """As the base class; simulated time stands still from the child's exit until the loop is told of it."""
        transport, protocol = await super().subprocess_exec(protocol_factory, *args, **kwargs)
        self._processes.append(transport)
        return transport, protocol

    async def subprocess_shell(  # type: ignore[override]  # same signature as the base class
        self, protocol_factory: Callable[[], asyncio.SubprocessProtocol], cmd: str | bytes, **kwargs: Any
    ) -> tuple[asyncio.SubprocessTransport, asyncio.SubprocessProtocol]:
        """As :meth:`subprocess_exec`."""
        transport, protocol = await super().subprocess_shell(protocol_factory, cmd, **kwargs)
        self._processes.append(transport)
        return transport, protocol
