"""Sample protocol v1 records for tests, benchmarks and demos of the uplink and the platform.

Every record is a real :class:`protocols.record.Record` with the id the hub would derive for it; measurement records
carry a real Blood Pressure Measurement (0x2A35) value, encoded by :mod:`protocols.gatt`, and its ``as_dict()``.
The values are made up (a plausible morning series), not clinical reference data.
"""

from __future__ import annotations

import datetime as _dt
from typing import Final

from protocols.datetime_ import DateTime
from protocols.gatt import BloodPressureMeasurement
from protocols.ieee11073 import MderFloat
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    EvictionBody,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    Record,
    RecordKind,
    alarm_record_id,
    measurement_record_id,
    panic_record_id,
    status_record_id,
)

__all__ = ["T0", "alarm_record", "bp_measurement", "bp_record", "eviction_record", "panic_record"]

T0: Final = _dt.datetime(2025, 3, 1, 7, 0, tzinfo=_dt.UTC)
"""The hub time of sample 0; sample ``n`` is ``n`` minutes later."""
_BP_UUID: Final = BloodPressureMeasurement.UUID


def bp_measurement(n: int) -> BloodPressureMeasurement:
    """The ``n``-th sample blood-pressure reading, time-stamped by the meter ``n`` minutes after 07:00."""
    at = T0 + _dt.timedelta(minutes=n)
    return BloodPressureMeasurement(
        MderFloat(110 + n % 40),
        MderFloat(70 + n % 20),
        MderFloat(85 + n % 25),
        timestamp=DateTime(at.year, at.month, at.day, at.hour, at.minute, at.second),
        pulse_rate=MderFloat(60 + n % 30),
    )


def bp_record(hub_id: str, n: int, *, device: str = "bp-1", seq: int | None = None) -> Record:
    """A measurement record of :func:`bp_measurement` ``n`` as the hub makes it (record seq ``seq`` or ``n``)."""
    reading = bp_measurement(n)
    raw = bytes(reading)
    device_time = None if reading.timestamp is None else reading.timestamp.iso()
    hub_time = T0 + _dt.timedelta(minutes=n, seconds=2)
    return Record(
        record_id=measurement_record_id(device, _BP_UUID, raw, None, device_time, hub_time),
        hub_id=hub_id,
        seq=n if seq is None else seq,
        hub_time=hub_time,
        body=MeasurementBody(_BP_UUID, raw, reading.as_dict(), resident_id="resident-1"),
        device_id=device,
        device_time=device_time,
    )


def alarm_record(hub_id: str, alarm_id: str, seq: int) -> Record:
    """A raised critical blood-pressure alarm (revision 0)."""
    return Record(
        record_id=alarm_record_id(hub_id, alarm_id, AlarmState.RAISED, 0),
        hub_id=hub_id,
        seq=seq,
        hub_time=T0 + _dt.timedelta(seconds=seq),
        body=AlarmBody(
            alarm_id=alarm_id,
            condition="bp.systolic.critical",
            tier=AlarmTier.CRITICAL,
            state=AlarmState.RAISED,
            revision=0,
            message="Your blood pressure is very high. Please sit down; help is being called.",
            value=190,
            threshold=180,
            resident_id="resident-1",
        ),
    )


def panic_record(hub_id: str, pendant_id: str, counter: int, alarm_id: str, seq: int) -> Record:
    """A pendant button press that raised alarm ``alarm_id``."""
    return Record(
        record_id=panic_record_id(pendant_id, counter, PanicEventType.PRESS),
        hub_id=hub_id,
        seq=seq,
        hub_time=T0 + _dt.timedelta(seconds=seq),
        body=PanicBody(pendant_id, PanicEventType.PRESS, counter, battery=87, alarm_id=alarm_id),
        device_id=pendant_id,
    )


def eviction_record(  # noqa: PLR0917 - mirrors the fields of an eviction report in order
    hub_id: str,
    seq: int,
    count: int,
    first_seq: int,
    last_seq: int,
    bytes_freed: int,
    evicted_record_ids: tuple[str, ...] = (),
) -> Record:
    """An eviction report; ``evicted_record_ids`` are hex record ids, oldest first."""
    ids = [bytes.fromhex(r) for r in evicted_record_ids]
    return Record(
        record_id=status_record_id(hub_id, RecordKind.EVICTION, seq),
        hub_id=hub_id,
        seq=seq,
        hub_time=T0 + _dt.timedelta(seconds=seq),
        body=EvictionBody(count, first_seq, last_seq, bytes_freed, ids[0] if ids else None, ids[-1] if ids else None),
    )
