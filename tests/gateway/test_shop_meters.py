"""Shop meters' quirks (issue 14 items 4, 6 and 8), through the real gateway over the simulated radio.

Each test attaches a quirk of :mod:`sim.devices.quirks` (or a plain product driven into the situation) to a private
link, runs the hub as ``test_ble_manager`` does, and checks what became durable in the outbox: every reading exactly
once, under the right resident (or unassigned), with the right time and flags.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_ble_manager import BP, GLUCOSE, START, Rig, options, rig

import gateway.ble
import gateway.ble_errors
import gateway.ble_session
from gateway.backoff import RetryPolicy
from gateway.ble import DeviceInformation, SessionStep
from gateway.ble_racp import RacpProgress
from gateway.config import DeviceConfig, DeviceKind
from gateway.core.measurements import ClockFinding, Filing, filing_of
from gateway.events import ClockCorrected, ErrorClass, LinkFailed, Misbehaviour
from protocols import gatt
from protocols.record import AlarmBody, MeasurementBody, Record
from sim.clock import ManualClock
from sim.devices.base import Produced
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.glucose import GlucoseMeter
from sim.devices.options import DEFAULT_CLOCK
from sim.devices.quirks import QUIRKS, ClockRefusingCuff, RacpNotCompletedMeter, RacpSilentMeter, TwoUserCuff
from sim.devices.uds_scale import UdsScale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
BP2 = "C0:00:00:00:10:03"
_FAST = RetryPolicy(base=0.01, cap=0.02)  # retry a failed device at its next advertisement (no waiting in tests)


def _body(record: Record) -> MeasurementBody:
    assert isinstance(record.body, MeasurementBody)
    return record.body


async def _by_raw(r: Rig, address: str, produced: list[Produced]) -> list[MeasurementBody]:
    """The stored measurement bodies in the order of `produced`, asserting each is stored exactly once."""
    bodies = [_body(rec) for rec in await r.measurements(address)]
    assert sorted(b.raw for b in bodies) == sorted(p.raw for p in produced)  # every reading, exactly once
    by_raw = {b.raw: b for b in bodies}
    return [by_raw[p.raw] for p in produced]


async def _alarms(r: Rig) -> list[AlarmBody]:
    return [rec.body for rec in await r.records() if isinstance(rec.body, AlarmBody)]


async def test_a_cuff_refusing_the_clock_write_still_delivers_its_corrected_readings(tmp_path, mosquitto):
    """Omron: the Current Time write fails with ATT 0x80. Subscribing comes first and the clock is best-effort, so
    the reading arrives, corrected with the offset read (the cuff's clock stays wrong); the refusal is reported as
    the device's misbehaviour, and the session does not fail."""
    clock = ManualClock(START)
    cuff = ClockRefusingCuff(options(BP, bonding_required=True, clock_start=DEFAULT_CLOCK), clock)
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        await cuff.set_in_range(False)
        produced = [await cuff.measure(135, 88, pulse=70)]
        await clock.advance(60)
        produced.append(await cuff.measure(131, 84, pulse=68))
        await cuff.set_in_range(True)
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 2)
        await cuff.wait_for(lambda: cuff.stored_count() == 0)
        bodies = await _by_raw(r, BP, produced)
        for body, made in zip(bodies, produced, strict=True):
            assert body.resident_id == "r1"
            assert body.clock_corrected is True
            assert body.corrected_time is not None
            assert abs((body.corrected_time - made.taken_at).total_seconds()) < 5
            assert str(body.values["timestamp"]).startswith("2000-01-01")  # the cuff's own time is kept
        assert cuff.refused_writes == 1
        assert r.gw.ble is not None
        assert r.gw.ble.stats.step_failures[(SessionStep.CLOCK_WRITE, ErrorClass.PROTOCOL)] == 1
        (refusal,) = r.probe.status_with(BP, Misbehaviour)
        assert "clock write" in refusal.reason
        assert r.probe.status_with(BP, ClockCorrected) == []  # nothing was corrected on the cuff
        assert r.probe.status_with(BP, LinkFailed) == []


