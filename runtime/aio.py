"""Small asyncio helpers shared by every carehub process: the hub daemon, the platform's workers, the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import uvloop

__all__ = ["keep_cancellation", "new_event_loop", "raise_if_cancelling", "run"]

_T = TypeVar("_T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The event loop every carehub process runs on: uvloop (libuv; the asyncio API, with its scheduling in C).

    asyncio's own loop schedules each callback in Python. On the hub that is the bulk of the loop's work per
    reading (every commit wakes each waiting task with one callback): uvloop cut a 64-row group commit's cycle by
    about a tenth here, and leaves more of a Pi's CPU to the radio and the uplink.
    """
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run ``main`` to completion on a new :func:`new_event_loop` (what :func:`asyncio.run` does with its own)."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def keep_cancellation(awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable``, then raise :class:`asyncio.CancelledError` if it swallowed a cancellation of this task.

    Before Python 3.12, :func:`asyncio.wait_for` returns the inner result when the task is cancelled in the same
    loop turn as that result arrives (bpo-42130): the cancellation is lost, though the task still counts it
    (:meth:`asyncio.Task.cancelling`). aiomqtt awaits every publish and subscribe through ``wait_for``, so a loop
    that publishes (the uplink's sender, the platform's worker) would carry on after being cancelled and the task
    group or ``__aexit__`` that cancelled it would wait for it forever - under load, about once in a few hundred
    shutdowns or reconnects here. A cancellation still pending after the await is delivered here instead.

    Only for tasks that own no task group (see :func:`raise_if_cancelling`).
    """
    result = await awaitable
    raise_if_cancelling()
    return result


def raise_if_cancelling() -> None:
    """Raise :class:`asyncio.CancelledError` if the current task was cancelled and carries on regardless.

    For the head of a loop that waits without end (a pendant's session, the uplink's sender) and awaits libraries
    that may lose a cancellation (bumble and aiomqtt use ``asyncio.wait_for``): checked before each wait, a lost
    cancellation ends the loop instead of leaving whoever cancelled it waiting forever.

    Only for tasks that own no task group: on Python 3.11 a task group whose child failed leaves its parent task's
    cancellation count raised after it exits, so the parent would look cancelled for the rest of its life (the
    uplink's runner, which reconnects after such failures, checks a closing flag of its own instead).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
