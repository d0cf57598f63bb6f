"""Simulated meters seen from the hub's side: bleak over the sim backend, on an in-process link."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from bleak import BleakClient
from bleak.exc import BleakError

import sim.ble
from protocols.gatt import decode
from protocols.gatt.bp import BloodPressureMeasurement
from protocols.gatt.common import BatteryLevel
from protocols.gatt.glucose import GlucoseMeasurement, GlucoseMeasurementContext, Meal
from protocols.gatt.racp import RacpResponse, RacpResponseCode
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
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


# ---------------------------------------------------------------------------------------------------- glucose


def glucose_options(**overrides: object) -> DeviceOptions:
    base: dict[str, object] = {
        "id": "glucose-1",
        "address": "C0:00:00:00:00:02",
        "name": "GlucoSim",
        "bonding_required": True,
    }
    base.update(overrides)
    return DeviceOptions(**base)  # type: ignore[arg-type]


class Racp:
    """The hub's side of a RACP session over bleak."""

    def __init__(self, client: BleakClient) -> None:
        self.client = client
        self.records = Inbox()
        self.contexts = Inbox()
        self.responses = Inbox()

    async def start(self) -> None:
        await self.client.start_notify(uuid(0x2A18), self.records)
        await self.client.start_notify(uuid(0x2A34), self.contexts)
        await self.client.start_notify(uuid(0x2A52), self.responses)

    async def request(self, payload: bytes) -> RacpResponse:
        await self.client.write_gatt_char(uuid(0x2A52), payload, response=True)
        return RacpResponse.from_bytes(await self.responses.next())

    async def report(self, payload: bytes) -> tuple[list[int], RacpResponse]:
        response = await self.request(payload)
        sequences = []
        while not self.records.queue.empty():
            sequences.append(GlucoseMeasurement.from_bytes(self.records.queue.get_nowait()).sequence_number)
        return sequences, response


def response(op: int, code: RacpResponseCode) -> RacpResponse:
    return RacpResponse.response(op, code)


@asynccontextmanager
async def glucose_session(hub, meter: GlucoseMeter) -> AsyncIterator[Racp]:
    await meter.wait_for(lambda: meter.advertising)
    async with hub.connect(meter) as client:
        session = Racp(client)
        await session.start()
        yield session


async def test_glucose_live_reading_decodes_to_the_scenario_values(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock)
    async with running(meter, hub):
        await meter.measure(100)
        async with glucose_session(hub, meter) as session:
            produced = await meter.measure(58, meal="casual", carbohydrate="snack", carbohydrate_g=15)
            raw = await session.records.next()
            context_raw = await session.contexts.next()
    assert raw == produced.raw
    decoded = decode("2A18", raw)
    assert isinstance(decoded, GlucoseMeasurement)
    assert decoded.concentration is not None
    assert float(decoded.concentration) * 1e5 == pytest.approx(58)
    assert decoded.sequence_number == 1
    assert decoded.context_follows
    context = decode("2A34", context_raw)
    assert isinstance(context, GlucoseMeasurementContext)
    assert context.sequence_number == 1
    assert context.meal == Meal.CASUAL
    assert context.carbohydrate is not None
    assert float(context.carbohydrate) == pytest.approx(0.015)