async def test_what_a_meter_says_it_is_is_read_once_per_run(tmp_path, mosquitto):
    """Device Information is a best-effort step; NUL padding (common in meters' fixed-size strings) is dropped."""
    clock = ManualClock(START)
    cuff = ClockRefusingCuff(
        options(BP, manufacturer="OMRON HEALTHCARE", model="HEM-7155T\x00\x00", serial="", firmware="1.02"), clock
    )
    async with rig(tmp_path, mosquitto, [cuff]) as r:
        await cuff.measure(120, 80)
        await r.probe.until(lambda: r.probe.readings_of(BP))
        assert r.gw.ble is not None
        info = r.gw.ble.stats.device_information[BP]
        assert info == DeviceInformation("OMRON HEALTHCARE", "HEM-7155T", None, "1.02")


@pytest.mark.parametrize("kind", ["blood_pressure", "glucose"])
async def test_clock_correction_applies_only_to_readings_after_the_reset(tmp_path, mosquitto, kind):
    """Readings made before a battery change carry the right time and keep it; those after it were stamped from the
    factory default (2000-01-01) and are corrected with the offset. None lands in 2048 (issue 14: 2051)."""
    clock = ManualClock(START)
    address = BP if kind == "blood_pressure" else GLUCOSE
    meter: BloodPressureCuff | GlucoseMeter
    if kind == "blood_pressure":
        meter = BloodPressureCuff(options(address), clock)
    else:
        meter = GlucoseMeter(options(address), clock)

    async def take(value: int) -> Produced:
        if isinstance(meter, BloodPressureCuff):
            return await meter.measure(value, 80)
        return await meter.measure(value)

    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        before = [await take(121), await take(122)]
        await clock.advance(3600)
        meter.change_battery()
        await clock.advance(600)
        after = [await take(123), await take(124)]
        assert [p.device_time.year for p in before + after] == [2024, 2024, 2000, 2000]
        await meter.set_in_range(True)
        await r.probe.until(lambda: len(r.probe.readings_of(address)) == 4)
        bodies = await _by_raw(r, address, before + after)
        for body in bodies[:2]:
            assert body.clock_corrected is False
            assert body.corrected_time is None
        for body, made in zip(bodies[2:], after, strict=True):
            assert body.clock_corrected is True
            assert body.corrected_time is not None
            assert abs((body.corrected_time - made.taken_at).total_seconds()) < 5
        (correction,) = r.probe.status_with(address, ClockCorrected)
        assert correction.offset is not None
        assert correction.offset < timedelta(days=-20 * 365)


async def test_a_meter_keeps_local_time_and_is_set_to_the_homes_local_time(tmp_path, mosquitto):
    """GATT clocks keep local time. In a home at UTC+8, a cuff set right (local time) is left alone and its reading
    is not corrected; a cuff back at its factory default is set to the home's local time, and its reading's
    corrected time is the UTC moment it was taken. The hub compared and set meters in UTC: every correct meter
    outside UTC was "wrong" by the zone's offset, and was set to show UTC to the resident."""
    clock = ManualClock(START)
    shanghai = ZoneInfo("Asia/Shanghai")
    local = START.astimezone(shanghai).replace(tzinfo=None)
    right = BloodPressureCuff(options(BP, clock_start=local), clock)
    reset = BloodPressureCuff(options(BP2, clock_start=DEFAULT_CLOCK), clock)
    async with rig(tmp_path, mosquitto, [right, reset], hub_lines=['timezone = "Asia/Shanghai"']) as r:
        for cuff in (right, reset):
            await cuff.set_in_range(False)
        made = {BP: await right.measure(125, 80), BP2: await reset.measure(126, 81)}
        for cuff in (right, reset):
            await cuff.set_in_range(True)
        await r.probe.until(lambda: r.probe.readings_of(BP) and r.probe.readings_of(BP2))
        (kept,) = await _by_raw(r, BP, [made[BP]])
        assert kept.clock_corrected is False
        assert str(kept.values["timestamp"]) == local.isoformat()
        assert r.probe.status_with(BP, ClockCorrected) == []
        assert right.device_clock.now() - local < timedelta(seconds=5)
        (fixed,) = await _by_raw(r, BP2, [made[BP2]])
        assert fixed.clock_corrected is True
        assert fixed.corrected_time is not None
        assert abs((fixed.corrected_time - made[BP2].taken_at).total_seconds()) < 5
        assert abs((reset.device_clock.now() - local).total_seconds()) < 5  # set to local time, not UTC


