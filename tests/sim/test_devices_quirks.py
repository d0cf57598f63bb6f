"""The quirk zoo (`sim.devices.quirks`) seen from the hub's side: bleak over the sim backend on a private link."""

from __future__ import annotations

import pytest
from bleak.exc import BleakGATTProtocolError
from test_devices import (  # the fixtures clock and hub too
    START,
    Inbox,
    bp_options,
    clock,
    glucose_options,
    glucose_session,
    hub,
    response,
    running,
    uuid,
)

from protocols.gatt import decode
from protocols.gatt.bp import BloodPressureMeasurement
from protocols.gatt.common import CurrentTime
from protocols.gatt.glucose import GlucoseMeasurement, GlucoseType, SampleLocation
from protocols.gatt.racp import RacpResponse, RacpResponseCode
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DEFAULT_CLOCK
from sim.devices.quirks import (
    ATT_APPLICATION_ERROR,
    ClockRefusingCuff,
    RacpNotCompletedMeter,
    RacpSilentMeter,
    TwoUserCuff,
)

__all__ = ["clock", "hub"]  # fixtures used by name


async def test_a_clock_refusing_cuff_answers_a_time_write_with_att_0x80_and_keeps_its_clock(hub, clock):
    cuff = ClockRefusingCuff(bp_options(clock_start=DEFAULT_CLOCK), clock)
    async with running(cuff, hub):
        await cuff.measure(120, 80)
        await cuff.wait_for(lambda: cuff.advertising)
        async with hub.connect(cuff) as client:
            payload = bytes(CurrentTime.from_datetime(START.replace(tzinfo=None)))
            with pytest.raises(BleakGATTProtocolError) as refused:
                await client.write_gatt_char(uuid(0x2A2B), payload, response=True)
            assert refused.value.code == ATT_APPLICATION_ERROR
            current = CurrentTime.from_bytes(bytes(await client.read_gatt_char(uuid(0x2A2B))))
            assert current.device_time is not None
            assert current.device_time.year == 2000  # unchanged
    assert cuff.refused_writes == 1


async def test_a_two_user_cuff_stamps_each_reading_with_its_user(hub, clock):
    cuff = TwoUserCuff(bp_options(), clock)
    async with running(cuff, hub):
        produced = [await cuff.measure_as(user, 120 + user % 10, 80) for user in (1, 2, 0xFF)]
        await cuff.wait_for(lambda: cuff.advertising)
        inbox = Inbox()
        async with hub.connect(cuff) as client:
            await client.start_notify(uuid(0x2A35), inbox)
            raws = [await inbox.next() for _ in produced]
            await cuff.wait_for(lambda: cuff.stored_count() == 0)
    assert raws == [p.raw for p in produced]
    assert [BloodPressureMeasurement.from_bytes(raw).user_id for raw in raws] == [1, 2, 0xFF]
    assert [p.values["user_id"] for p in produced] == [1, 2, 0xFF]
    with pytest.raises(ValueError, match="uint8"):
        await cuff.measure(120, 80, user_id=256)


async def test_a_control_solution_test_is_sent_as_type_10_location_4(hub, clock):
    meter = GlucoseMeter(glucose_options(), clock)
    async with running(meter, hub):
        produced = await meter.measure(98, control_solution=True)
    decoded = decode("2A18", produced.raw)
    assert isinstance(decoded, GlucoseMeasurement)
    assert decoded.type == GlucoseType.CONTROL_SOLUTION
    assert decoded.sample_location == SampleLocation.CONTROL_SOLUTION
    assert produced.values == {"mg_dl": 98, "control_solution": True}


async def test_racp_not_completed_sends_some_records_then_0x08(hub, clock):
    meter = RacpNotCompletedMeter(glucose_options(), clock, records_per_report=2)
    async with running(meter, hub):
        for value in (90, 110, 130):
            await meter.measure(value)
        async with glucose_session(hub, meter) as session:
            assert await session.report(bytes([1, 1])) == (
                [0, 1],
                response(1, RacpResponseCode.PROCEDURE_NOT_COMPLETED),
            )
            assert await session.report(bytes([1, 3, 1, 2, 0])) == (
                [2],
                response(1, RacpResponseCode.PROCEDURE_NOT_COMPLETED),
            )


async def test_racp_silent_sends_some_records_and_never_answers(hub, clock):
    meter = RacpSilentMeter(glucose_options(), clock, records_per_report=1)
    async with running(meter, hub):
        for value in (90, 110):
            await meter.measure(value)
        async with glucose_session(hub, meter) as session:
            await session.client.write_gatt_char(uuid(0x2A52), bytes([1, 1]), response=True)
            record = GlucoseMeasurement.from_bytes(await session.records.next())
            assert record.sequence_number == 0
            await meter.wait_for(lambda: meter.reports == 1 and not meter.procedure_running)
            # The report is over on the meter's side; no response was indicated and none comes with the next write.
            assert session.responses.queue.empty()
            # The meter still answers other requests, and the answer is the count, not a late report response.
            assert await session.request(bytes([4, 1])) == RacpResponse.count(2)
            assert session.responses.queue.empty()
    assert meter.reports == 1


def test_quirk_parameters_are_checked(clock) -> None:
    for quirk in (RacpNotCompletedMeter, RacpSilentMeter):
        with pytest.raises(ValueError, match="records_per_report"):
            quirk(glucose_options(), clock, records_per_report=-1)
