"""Wiring: the one place that builds the hub daemon from its config and runs its components together.

Components and their owners (each an async context manager; this module enters them in dependency order and
leaves them in reverse):

- the outbox (`gateway.outbox`): SQLite on its own thread;
- the feedback (`gateway.feedback`): voice task, LEDs, log;
- the hub (`gateway.hub.Hub`, the shell around the pure cores of `gateway.core`): rules, alarms, the panic
  lifecycle, records;
- the uplink (`gateway.uplink`): MQTT to the platform; its runner is a task of the supervisor below;
- the BLE manager (`gateway.ble`): connect-on-advertise sessions;
- three long-lived tasks of this module, supervised (`gateway.supervise`: a failure is logged with its traceback,
  counted and the task restarted; one that keeps failing shuts the gateway down so the process exits non-zero):
  verified down-messages to the hub, platform acks of raised alarms to the panic lifecycle, and the periodic tick
  (on the injected clock's time; the tick interval is wall time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner

from gateway.alarms import AlarmBook
from gateway.ble import BleManager
from gateway.clock import Clock, SystemClock
from gateway.config import SCHEDULABLE, DeviceKind, GatewayConfig
from gateway.core.downlink import SEQ_CURSOR, parse_seq
from gateway.errors import OutboxError
from gateway.feedback import Feedback, LogFeedback
from gateway.hub import Hub
from gateway.journal import IndicationJournal
from gateway.notifier import FallbackNotifier
from gateway.observations import Vital
from gateway.outbox import Outbox, open_outbox
from gateway.panic import PanicLifecycle, PanicPolicy
from gateway.rules import DeviceWatch, ResidentRules, RuleEngine, ScheduleEntry
from gateway.supervise import SupervisionPolicy, Supervisor
from gateway.thresholds import resolve_thresholds
from gateway.uplink import Uplink, UplinkSettings
from gateway.wire import HubWire
from protocols.keys import load_hub_identity, load_pendant_key, load_platform_public_keys
from protocols.profiles import profile_of

__all__ = ["Gateway", "open_gateway"]

_log = logging.getLogger(__name__)

_DOWN_RETRY_CAP_S = 60.0  # longest wait before applying a down-message whose commit failed again


@dataclass(slots=True)
class Gateway:
    """A running hub, for tests, the demo and benchmarks."""

    config: GatewayConfig
    hub: Hub
    outbox: Outbox
    uplink: Uplink
    ble: BleManager | None
    feedback: Feedback
    supervisor: Supervisor


def _rule_engine(config: GatewayConfig, now: datetime, clock: Clock) -> RuleEngine:
    residents = {}
    for resident in config.residents:
        watches = tuple(
            DeviceWatch(d.address, profile_of(d.kind).silent_after)  # how long the kind may stay silent
            for d in config.devices
            if d.resident == resident.id
        )
        schedule = tuple(
            ScheduleEntry(Vital(SCHEDULABLE[entry.vital]), entry.due, grace=timedelta(seconds=entry.grace_s))
            for entry in resident.schedule
        )
        residents[resident.id] = ResidentRules(
            thresholds=resolve_thresholds(resident.profiles, dict(resident.thresholds)),
            schedule=schedule,
            devices=watches,
        )
    return RuleEngine(residents, started_at=now, local_zone=config.timezone, clock=clock)


@contextlib.asynccontextmanager
async def open_gateway(
    config: GatewayConfig,
    *,
    feedback: Feedback | None = None,
    scanner_backend: type[BaseBleakScanner] | None = None,
    client_backend: type[BaseBleakClient] | None = None,
    tick_interval: float = 1.0,
    ble: bool = True,
    supervision: SupervisionPolicy | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Gateway]:
    """Build and run the hub daemon; leaving the block shuts everything down in order.

    `clock` is the hub's one clock: its wall time stamps records and drives schedules, its monotonic time measures
    every timeout (so a stepped wall clock moves none of them), the uplink's ack waits included. `rng` is the source
    of the uplink's and the BLE manager's backoff jitter (each gets a generator seeded from it; default: unseeded),
    so a simulation with a seed replays the same reconnects.
    """
    clock = clock or SystemClock()
    uplink_rng = None if rng is None else random.Random(rng.getrandbits(64))  # noqa: S311 - jitter, not secrets
    ble_rng = None if rng is None else random.Random(rng.getrandbits(64))  # noqa: S311 - jitter, not secrets
    identity = load_hub_identity(config.hub_key_file)
    platform = load_platform_public_keys(config.platform_key_file)
    pendant_keys = {}
    for device in config.devices:
        if device.kind is DeviceKind.PENDANT and device.pendant_key_file is not None:
            _, key = load_pendant_key(device.pendant_key_file)
            pendant_keys[device.address] = key
    policy = PanicPolicy(
        ack_timeout=timedelta(seconds=config.panic_ack_timeout_s),
        cancel_window=timedelta(seconds=config.panic_cancel_window_s),
        repeat_interval=timedelta(seconds=config.panic_repeat_s),
        local_zone=config.timezone,
    )
    panic = PanicLifecycle(policy=policy, clock=clock, language={r.id: r.language for r in config.residents})
    settings = UplinkSettings.from_config(config)
    async with contextlib.AsyncExitStack() as stack:
        outbox = await stack.enter_async_context(open_outbox(config.storage_path, max_bytes=config.storage_max_bytes))
        last_down = parse_seq(await outbox.get_cursor(SEQ_CURSOR))
        wire = HubWire(identity, platform, last_down_seq=last_down or None)
        shown = await stack.enter_async_context(feedback or LogFeedback())
        hub = Hub(
            config,
            identity=identity,
            platform=platform,
            outbox=outbox,
            feedback=shown,
            rules=_rule_engine(config, clock.now(), clock),
            alarms=AlarmBook(clock=clock),
            panic=panic,
            pendant_keys=pendant_keys,
            fallback=FallbackNotifier(config.fallback_command, config.fallback_webhook),
            clock=clock,
        )
        stack.push_async_callback(hub.settle)  # before the outbox closes: what is being sealed is committed
        await hub.restore()
        await hub.report_evictions()
        supervisor = await stack.enter_async_context(Supervisor(supervision))
        uplink = await stack.enter_async_context(
            Uplink(settings, outbox, wire, clock=clock, rng=uplink_rng, supervisor=supervisor)
        )
        supervisor.start("gateway.down", lambda: _down_messages(uplink, hub))
        supervisor.start("gateway.alarm-acks", lambda: _alarm_deliveries(uplink, hub))
        supervisor.start("gateway.tick", lambda: _ticker(hub, tick_interval))
        manager = None
        if ble:
            journal = stack.enter_context(IndicationJournal(config.storage_path.with_suffix(".journal")))
            manager = await stack.enter_async_context(
                BleManager(
                    config,
                    hub,
                    scanner_backend=scanner_backend,
                    client_backend=client_backend,
                    clock=clock,
                    rng=ble_rng,
                    journal=journal,
                )
            )
            hub.set_pendant_writer(manager.write_pendant_state)
        yield Gateway(config, hub, outbox, uplink, manager, shown, supervisor)


async def _down_messages(uplink: Uplink, hub: Hub) -> None:
    """Verified down-messages to the hub, in order; one whose commit fails is applied again until it is stored."""
    while True:
        message = await uplink.down.get()
        failures = 0
        while True:
            try:
                await hub.on_down(message)
                break
            except OutboxError as exc:
                failures += 1
                delay = min(_DOWN_RETRY_CAP_S, 0.5 * 2 ** min(failures, 10))
                _log.error("down-message not stored (%s); trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)


async def _alarm_deliveries(uplink: Uplink, hub: Hub) -> None:
    """Each raised alarm, once the platform has acked its record, tells the panic lifecycle its call was delivered."""
    async with asyncio.TaskGroup() as waiters:
        while True:
            rid = await hub.alarm_records.get()
            waiters.create_task(_await_ack(uplink, hub, rid), name=f"gateway.ack.{rid[:8]}")


async def _await_ack(uplink: Uplink, hub: Hub, rid: str) -> None:
    await uplink.wait_acked(rid)
    await hub.on_delivered([rid])


async def _ticker(hub: Hub, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await hub.tick()