async def test_a_two_user_cuff_files_only_the_configured_user_under_the_resident(tmp_path, mosquitto):
    """The cuff is provisioned for user 1: user 2's readings and those of the unknown user (0xFF) are stored
    unassigned, counted and never judged (user 2's 200/120 would raise an alarm for the resident)."""
    clock = ManualClock(START)
    cuff = TwoUserCuff(options(BP), clock)
    async with rig(tmp_path, mosquitto, [cuff], device_lines={BP: ["user_id = 1"]}) as r:
        await cuff.set_in_range(False)
        produced = [
            await cuff.measure_as(1, 128, 82),
            await cuff.measure_as(2, 200, 120),
            await cuff.measure_as(0xFF, 205, 125),
        ]
        await cuff.set_in_range(True)
        await r.probe.until(lambda: len(r.probe.readings_of(BP)) == 3)
        await cuff.wait_for(lambda: cuff.stored_count() == 0)
        bodies = await _by_raw(r, BP, produced)
        assert [b.resident_id for b in bodies] == ["r1", None, None]
        assert [b.values["user_id"] for b in bodies] == [1, 2, 0xFF]
        assert r.gw.ble is not None
        assert r.gw.ble.stats.unassigned == 2
        assert await _alarms(r) == []


async def test_a_control_solution_test_is_stored_flagged_and_never_judged(tmp_path, mosquitto):
    """A control-solution test at 40 mg/dL (a resident's reading that low is a level-2 hypoglycaemia) is stored as
    sent (type 10), flagged unreliable and raises no alarm; the resident's own reading beside it is stored as usual."""
    clock = ManualClock(START)
    meter = GlucoseMeter(options(GLUCOSE), clock)
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        produced = [await meter.measure(40, control_solution=True), await meter.measure(112)]
        await meter.set_in_range(True)
        await r.probe.until(lambda: (f"racp:{GLUCOSE}", 2) in [c for _, c in r.probe.stored])
        control, own = await _by_raw(r, GLUCOSE, produced)
        assert control.values["type"] == int(gatt.GlucoseType.CONTROL_SOLUTION)
        assert control.unreliable is True
        assert own.values["type"] == int(gatt.GlucoseType.CAPILLARY_PLASMA)
        assert own.unreliable is False
        assert own.resident_id == "r1"
        assert r.gw.ble is not None
        assert r.gw.ble.stats.control_solution == 1
        assert await _alarms(r) == []


async def test_racp_not_completed_keeps_what_arrived_and_the_rest_comes_later(tmp_path, mosquitto):
    """Each report is cut short after two records with 0x08: every session keeps what it got, moves the cursor and
    ends as usual (the cut is reported), so all five records arrive, each once, over three connections, with no
    failed session and no backoff."""
    clock = ManualClock(START)
    meter = RacpNotCompletedMeter(options(GLUCOSE), clock, records_per_report=2)
    key = f"racp:{GLUCOSE}"
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        produced = [await meter.measure(100 + n) for n in range(5)]
        await meter.set_in_range(True)
        await r.probe.until(lambda: len(r.probe.status_with(GLUCOSE, Misbehaviour)) == 3)
        await r.probe.until(lambda: (key, 5) in [c for _, c in r.probe.stored])
        assert await r.gw.outbox.get_cursor(key) == 5
        await _by_raw(r, GLUCOSE, produced)
        cursors = [c[1] for _, c in r.probe.stored if c is not None]
        assert cursors == [2, 4, 5]
        assert r.probe.status_with(GLUCOSE, LinkFailed) == []
        assert r.gw.ble is not None
        assert r.gw.ble.stats.step_failures[(SessionStep.RACP_REPORT, ErrorClass.PROTOCOL)] == 3


async def test_racp_not_completed_with_nothing_sent_fails_the_session_at_the_protocol_pace(tmp_path, mosquitto):
    """A meter that answers 0x08 without sending a record makes no progress: the session fails (protocol), so the
    device waits its class's delay instead of being reconnected at every advertisement."""
    clock = ManualClock(START)
    meter = RacpNotCompletedMeter(options(GLUCOSE), clock, records_per_report=0)
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        await meter.measure(100)
        await meter.set_in_range(True)
        await r.probe.until(lambda: r.probe.status_with(GLUCOSE, LinkFailed))
        (failure,) = r.probe.status_with(GLUCOSE, LinkFailed)
        assert failure.error_class is ErrorClass.PROTOCOL
        assert r.probe.readings_of(GLUCOSE) == []
        assert await r.gw.outbox.get_cursor(f"racp:{GLUCOSE}") is None


