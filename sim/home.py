"""Run a simulated home: every meter of a scenario on one link, the timeline replayed on a clock.

    scenario = load_scenario("sim/scenarios/hypertension-diabetes.toml")
    async with Home(scenario, link="local:home1", clock=CompressedClock(scenario.start_time, 3600)) as home:
        await home.run()            # replays the timeline until the scenario's end
    home.log                        # ground truth: every measurement produced, values and raw bytes
    home.pendant_events             # ground truth: every pendant event (counter, frame bytes)

Timeline ``press``, ``long_press``, ``cancel`` and ``checkin`` entries press the pendant's button
(:meth:`sim.devices.pendant.Pendant.press`); ``battery_low`` on a pendant lowers its battery, and the pendant raises
its own battery_low event when the level falls below 20 %.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from protocols.devices import DeviceKind
from protocols.pendant import PendantEventType
from sim.ble import open_peripheral_device
from sim.clock import Clock, sleep_until
from sim.devices.base import Produced, SimDevice
from sim.devices.pendant import Pendant
from sim.devices.registry import peripheral_class
from sim.scenario import EventKind, Scenario, Scheduled

_log = logging.getLogger(__name__)


_PRESSES: dict[EventKind, PendantEventType] = {
    EventKind.PRESS: PendantEventType.PRESS,
    EventKind.LONG_PRESS: PendantEventType.LONG_PRESS,
    EventKind.CANCEL: PendantEventType.CANCEL,
    EventKind.CHECKIN: PendantEventType.CHECKIN,
}


class Home:
    """All devices of ``scenario`` attached to ``link`` (an async context manager).

    Args:
        scenario: the validated scenario.
        link: ``local[:name]`` or ``tcp:127.0.0.1:PORT``.
        clock: the home clock (compressed for a fast day, manual in tests).
        seed: overrides the scenario's jitter seed.
        on_event: called with a one-line description of everything that happens (the CLI prints these).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        link: str,
        clock: Clock,
        seed: int | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.link = link
        self.clock = clock
        self.schedule: tuple[Scheduled, ...] = scenario.schedule(seed)
        self.log: list[Produced] = []
        self.pendant_events: list[Produced] = []
        self.devices: dict[str, SimDevice] = {}
        self._say = on_event or (lambda _line: None)
        self._stack = contextlib.AsyncExitStack()
        for spec in scenario.devices:
            factory = peripheral_class(spec.kind)  # the kind's profile names its peripheral
            on_produced = self._pressed if spec.kind is DeviceKind.PENDANT else self._produced
            self.devices[spec.id] = factory(spec.options, clock, on_produced=on_produced)

    def _produced(self, produced: Produced) -> None:
        self.log.append(produced)
        self._say(
            f"{produced.taken_at:%H:%M:%S} {produced.device} measured {dict(produced.values)} {produced.raw.hex()}"
        )

    def _pressed(self, produced: Produced) -> None:
        self.pendant_events.append(produced)
        values = produced.values
        self._say(
            f"{produced.taken_at:%H:%M:%S} {produced.device} {values['event']} (counter {values['counter']}, "
            f"battery {values['battery']}%) {produced.raw.hex()}"
        )

    async def __aenter__(self) -> Self:
        try:
            for device in self.devices.values():
                opts = device.options
                bumble_device = await self._stack.enter_async_context(
                    open_peripheral_device(self.link, opts.address, opts.name)
                )
                await self._stack.enter_async_context(device.attach(bumble_device))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def run(self) -> None:
        """Replay the timeline in order on the home clock, then wait until the scenario's end."""
        for scheduled in self.schedule:
            await sleep_until(self.clock, scheduled.when)
            await self.apply(scheduled)
        await sleep_until(self.clock, self.scenario.end_time)

    async def apply(self, scheduled: Scheduled) -> None:
        """Make one timeline event happen now."""
        event = scheduled.event
        device = self.devices[event.device]
        values = dict(event.values)
        press = _PRESSES.get(event.kind)
        if press is not None and isinstance(device, Pendant):
            await device.press(press)
            return
        match event.kind:
            case EventKind.MEASURE:
                await device.measure(**values)  # type: ignore[attr-defined]
            case EventKind.BATTERY_CHANGE:
                device.change_battery()
                self._say(f"{scheduled.when:%H:%M:%S} {device.id} battery changed, clock reset")
            case EventKind.BATTERY_LOW:
                self._say(f"{scheduled.when:%H:%M:%S} {device.id} battery at {values['level']}%")
                if isinstance(device, Pendant):
                    await device.set_battery_level(float(values["level"]))
                else:
                    device.set_battery(float(values["level"]))
            case EventKind.OUT_OF_RANGE:
                await device.set_in_range(False)
                self._say(f"{scheduled.when:%H:%M:%S} {device.id} out of range until {scheduled.until:%H:%M}")
                if scheduled.until is not None:
                    device.spawn(self._back_in_range(device, scheduled), name=f"{device.id}-back-in-range")
            case _:
                self._say(f"{scheduled.when:%H:%M:%S} {device.id} {event.kind.value} ignored")

    async def _back_in_range(self, device: SimDevice, scheduled: Scheduled) -> None:
        if scheduled.until is not None:
            await sleep_until(self.clock, scheduled.until)
        await device.set_in_range(True)
        self._say(f"{self.clock.now():%H:%M:%S} {device.id} back in range")
