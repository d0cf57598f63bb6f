"""No long-lived task of the hub dies quietly (issue 19.3): it is logged by name, counted and restarted, or the
gateway gives up and the process exits non-zero."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import Gateway, open_gateway
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.feedback import RecordingFeedback
from gateway.supervise import SupervisionPolicy, Supervisor, SupervisorGaveUpError, restart_delay
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.messages import AlarmAcknowledgement, DownMessage
from sim.broker import free_port

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
IMMEDIATE = SupervisionPolicy(max_restarts=3, window=60.0, base_delay=0.0, max_delay=0.0)


class UnexpectedDefectError(RuntimeError):
    """An unexpected defect inside a task."""


def failing_then(times: int, done: asyncio.Event) -> Callable[[], Awaitable[None]]:
    calls = 0

    async def run() -> None:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise UnexpectedDefectError(f"defect number {calls}")
        done.set()
        await asyncio.Event().wait()  # a healthy long-lived task

    return run


async def test_a_failing_task_is_logged_by_name_counted_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    delays: list[float] = []

    async def no_wait(delay: float) -> None:
        delays.append(delay)

    policy = SupervisionPolicy(max_restarts=5, window=60.0, base_delay=0.5, max_delay=30.0)
    healthy = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="gateway.supervise")
    async with Supervisor(policy, sleep=no_wait) as supervisor:
        supervisor.start("test.worker", failing_then(2, healthy))
        await healthy.wait()
        assert supervisor.failures["test.worker"] == 2
        assert supervisor.restarts["test.worker"] == 2
    assert delays == [0.5, 1.0]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "test.worker" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and isinstance(r.exc_info[1], UnexpectedDefectError) for r in failures)


async def test_a_task_that_keeps_failing_makes_the_supervisor_give_up() -> None:
    never = asyncio.Event()

    async def run() -> None:
        async with Supervisor(IMMEDIATE) as supervisor:
            supervisor.start("test.broken", failing_then(100, never))
            await never.wait()

    with pytest.raises(ExceptionGroup) as info:
        await run()
    (error,) = info.value.exceptions
    assert isinstance(error, SupervisorGaveUpError)
    assert (error.task, error.failures) == ("test.broken", 4)


async def test_a_task_that_returns_is_restarted_too() -> None:
    runs = 0
    third = asyncio.Event()

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()
            await asyncio.Event().wait()

    async with Supervisor(IMMEDIATE) as supervisor:
        supervisor.start("test.returns", returns)
        await third.wait()
        assert supervisor.failures["test.returns"] == 2


def test_restart_delay_doubles_up_to_its_cap() -> None:
    policy = SupervisionPolicy(base_delay=0.5, max_delay=4.0)
    assert [restart_delay(n, policy) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


# -- the gateway's own long-lived tasks ------------------------------------------------------------------------------


@asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    identity = HubIdentity.generate("sup-hub")
    save_hub_identity(tmp_path / "hub.key", identity)
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = parse_config(
        f"""
[hub]
id = "sup-hub"
key_file = "hub.key"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{free_port()}"
[storage]
path = "outbox.sqlite"
[[residents]]
id = "r1"
language = "en"
""",
        tmp_path / "hub.toml",
    )
    async with open_gateway(
        config,
        feedback=RecordingFeedback(),
        ble=False,
        clock=ManualClock(NOW),
        tick_interval=0.01,
        supervision=IMMEDIATE,
    ) as gw:
        yield gw


def raising_once(original: Callable[..., object]) -> Callable[..., object]:
    raised = False

    def call(*args: object) -> object:
        nonlocal raised
        if not raised:
            raised = True
            raise UnexpectedDefectError("unexpected")
        return original(*args)

    return call


@pytest.mark.parametrize("task", ["gateway.down", "gateway.alarm-acks", "gateway.tick"])
async def test_each_long_lived_gateway_task_is_restarted_after_an_unexpected_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, task: str
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.supervise")
    async with gateway(tmp_path) as gw:
        hub = gw.hub
        if task == "gateway.down":
            hub.on_down = raising_once(hub.on_down)  # type: ignore[method-assign,assignment]
            gw.uplink.down.put_nowait(DownMessage("sup-hub", 1, NOW, AlarmAcknowledgement("a1", "Mei", NOW)))
        elif task == "gateway.alarm-acks":
            hub.alarm_records.get = raising_once(hub.alarm_records.get)  # type: ignore[method-assign,assignment]
        else:
            hub.tick = raising_once(hub.tick)  # type: ignore[method-assign,assignment]
        async with asyncio.timeout(30):
            await gw.supervisor.wait_restarts(task, 1)
        assert gw.supervisor.failures[task] == 1
        assert not (set(gw.supervisor.failures) - {task})
    logged = [r for r in caplog.records if task in r.getMessage() and r.exc_info is not None]
    assert len(logged) == 1
    error = logged[0].exc_info[1]  # type: ignore[index]
    if isinstance(error, BaseExceptionGroup):  # the ack waiter's own task group wraps it
        error = error.exceptions[0]
    assert isinstance(error, UnexpectedDefectError)