async def test_a_racp_that_never_answers_keeps_what_arrived(tmp_path, mosquitto, monkeypatch):
    """A report that is never answered ends the session after the silence; the records that came are stored with
    the cursor past them, and the next sessions ask only for the rest."""
    monkeypatch.setattr(gateway.ble_session, "_RACP_SILENCE", 0.3)
    monkeypatch.setitem(gateway.ble_errors.RETRY, ErrorClass.TRANSIENT, _FAST)
    clock = ManualClock(START)
    meter = RacpSilentMeter(options(GLUCOSE), clock, records_per_report=2)
    key = f"racp:{GLUCOSE}"
    async with rig(tmp_path, mosquitto, [meter]) as r:
        await meter.set_in_range(False)
        produced = [await meter.measure(100 + n) for n in range(3)]
        await meter.set_in_range(True)

        def done() -> bool:
            return (key, 3) in [c for _, c in r.probe.stored]

        seen = 0
        while not done():
            # Each silent report ends a session; the device is retried once the hub's clock passes its delay.
            await r.probe.until(lambda seen=seen: done() or len(r.probe.status_with(GLUCOSE, LinkFailed)) > seen)
            seen = len(r.probe.status_with(GLUCOSE, LinkFailed))
            await clock.advance(_FAST.cap)
        await _by_raw(r, GLUCOSE, produced)
        failures = r.probe.status_with(GLUCOSE, LinkFailed)
        assert failures
        assert {f.error_class for f in failures} == {ErrorClass.TRANSIENT}


def test_the_quirk_zoo_names_its_meters() -> None:
    assert set(QUIRKS) == {
        "clock-refusing-cuff",
        "two-user-cuff",
        "racp-not-completed",
        "racp-silent",
        "padding-cuff",
        "rfu-flags-cuff",
        "truncating-cuff",
        "passkey-cuff",
        "uds-scale",
        "control-solution",
        "clock-reset",
    }
    clock = ManualClock(START)
    for quirk in QUIRKS.values():
        device = quirk.build(options(GLUCOSE), clock)
        assert isinstance(device, BloodPressureCuff | GlucoseMeter | UdsScale)


# -- the pure parts -----------------------------------------------------------------------------------------------


def _device(user_id: int | None) -> DeviceConfig:
    return DeviceConfig(BP, DeviceKind.BLOOD_PRESSURE, "r1", None, user_id, None)


def _bp(user_id: int | None) -> gatt.Measurement:
    flags = 0x08 if user_id is not None else 0
    data = bytes([flags, 0x80, 0x00, 0x50, 0x00, 0x60, 0x00]) + (b"" if user_id is None else bytes([user_id]))
    return gatt.decode(0x2A35, data)


@pytest.mark.parametrize(
    ("configured", "sent", "expected"),
    [
        (None, 2, Filing.RESIDENT),  # provisioned without a user: everything is the resident's
        (None, 0xFF, Filing.RESIDENT),
        (1, 1, Filing.RESIDENT),
        (1, 2, Filing.OTHER_USER),
        (1, 0xFF, Filing.UNKNOWN_USER),
        (2, None, Filing.RESIDENT),  # the reading names no user
    ],
)
def test_filing_by_user_id(configured: int | None, sent: int | None, expected: Filing) -> None:
    assert filing_of(_device(configured), _bp(sent)) is expected


def test_the_clock_offset_applies_only_to_stamps_on_the_clock_read() -> None:
    read_at = START + timedelta(hours=1)
    device_now = datetime(2000, 1, 1, 0, 10)  # noqa: DTZ001 - device time is local without a zone
    finding = ClockFinding(device_now - read_at.replace(tzinfo=None), device_now, read_at, timedelta(seconds=2))
    assert finding.offset_for(datetime(2000, 1, 1, 0, 5), read_at) == finding.offset  # noqa: DTZ001
    assert finding.offset_for(datetime(2024, 3, 4, 6, 0), read_at) is None  # noqa: DTZ001 - before the reset
    assert finding.offset_for(None, read_at) is None
    # A stamp made after the read on the same clock is still on it; one far past it is from the clock the hub set.
    later = read_at + timedelta(minutes=3)
    assert finding.offset_for(device_now + timedelta(minutes=3), later) == finding.offset
    assert finding.offset_for(later.replace(tzinfo=None), later) is None
    # Followed by an earlier stamp: the clock was reset after this reading.
    stamp = datetime(2000, 1, 1, 0, 8)  # noqa: DTZ001
    assert finding.offset_for(stamp, read_at, [datetime(2000, 1, 1, 0, 1)]) is None  # noqa: DTZ001
    assert finding.offset_for(stamp, read_at, [datetime(2000, 1, 1, 0, 9)]) == finding.offset  # noqa: DTZ001


