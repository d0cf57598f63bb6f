"""Issue 16 item 2 in the hub's measurement core: a reading taken during ``carehub provision test`` is recorded with
``installation_test`` and gives the rules nothing to judge; the same reading outside the test is judged as ever, and
both have the same record id (the mark says what the reading was, not which reading it is)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DeviceConfig, DeviceKind
from gateway.core.measurements import installation_test_event, measure, raw_reading
from gateway.events import Reading
from gateway.observations import Vital
from gateway.outbox_rows import Lane
from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.errors import DecodeError
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.record import MeasurementBody, PanicBody, PanicEventType, RawReadingBody, Record, panic_record_id

CUFF = DeviceConfig("C0:00:00:00:01:01", DeviceKind.BLOOD_PRESSURE, "r1", None, None, None)
METER = DeviceConfig("C0:00:00:00:01:02", DeviceKind.GLUCOSE, "r1", None, None, None)
AT = dt.datetime(2026, 3, 14, 9, 26, 53, tzinfo=dt.UTC)


@given(systolic=st.integers(60, 250), diastolic=st.integers(40, 140))
def test_a_test_reading_is_marked_and_never_judged(systolic: int, diastolic: int) -> None:
    raw = bytes(BloodPressureMeasurement(MderFloat(systolic), MderFloat(diastolic), MderFloat(100)))
    reading = Reading(CUFF, BloodPressureMeasurement.UUID, raw, AT)
    real, test = measure(reading), measure(reading, installation_test=True)
    assert real.observation is not None
    assert real.observation.values[Vital.SYSTOLIC] == systolic
    assert test.observation is None
    assert isinstance(real.draft.body, MeasurementBody)
    assert isinstance(test.draft.body, MeasurementBody)
    assert not real.draft.body.installation_test
    assert test.draft.body.installation_test
    assert test.record_id == real.record_id
    assert test.draft.body.resident_id == "r1"  # filed as ever: the resident's kit, tested


def test_the_control_solution_strip_of_the_test_is_marked_and_unreliable() -> None:
    strip = gatt.GlucoseMeasurement(
        7,
        DateTime(2026, 3, 14, 9, 20, 0),
        concentration=MderFloat(110, -5),
        type=gatt.GlucoseType.CONTROL_SOLUTION,
        sample_location=gatt.SampleLocation.CONTROL_SOLUTION,
    )
    measured = measure(Reading(METER, gatt.GlucoseMeasurement.UUID, bytes(strip), AT), installation_test=True)
    assert measured.observation is None
    body = measured.draft.body
    assert isinstance(body, MeasurementBody)
    assert body.installation_test
    assert body.unreliable


def test_an_undecodable_test_reading_is_kept_marked() -> None:
    raw = bytes.fromhex("1e7800500060000000")
    reading = Reading(CUFF, BloodPressureMeasurement.UUID, raw, AT)
    try:
        gatt.decode_tolerant(reading.uuid, raw)
    except DecodeError as exc:
        error = exc
    draft = raw_reading(reading, error, installation_test=True)
    assert isinstance(draft.body, RawReadingBody)
    assert draft.body.installation_test
    assert not raw_reading(reading, error).body.installation_test  # type: ignore[union-attr]


@given(kind=st.sampled_from(PanicEventType), counter=st.integers(0, 2**32 - 1), battery=st.none() | st.integers(0, 100))
def test_a_test_press_is_a_marked_panic_record_with_no_alarm(
    kind: PanicEventType, counter: int, battery: int | None
) -> None:
    draft = installation_test_event("C0:00:00:00:00:0A", kind, counter, battery, AT)
    assert draft.lane is Lane.PRIORITY
    assert draft.record_id == panic_record_id("C0:00:00:00:00:0A", counter, kind)
    body = draft.body
    assert isinstance(body, PanicBody)
    assert body.installation_test
    assert body.alarm_id is None
    assert draft.record_id is not None
    record = Record(draft.record_id, "home-1", 1, draft.hub_time, body, draft.device)
    assert Record.from_cbor(record.to_cbor()).installation_test
