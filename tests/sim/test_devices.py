"""Simulated meters seen from the hub's side: bleak over the sim backend, on an in-process link."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from bleak import BleakClient
from bleak.exc import BleakError

import sim.ble
from protocols.gatt import decode
from protocols.gatt.bp import BloodPressureMeasurement
from protocols.gatt.common import BatteryLevel, CurrentTime
from protocols.gatt.glucose import GlucoseMeasurement, GlucoseMeasurementContext, Meal
from protocols.gatt.racp import RacpResponse, RacpResponseCode
from sim.clock import ManualClock
from sim.devices.base import SimDevice
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DeviceOptions
from sim.devices.vitals import HeartRateBand, PulseOximeter, Scale, Thermometer

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
            with pytest.raises(BleakError, match=r"0x81|129|CCCD|Application"):
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


# ---------------------------------------------------------------------------------------------------- habits


async def test_stored_readings_survive_disconnect_and_arrive_on_reconnect(hub, clock):
    cuff = BloodPressureCuff(bp_options(), clock)
    async with running(cuff, hub):
        first = await cuff.measure(130, 85, 70)
        await cuff.wait_for(lambda: cuff.advertising)
        async with hub.connect(cuff):
            pass  # the hub connects but never subscribes: nothing is delivered
        second = await cuff.measure(135, 88, 71)
        assert cuff.stored_count() == 2
        await cuff.wait_for(lambda: cuff.advertising)
        inbox = Inbox()
        async with hub.connect(cuff) as client:
            await client.start_notify(uuid(0x2A35), inbox)
            assert [await inbox.next(), await inbox.next()] == [first.raw, second.raw]
            await cuff.wait_for(lambda: cuff.stored_count() == 0)


async def test_memory_overflow_drops_the_oldest_indication(hub, clock):
    cuff = BloodPressureCuff(bp_options(memory_size=2), clock)
    async with running(cuff, hub):
        readings = [await cuff.measure(120 + i, 80, 60) for i in range(4)]
        assert cuff.stored_count() == 2
        await cuff.wait_for(lambda: cuff.advertising)
        inbox = Inbox()
        async with hub.connect(cuff) as client:
            await client.start_notify(uuid(0x2A35), inbox)
            assert [await inbox.next(), await inbox.next()] == [r.raw for r in readings[2:]]


async def test_device_sleeps_after_its_advertising_window(hub, clock):
    cuff = BloodPressureCuff(bp_options(advertise_seconds=60), clock)
    async with running(cuff, hub):
        assert not cuff.advertising
        await cuff.measure(120, 80)
        await cuff.wait_for(lambda: cuff.advertising)
        await clock.advance(61)
        await cuff.wait_for(lambda: not cuff.advertising)


async def test_writing_current_time_sets_the_clock_and_battery_change_resets_it(hub, clock):
    cuff = BloodPressureCuff(bp_options(clock_drift_ppm=100), clock)
    async with running(cuff, hub):
        await clock.advance(10_000)
        assert cuff.device_clock.now() == START.replace(tzinfo=None) + timedelta(seconds=10_001)
        cuff.change_battery()
        assert cuff.device_clock.now() == datetime(2000, 1, 1)  # noqa: DTZ001
        await cuff.measure(120, 80)
        await cuff.wait_for(lambda: cuff.advertising)
        async with hub.connect(cuff) as client:
            current = CurrentTime.from_bytes(bytes(await client.read_gatt_char(uuid(0x2A2B))))
            assert current.device_time is not None
            assert current.device_time.year == 2000
            target = datetime(2024, 3, 4, 12, 0, 0)  # noqa: DTZ001
            await client.write_gatt_char(uuid(0x2A2B), bytes(CurrentTime.from_datetime(target)), response=True)
            assert cuff.device_clock.now() == target
            inbox = Inbox()
            await client.start_notify(uuid(0x2A35), inbox)
            reading = BloodPressureMeasurement.from_bytes(await inbox.next())
            assert reading.timestamp is not None
            assert reading.timestamp.to_datetime() == datetime(2000, 1, 1)  # noqa: DTZ001


async def test_bonded_meter_refuses_unencrypted_access_and_a_second_central(hub, clock):
    cuff = BloodPressureCuff(bp_options(max_bonds=1), clock)
    async with running(cuff, hub):
        await cuff.measure(120, 80)
        await cuff.wait_for(lambda: cuff.advertising)
        async with hub.connect(cuff, pair=False) as client:
            with pytest.raises(BleakError):
                await client.read_gatt_char(uuid(0x2A49))
        assert cuff.may_bond("C0:CA:4E:00:00:01")
        cuff.bonded.add("C0:CA:4E:00:00:09")
        assert not cuff.may_bond("C0:CA:4E:00:00:01")
        assert cuff.may_bond("C0:CA:4E:00:00:09")


@pytest.mark.parametrize(
    ("factory", "service", "char", "props", "measure", "check"),
    [
        (
            Thermometer,
            0x1809,
            0x2A1C,
            {"indicate"},
            lambda d: d.measure(38.4, site="ear"),
            lambda m: float(m.value) == pytest.approx(38.4) and m.temperature_type == 3,
        ),
        (
            Scale,
            0x181D,
            0x2A9D,
            {"indicate"},
            lambda d: d.measure(81.4),
            lambda m: m.weight_raw * 0.005 == pytest.approx(81.4),
        ),
        (
            PulseOximeter,
            0x1822,
            0x2A5E,
            {"indicate"},
            lambda d: d.measure(91, 104),
            lambda m: float(m.spo2) == 91 and float(m.pulse_rate) == 104,
        ),
    ],
)
async def test_indicating_meters_deliver_decodable_readings(  # noqa: PLR0917 - parametrized cases
    hub, clock, factory, service, char, props, measure, check
):
    device = factory(DeviceOptions(id="m-1", address="C0:00:00:00:00:05", name="Meter"), clock)
    async with running(device, hub):
        produced = await measure(device)
        await device.wait_for(lambda: device.advertising)
        inbox = Inbox()
        async with hub.connect(device, pair=False) as client:
            assert uuid(service) in {s.uuid for s in client.services}
            found = {c.uuid: set(c.properties) for s in client.services for c in s.characteristics}
            assert found[uuid(char)] == props
            await client.start_notify(uuid(char), inbox)
            raw = await inbox.next()
    assert raw == produced.raw
    assert check(decode(f"{char:04X}", raw))


async def test_plx_streams_live_and_heart_rate_notifies(hub, clock):
    oximeter = PulseOximeter(DeviceOptions(id="ox", address="C0:00:00:00:00:06", name="Ox"), clock)
    async with running(oximeter, hub):
        await oximeter.measure(97, 70)
        await oximeter.wait_for(lambda: oximeter.advertising)
        spot, live = Inbox(), Inbox()
        async with hub.connect(oximeter, pair=False) as client:
            props = {c.uuid: set(c.properties) for s in client.services for c in s.characteristics}
            assert props[uuid(0x2A5F)] == {"notify"}
            assert props[uuid(0x2A60)] == {"read"}
            await client.start_notify(uuid(0x2A5E), spot)
            await client.start_notify(uuid(0x2A5F), live)
            await spot.next()
            produced = await oximeter.measure(95, 72, mode="continuous")
            assert await live.next() == produced.raw
    band = HeartRateBand(DeviceOptions(id="hr", address="C0:00:00:00:00:07", name="HR"), clock)
    async with running(band, hub):
        held = await band.measure(64)
        await band.wait_for(lambda: band.advertising)
        beats = Inbox()
        async with hub.connect(band, pair=False) as client:
            assert {c.uuid: set(c.properties) for s in client.services for c in s.characteristics}[uuid(0x2A37)] == {
                "notify"
            }
            await client.start_notify(uuid(0x2A37), beats)
            # The sample taken before anyone listened is held and sent on subscription, then the live one.
            assert await beats.next() == held.raw
            produced = await band.measure(118)
            raw = await beats.next()
    assert raw == produced.raw
    assert decode("2A37", raw).heart_rate == 118  # type: ignore[attr-defined]