async def test_racp_report_count_delete_first_last(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock)
    async with running(meter, hub):
        for value in (90, 110, 130, 150, 170):
            await meter.measure(value)
        async with glucose_session(hub, meter) as session:
            assert await session.report(bytes([1, 1])) == ([0, 1, 2, 3, 4], response(1, RacpResponseCode.SUCCESS))
            assert await session.report(bytes([1, 3, 1, 3, 0])) == ([3, 4], response(1, RacpResponseCode.SUCCESS))
            assert await session.report(bytes([1, 2, 1, 1, 0])) == ([0, 1], response(1, RacpResponseCode.SUCCESS))
            assert await session.report(bytes([1, 4, 1, 1, 0, 2, 0])) == (
                [1, 2],
                response(1, RacpResponseCode.SUCCESS),
            )
            assert await session.report(bytes([1, 5])) == ([0], response(1, RacpResponseCode.SUCCESS))
            assert await session.report(bytes([1, 6])) == ([4], response(1, RacpResponseCode.SUCCESS))
            assert await session.request(bytes([4, 1])) == RacpResponse.count(5)
            assert await session.request(bytes([4, 3, 1, 3, 0])) == RacpResponse.count(2)
            assert await session.request(bytes([2, 2, 1, 1, 0])) == response(2, RacpResponseCode.SUCCESS)
            assert meter.sequences == [2, 3, 4]
            assert await session.request(bytes([4, 1])) == RacpResponse.count(3)
            assert await session.report(bytes([1, 2, 1, 1, 0])) == ([], response(1, RacpResponseCode.NO_RECORDS_FOUND))
            assert await session.request(bytes([2, 1])) == response(2, RacpResponseCode.SUCCESS)
            assert await session.request(bytes([4, 1])) == RacpResponse.count(0)
            assert await session.report(bytes([1, 1])) == ([], response(1, RacpResponseCode.NO_RECORDS_FOUND))


async def test_racp_error_responses(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock)
    async with running(meter, hub):
        await meter.measure(120)
        async with glucose_session(hub, meter) as session:
            assert await session.request(bytes([9, 1])) == response(9, RacpResponseCode.OP_CODE_NOT_SUPPORTED)
            assert await session.request(bytes([1, 0])) == response(1, RacpResponseCode.INVALID_OPERATOR)
            assert await session.request(bytes([1, 7])) == response(1, RacpResponseCode.OPERATOR_NOT_SUPPORTED)
            assert await session.request(bytes([1, 3, 1])) == response(1, RacpResponseCode.INVALID_OPERAND)
            assert await session.request(bytes([3, 1])) == response(3, RacpResponseCode.INVALID_OPERATOR)
            await session.client.stop_notify(uuid(0x2A18))
            assert await session.request(bytes([1, 1])) == response(1, RacpResponseCode.PROCEDURE_NOT_COMPLETED)


async def test_racp_needs_indications_enabled(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock)
    async with running(meter, hub):
        await meter.measure(120)
        await meter.wait_for(lambda: meter.advertising)
        async with hub.connect(meter) as client:
            with pytest.raises(BleakError, match="0x81|129|CCCD|Application"):
                await client.write_gatt_char(uuid(0x2A52), bytes([1, 1]), response=True)


async def test_racp_abort_stops_a_report_but_not_a_delete(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock, transfer_gap=60, erase_seconds=30)
    async with running(meter, hub):
        for value in (90, 110, 130):
            await meter.measure(value)
        async with glucose_session(hub, meter) as session:
            await session.client.write_gatt_char(uuid(0x2A52), bytes([1, 1]), response=True)
            first = GlucoseMeasurement.from_bytes(await session.records.next())
            assert first.sequence_number == 0
            assert await session.request(bytes([3, 0])) == response(3, RacpResponseCode.SUCCESS)
            assert session.records.queue.empty()
            await meter.wait_for(lambda: not meter.procedure_running)

            await session.client.write_gatt_char(uuid(0x2A52), bytes([2, 5]), response=True)
            assert await session.request(bytes([3, 0])) == response(3, RacpResponseCode.ABORT_UNSUCCESSFUL)
            await clock.advance(30)
            assert RacpResponse.from_bytes(await session.responses.next()) == response(2, RacpResponseCode.SUCCESS)
            assert meter.sequences == [1, 2]


async def test_glucose_memory_overflow_drops_the_oldest(hub, clock):
    meter = GlucoseMeter(glucose_options(memory_size=3), clock)
    async with running(meter, hub):
        for value in (90, 110, 130, 150, 170):
            await meter.measure(value)
        assert meter.sequences == [2, 3, 4]
        async with glucose_session(hub, meter) as session:
            assert await session.report(bytes([1, 1])) == ([2, 3, 4], response(1, RacpResponseCode.SUCCESS))
