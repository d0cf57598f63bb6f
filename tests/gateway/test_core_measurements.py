"""A measurement record's time and id (``docs/protocol.md`` §3, §3.7): ``hub_time`` is when the hub received the
reading, so a platform recomputes every measurement id from the record alone, including a reading with neither a
sequence number nor a device timestamp, whose id is made from that receive time."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import DeviceConfig, DeviceKind
from gateway.core.measurements import measure
from gateway.events import Reading
from protocols.datetime_ import DateTime
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.record import MeasurementBody, measurement_record_id

CUFF = DeviceConfig("C0:00:00:00:01:01", DeviceKind.BLOOD_PRESSURE, "r1", None, None, None)
# hypothesis bounds are naive; the times drawn are aware (UTC).
received_times = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=dt.datetime(2099, 12, 31),  # noqa: DTZ001
    timezones=st.just(dt.UTC),
)


@given(received=received_times, systolic=st.integers(60, 250), stamped=st.booleans())
def test_a_measurements_hub_time_is_its_receive_time_and_its_id_recomputes(
    received: dt.datetime, systolic: int, stamped: bool
) -> None:
    stamp = DateTime(2026, 3, 14, 9, 20, 0) if stamped else None
    raw = bytes(BloodPressureMeasurement(MderFloat(systolic), MderFloat(80), MderFloat(95), timestamp=stamp))
    measured = measure(Reading(CUFF, BloodPressureMeasurement.UUID, raw, received))
    draft = measured.draft
    assert draft.hub_time == received
    assert isinstance(draft.body, MeasurementBody)
    device_time = "2026-03-14T09:20:00" if stamped else None
    assert draft.device_time == device_time
    recomputed = measurement_record_id(CUFF.address, draft.body.uuid, draft.body.raw, None, device_time, draft.hub_time)
    assert draft.record_id == recomputed