def _progress(start: int, *seen: Any) -> RacpProgress:
    progress = RacpProgress("racp:x", start)
    for sequence in seen:
        progress.saw(sequence)
    return progress


def test_the_racp_cursor_stops_at_a_gap_until_the_meter_says_it_is_done() -> None:
    progress = _progress(3, 3, 4, 6, 7)  # record 5 was lost on the way (notifications are not confirmed)
    assert progress.take_cursor() == ("racp:x", 5)
    assert progress.take_cursor() is None  # unchanged since the last commit
    progress.saw(5)
    assert progress.take_cursor() == ("racp:x", 8)
    done = _progress(0, 0, 1, 4)  # 2 and 3 deleted on the meter: its success response says there is nothing else
    assert done.take_cursor() == ("racp:x", 2)
    done.complete()
    assert done.take_cursor() == ("racp:x", 5)
    assert _progress(5, 2, "x", None).take_cursor() is None  # records not asked for move nothing


@given(
    start=st.integers(0, 50),
    present=st.sets(st.integers(0, 120), max_size=60),
    lost=st.sets(st.integers(0, 120), max_size=10),
    batch=st.integers(1, 8),
    complete=st.booleans(),
)
def test_the_racp_cursor_never_passes_a_record_that_did_not_arrive(
    start: int, present: set[int], lost: set[int], batch: int, complete: bool
) -> None:
    """Records >= start come in ascending order, some lost on the way, committed in batches: every cursor committed
    is non-decreasing, and below it lies no record that was asked for and lost, until the meter says it is done."""
    asked = sorted(n for n in present if n >= start)
    arrived = [n for n in asked if n not in lost]
    progress = RacpProgress("k", start)
    committed: list[int] = []
    for first in range(0, len(arrived), batch):
        for sequence in arrived[first : first + batch]:
            progress.saw(sequence)
        cursor = progress.take_cursor()
        if cursor is not None:
            committed.append(cursor[1])
    if complete:
        progress.complete()
        cursor = progress.take_cursor()
        if cursor is not None:
            committed.append(cursor[1])
    assert committed == sorted(set(committed))
    if committed:
        assert committed[-1] <= max(arrived) + 1
        if not complete:
            missing = [n for n in asked if n not in arrived and arrived[0] <= n < committed[-1]]
            assert missing == []
    if complete and arrived:
        assert committed[-1] == max(arrived) + 1


@given(
    drift_s=st.integers(-40 * 365 * 86400, 40 * 365 * 86400),
    age_s=st.integers(0, 5 * 365 * 86400),
    since_read_s=st.integers(-3600, 3600),
)
def test_a_stamp_made_on_the_clock_read_is_corrected_to_when_it_was_made(
    drift_s: int, age_s: int, since_read_s: int
) -> None:
    """A reading made `age_s` before its reception on the clock the hub read (`drift_s` off) is corrected to the UTC
    moment it was made; a stamp later than the read clock could show at the reception (another clock) is left
    alone."""
    read_at = START + timedelta(days=400)
    drift = timedelta(seconds=drift_s)
    device_now = read_at.replace(tzinfo=None) + drift
    finding = ClockFinding(drift, device_now, read_at, timedelta(seconds=2))
    received = read_at + timedelta(seconds=since_read_s)
    made = received - timedelta(seconds=age_s)
    stamp = made.replace(tzinfo=None) + drift
    offset = finding.offset_for(stamp, received)
    assert offset == drift
    assert (stamp - offset).replace(tzinfo=UTC) == made
    other = stamp + timedelta(seconds=age_s + 3)  # later than the read clock showed at reception
    assert finding.offset_for(other, received) is None
