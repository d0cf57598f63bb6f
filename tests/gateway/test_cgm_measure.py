"""A CGM reading becomes a record and an observation (issue 14 item 7): its time is the session start the hub worked
out from CGM Status plus the record's time offset; its id is anchored on that offset (a redelivered record is the
same record); a doubtful sensor status makes it unreliable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import DeviceConfig, DeviceKind
from gateway.core.measurements import measure
from gateway.events import Reading
from gateway.observations import Vital
from protocols.gatt.cgm import CgmAnnunciation, CgmMeasurement, CgmRecord
from protocols.ieee11073 import NAN, NRES, POS_INF, MderFloat
from protocols.record import MeasurementBody

SENSOR = DeviceConfig("C0:47:00:00:00:01", DeviceKind.CGM, "r1", None, None, None)
T = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
START = T - timedelta(hours=3)


def test_a_record_is_taken_its_offset_after_the_session_start() -> None:
    raw = bytes(CgmMeasurement.of(52, 95, e2e_crc=True))
    measured = measure(Reading(SENSOR, 0x2AA7, raw, T, None, START))
    assert measured.observation is not None
    assert measured.observation.at == START + timedelta(minutes=95)
    assert dict(measured.observation.values) == {Vital.CGM_GLUCOSE: 52.0}
    body = measured.draft.body
    assert isinstance(body, MeasurementBody)
    assert body.corrected_time == START + timedelta(minutes=95)
    assert body.clock_corrected


def test_without_a_session_start_the_receive_time_stands() -> None:
    measured = measure(Reading(SENSOR, 0x2AA7, bytes(CgmMeasurement.of(110, 5)), T))
    assert measured.observation is not None
    assert measured.observation.at == T


def test_the_id_is_anchored_on_the_time_offset() -> None:
    raw = bytes(CgmMeasurement.of(110, 5))
    first = measure(Reading(SENSOR, 0x2AA7, raw, T, None, START))
    again = measure(Reading(SENSOR, 0x2AA7, raw, T + timedelta(hours=1)))  # read again through the RACP later
    assert first.record_id == again.record_id
    other = measure(Reading(SENSOR, 0x2AA7, bytes(CgmMeasurement.of(110, 10)), T))
    assert other.record_id != first.record_id


def test_a_malfunctioning_sensor_is_unreliable() -> None:
    raw = bytes(CgmMeasurement.of(40, 5, status=int(CgmAnnunciation.SENSOR_MALFUNCTION)))
    measured = measure(Reading(SENSOR, 0x2AA7, raw, T))
    assert measured.observation is not None
    assert measured.observation.unreliable


_octet = st.one_of(st.none(), st.integers(0, 255))
_records = st.builds(
    CgmRecord,
    glucose=st.one_of(
        st.builds(MderFloat, st.integers(-2045, 2045), st.integers(-2, 1)), st.sampled_from([NAN, NRES, POS_INF])
    ),
    time_offset=st.integers(0, 0xFFFF),
    warning=_octet,
    cal_temp=_octet,
    status=_octet,
    e2e_crc=st.booleans(),
)
cgm_measurement = st.lists(_records, min_size=1, max_size=3).map(lambda rs: CgmMeasurement(tuple(rs)))


@settings(max_examples=200, deadline=None)
@given(m=cgm_measurement, minutes=st.integers(0, 60 * 24 * 15))
def test_any_cgm_value_becomes_a_record_and_at_most_a_finite_observation(m: CgmMeasurement, minutes: int) -> None:
    start = T - timedelta(minutes=minutes)
    measured = measure(Reading(SENSOR, 0x2AA7, bytes(m), T, None, start))
    body = measured.draft.body
    assert isinstance(body, MeasurementBody)
    assert body.corrected_time == start + timedelta(minutes=m.time_offset)
    if measured.observation is None:
        assert m.mg_dl is None  # nothing to judge: no finite value
        assert not m.doubtful  # and no doubt flagged
        return
    assert measured.observation.unreliable == m.doubtful
    value = measured.observation.value(Vital.CGM_GLUCOSE)
    assert value == m.mg_dl
