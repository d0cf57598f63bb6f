"""runtime.aio: a cancellation swallowed by asyncio.wait_for (as in aiomqtt's publish) is kept; the event loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from runtime import aio
from runtime.aio import keep_cancellation, raise_if_cancelling


async def _race(wrap: Callable[[Awaitable[None]], Awaitable[None]]) -> tuple[asyncio.Task[None], asyncio.Event]:
    """A sender that publishes through wait_for, then idles; cancelled in the loop turn its publish completes.

    Returns the sender and an event it sets when it goes on to its idle wait."""
    confirmation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    entered = asyncio.Event()
    idling = asyncio.Event()

    async def publish() -> None:  # what aiomqtt does with every publish: wait_for with a timeout
        entered.set()
        await asyncio.wait_for(confirmation, timeout=60)

    async def sender() -> None:
        await wrap(publish())
        idling.set()
        await asyncio.Event().wait()  # the sender's idle wait for more to send

    task = asyncio.create_task(sender())
    await entered.wait()
    confirmation.set_result(None)  # the broker's PUBACK and ...
    task.cancel()  # ... the shutdown arrive in the same turn of the loop
    return task, idling


async def test_the_cancellation_reaches_the_task() -> None:
    task, _ = await _race(keep_cancellation)
    async with asyncio.timeout(10):  # a bound, not a wait: the task ends at once
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps cancellations from Python 3.12")
async def test_without_it_the_task_would_wait_forever() -> None:
    async def plain(aw: Awaitable[None]) -> None:
        await aw

    task, idling = await _race(plain)
    async with asyncio.timeout(10):  # a bound, not a wait: it gets there at once
        await idling.wait()
    assert not task.done()  # the control case: it went on to its idle wait, cancelled in name only
    assert task.cancelling() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_results_pass_through_and_an_uncancelled_task_goes_on() -> None:
    async def value() -> int:
        return 7

    assert await keep_cancellation(value()) == 7


async def test_a_loop_head_check_ends_a_task_cancelled_in_name_only() -> None:
    async def checked(aw: Awaitable[None]) -> None:
        await aw
        raise_if_cancelling()

    task, _ = await _race(checked)
    async with asyncio.timeout(10):  # a bound, not a wait
        with pytest.raises(asyncio.CancelledError):
            await task


def test_carehub_processes_run_on_uvloop():
    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert aio.run(loop_type()) is uvloop.Loop


async def test_the_tests_run_on_the_same_loop_as_the_processes():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
