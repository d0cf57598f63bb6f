"""Real records for the FHIR tests: GATT values encoded by :mod:`protocols.gatt` in :class:`protocols.record.Record`\\ s
with the ids the hub derives, stored as the platform stores them (:meth:`StoredReading.from_record`, or through a real
SQLite database with ``analytics_data.store`` of tests/console), and a validator that parses every resource with
``fhir.resources``' R4B models."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from community.storage import StoredReading
from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.ieee11073 import MderFloat
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    Record,
    alarm_record_id,
    measurement_record_id,
    panic_record_id,
)

T0 = _dt.datetime(2026, 3, 2, 1, 0, tzinfo=_dt.UTC)


def validate(resource: Mapping[str, Any]) -> None:
    """Parse ``resource`` (after a JSON round trip) with its ``fhir.resources`` R4B model; raises if invalid."""
    data = json.loads(json.dumps(resource))
    model = get_fhir_model_class(data["resourceType"])
    model.model_validate(data)


def measurement_record(
    m: gatt.Measurement,
    at: _dt.datetime,
    *,
    hub: str = "hub-wang",
    seq: int = 1,
    device: str = "dev-1",
    resident: str | None = "mrs-wang",
    unreliable: bool = False,
) -> Record:
    """The record the hub makes of ``m`` received at ``at`` (the meter's time stamp, if any, as device time)."""
    raw = bytes(m)
    stamp = getattr(m, "timestamp", None) or getattr(m, "base_time", None)
    device_time = stamp.iso() if isinstance(stamp, DateTime) else None
    return Record(
        record_id=measurement_record_id(device, m.UUID, raw, None, device_time, at),
        hub_id=hub,
        seq=seq,
        hub_time=at,
        body=MeasurementBody(m.UUID, raw, m.as_dict(), resident_id=resident, unreliable=unreliable),
        device_id=device,
        device_time=device_time,
    )


def stored(record: Record) -> StoredReading:
    """``record`` as the platform stores it."""
    return StoredReading.from_record(record, 1, 1.7e9)


class Day:
    """One home's day: a reading of every kind of meter, a panic call and its alarm steps."""

    def __init__(self, hub: str = "hub-wang", resident: str = "mrs-wang") -> None:
        self.hub_id = hub
        self.resident = resident
        self.records: list[Record] = []

    def _add(self, record: Record) -> Record:
        self.records.append(record)
        return record

    def measurement(self, m: gatt.Measurement, minutes: int, device: str) -> Record:
        at = T0 + _dt.timedelta(minutes=minutes)
        return self._add(
            measurement_record(m, at, hub=self.hub_id, seq=len(self.records) + 1, device=device, resident=self.resident)
        )

    def every_meter(self, minutes: int = 0) -> None:
        """One reading of each kind of meter (and a glucose context record)."""
        stamp = DateTime(2026, 3, 2, 9, minutes % 60, 0)
        self.measurement(
            gatt.BloodPressureMeasurement(
                MderFloat(142), MderFloat(91), MderFloat(108), timestamp=stamp, pulse_rate=MderFloat(71)
            ),
            minutes,
            "bp-1",
        )
        self.measurement(
            gatt.GlucoseMeasurement(
                7 + minutes,
                stamp,
                concentration=MderFloat(112, -5),
                unit=gatt.GlucoseUnit.KG_PER_L,
                type=gatt.GlucoseType.CAPILLARY_WHOLE_BLOOD,
                sample_location=gatt.SampleLocation.FINGER,
                context_follows=True,
            ),
            minutes + 1,
            "glucose-1",
        )
        self.measurement(
            gatt.GlucoseMeasurementContext(7 + minutes, meal=gatt.Meal.PREPRANDIAL), minutes + 1, "glucose-1"
        )
        self.measurement(gatt.PlxSpotCheckMeasurement(MderFloat(96), MderFloat(74)), minutes + 2, "oxi-1")
        self.measurement(
            gatt.TemperatureMeasurement(MderFloat(368, -1), gatt.TemperatureUnit.CELSIUS), minutes + 3, "thermo-1"
        )
        self.measurement(gatt.WeightMeasurement.of(61.5, gatt.WeightUnit.SI), minutes + 4, "scale-1")
        self.measurement(gatt.HeartRateMeasurement(68, sensor_contact=True), minutes + 5, "hr-1")

    def panic(self, minutes: int, alarm_id: str, *, answered_after: int | None, counter: int = 1) -> None:
        """A pendant press raising ``alarm_id`` and its alarm steps (acknowledged ``answered_after`` minutes on)."""
        at = T0 + _dt.timedelta(minutes=minutes)
        self._add(
            Record(
                record_id=panic_record_id("pendant-1", counter, PanicEventType.PRESS),
                hub_id=self.hub_id,
                seq=len(self.records) + 1,
                hub_time=at,
                body=PanicBody("pendant-1", PanicEventType.PRESS, counter, battery=80, alarm_id=alarm_id),
                device_id="pendant-1",
            )
        )
        steps = [(AlarmState.RAISED, 0, at)]
        if answered_after is not None:
            steps.append((AlarmState.ACKNOWLEDGED, 1, at + _dt.timedelta(minutes=answered_after)))
        for state, revision, when in steps:
            body = AlarmBody(
                alarm_id, "panic", AlarmTier.CRITICAL, state, revision, "Help is coming.", (), None, None, self.resident
            )
            self._add(
                Record(
                    record_id=alarm_record_id(self.hub_id, alarm_id, state, revision),
                    hub_id=self.hub_id,
                    seq=len(self.records) + 1,
                    hub_time=when,
                    body=body,
                    device_id="pendant-1",
                )
            )


def all_resources(resources: Mapping[str, Iterable[Mapping[str, Any]]]) -> list[Mapping[str, Any]]:
    """Every resource of an export, flat."""
    return [r for group in resources.values() for r in group]
