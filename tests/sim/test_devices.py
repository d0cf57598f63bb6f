"""Simulated meters seen from the hub's side: bleak over the sim backend, on an in-process link."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from bleak import BleakClient

import sim.ble
from protocols.gatt.bp import BloodPressureMeasurement
from protocols.gatt.common import BatteryLevel, CurrentTime
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.options import DeviceOptions

_links = itertools.count()
START = datetime(2024, 3, 4, 7, 0, tzinfo=UTC)


def uuid(short: int) -> str:
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


class Hub:
    """The hub's side in tests: bleak classes bound to a private local link."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.scanner, self.client = sim.ble.backend_for(link)

    def connect(self, device: SimDevice, *, pair: bool = True) -> BleakClient:
        return BleakClient(device.options.address, backend=self.client, pair=pair, timeout=10)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    link = f"local:devices{next(_links)}"
    async with sim.ble.open_central(link):
        yield Hub(link)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@asynccontextmanager
async def running(device: SimDevice, hub: Hub) -> AsyncIterator[SimDevice]:
    async with (
        sim.ble.open_peripheral_device(hub.link, device.options.address, device.options.name) as bumble_device,
        device.attach(bumble_device),
    ):
        yield device


def bp_options(**overrides: object) -> DeviceOptions:
    base: dict[str, object] = {
        "id": "bp-1",
        "address": "C0:00:00:00:00:01",
        "name": "BP-Cuff",
        "bonding_required": True,
    }
    base.update(overrides)
    return DeviceOptions(**base)  # type: ignore[arg-type]


class Inbox:
    """Notifications/indications received by the hub, awaited without sleeping."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def __call__(self, _char: object, data: bytearray) -> None:
        self.queue.put_nowait(bytes(data))

    async def next(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.queue.get()


async def test_bp_cuff_gatt_surface(hub, clock):
    cuff = BloodPressureCuff(bp_options(), clock)
    async with running(cuff, hub):
        await cuff.measure(120, 80, 60)
        await cuff.wait_for(lambda: cuff.advertising)
        async with hub.connect(cuff) as client:
            services = {s.uuid: s for s in client.services}
            for service in (0x1810, 0x180A, 0x180F, 0x1805):
                assert uuid(service) in services
            props = {c.uuid: set(c.properties) for s in client.services for c in s.characteristics}
            assert props[uuid(0x2A35)] == {"indicate"}
            assert props[uuid(0x2A36)] == {"notify"}
            assert props[uuid(0x2A49)] == {"read"}
            assert props[uuid(0x2A19)] == {"read", "notify"}
            assert props[uuid(0x2A2B)] == {"read", "write", "notify"}
            for info in (0x2A29, 0x2A24, 0x2A25, 0x2A26):
                assert props[uuid(info)] == {"read"}
            assert BatteryLevel.from_bytes(bytes(await client.read_gatt_char(uuid(0x2A19)))).battery_level == 100


async def test_bp_measurement_is_indicated_with_the_values_asked_for(hub, clock):
    cuff = BloodPressureCuff(bp_options(), clock)
    async with running(cuff, hub):
        produced = await cuff.measure(142, 91, 72)
        await cuff.wait_for(lambda: cuff.advertising)
        inbox = Inbox()
        async with hub.connect(cuff) as client:
            await client.start_notify(uuid(0x2A35), inbox)
            raw = await inbox.next()
            await cuff.wait_for(lambda: cuff.stored_count() == 0)
        assert raw == produced.raw
        reading = BloodPressureMeasurement.from_bytes(raw)
        assert float(reading.systolic) == 142
        assert float(reading.diastolic) == 91
        assert reading.pulse_rate is not None
        assert float(reading.pulse_rate) == 72
        assert reading.timestamp is not None
        assert reading.timestamp.to_datetime() == START.replace(tzinfo=None)
