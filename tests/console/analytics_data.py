"""Real records for the console analytics tests: one simulated home's records, sealed into envelopes with a hub's
key, opened and verified as the platform does, and stored in a real SQLite platform database.

Every reading is a real GATT value (:mod:`protocols.gatt`) in a real :class:`protocols.record.Record` with the id
the hub would derive; nothing is a hand-written stored row.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import nacl.public

from community.storage import EnvelopeToStore, SqliteStorage, StoredReading
from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.envelope import MAX_RECORDS_PER_ENVELOPE, open_envelope, seal
from protocols.ieee11073 import MderFloat
from protocols.keys import HubIdentity
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    DeviceStatusBody,
    LinkState,
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

RESIDENT = "mrs-wang"


def _stamp(at: _dt.datetime) -> DateTime:
    return DateTime(at.year, at.month, at.day, at.hour, at.minute, at.second)


class Home:
    """One hub's records, numbered as the hub numbers them."""

    def __init__(self, hub_id: str = "hub-wang", resident: str = RESIDENT, zone: str = "Asia/Shanghai") -> None:
        self.hub_id = hub_id
        self.resident = resident
        self.zone = ZoneInfo(zone)
        self.records: list[Record] = []
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _measurement(
        self,
        device: str,
        m: gatt.Measurement,
        at: _dt.datetime,
        *,
        device_time: str | None,
        unreliable: bool = False,
        resident: str | None = "",
        sequence: int | None = None,
    ) -> Record:
        raw = bytes(m)
        who = self.resident if resident == "" else resident
        record = Record(
            record_id=measurement_record_id(device, m.UUID, raw, sequence, device_time, at),
            hub_id=self.hub_id,
            seq=self._next(),
            hub_time=at,
            body=MeasurementBody(m.UUID, raw, m.as_dict(), resident_id=who, unreliable=unreliable),
            device_id=device,
            device_time=device_time,
        )
        self.records.append(record)
        return record

    def bp(
        self,
        at: _dt.datetime,
        systolic: int,
        diastolic: int,
        pulse: int | None = 70,
        *,
        device: str = "bp-1",
        unreliable: bool = False,
        resident: str | None = "",
        stamped: _dt.datetime | None = None,
    ) -> Record:
        """A cuff reading received at ``at``; ``stamped``: the cuff's own local time stamp, if it sent one."""
        m = gatt.BloodPressureMeasurement(
            MderFloat(systolic),
            MderFloat(diastolic),
            MderFloat(round((systolic + 2 * diastolic) / 3)),
            timestamp=None if stamped is None else _stamp(stamped),
            pulse_rate=None if pulse is None else MderFloat(pulse),
        )
        device_time = None if stamped is None else _stamp(stamped).iso()
        return self._measurement(device, m, at, device_time=device_time, unreliable=unreliable, resident=resident)

    def glucose(
        self,
        at: _dt.datetime,
        mg_dl: int,
        sequence: int,
        meal: gatt.Meal | None = None,
        *,
        device: str = "glucose-1",
        unreliable: bool = False,
        offset_min: int | None = None,
    ) -> Record:
        """A glucose reading (kg/L on the wire: ``mg_dl`` x 1e-5) and, with ``meal``, its context record; the meter
        stamps it with the home's local time (as a base time and ``offset_min``, if given)."""
        stamp = _stamp(at.astimezone(self.zone) - _dt.timedelta(minutes=offset_min or 0))
        m = gatt.GlucoseMeasurement(
            sequence,
            stamp,
            time_offset=offset_min,
            concentration=MderFloat(mg_dl, -5),
            unit=gatt.GlucoseUnit.KG_PER_L,
            type=gatt.GlucoseType.CAPILLARY_WHOLE_BLOOD,
            sample_location=gatt.SampleLocation.FINGER,
            context_follows=meal is not None,
        )
        record = self._measurement(device, m, at, device_time=stamp.iso(), unreliable=unreliable, sequence=sequence)
        if meal is not None:
            context = gatt.GlucoseMeasurementContext(sequence, meal=meal)
            self._measurement(device, context, at, device_time=None, sequence=sequence)
        return record

    def spo2(self, at: _dt.datetime, percent: int, pulse: int = 72, *, device: str = "oxi-1") -> Record:
        """An oximeter spot check."""
        m = gatt.PlxSpotCheckMeasurement(MderFloat(percent), MderFloat(pulse))
        return self._measurement(device, m, at, device_time=None)

    def temperature(self, at: _dt.datetime, tenths_c: int, *, device: str = "thermo-1") -> Record:
        """A thermometer reading, ``tenths_c`` tenths of a degree Celsius."""
        m = gatt.TemperatureMeasurement(MderFloat(tenths_c, -1), gatt.TemperatureUnit.CELSIUS)
        return self._measurement(device, m, at, device_time=None)

    def weight(self, at: _dt.datetime, kg: float, *, device: str = "scale-1") -> Record:
        """A scale reading (SI resolution 0.005 kg)."""
        m = gatt.WeightMeasurement(round(kg / 0.005))
        return self._measurement(device, m, at, device_time=None)

    def heart_rate(self, at: _dt.datetime, bpm: int, *, device: str = "hr-1") -> Record:
        """A heart-rate band reading."""
        m = gatt.HeartRateMeasurement(bpm, sensor_contact=True)
        return self._measurement(device, m, at, device_time=None)

    def alarm(  # noqa: PLR0917 - every field of an alarm step, in record order
        self,
        at: _dt.datetime,
        alarm_id: str,
        state: AlarmState,
        revision: int,
        tier: AlarmTier = AlarmTier.CRITICAL,
        condition: str = "bp.high",
        value: float | None = None,
        threshold: float | None = None,
        resident: str | None = "",
    ) -> Record:
        """One step of an alarm of the resident's."""
        who = self.resident if resident == "" else resident
        record = Record(
            record_id=alarm_record_id(self.hub_id, alarm_id, state, revision),
            hub_id=self.hub_id,
            seq=self._next(),
            hub_time=at,
            body=AlarmBody(alarm_id, condition, tier, state, revision, "message", (), value, threshold, who),
        )
        self.records.append(record)
        return record

    def panic(
        self, at: _dt.datetime, counter: int, alarm_id: str, *, pendant: str = "pendant-1", battery: int | None = 80
    ) -> Record:
        """A pendant press that raised ``alarm_id``."""
        record = Record(
            record_id=panic_record_id(pendant, counter, PanicEventType.PRESS),
            hub_id=self.hub_id,
            seq=self._next(),
            hub_time=at,
            body=PanicBody(pendant, PanicEventType.PRESS, counter, battery=battery, alarm_id=alarm_id),
            device_id=pendant,
        )
        self.records.append(record)
        return record

    def status(
        self, at: _dt.datetime, device: str, *, battery: int | None = None, link: LinkState | None = None
    ) -> Record:
        """A device status record."""
        seq = self._next()
        record = Record(
            record_id=status_record_id(self.hub_id, RecordKind.DEVICE_STATUS, seq),
            hub_id=self.hub_id,
            seq=seq,
            hub_time=at,
            body=DeviceStatusBody(battery=battery, link=link),
            device_id=device,
        )
        self.records.append(record)
        return record


async def store(db: Path, homes: Sequence[Home], received_at: float = 1.7e9) -> list[StoredReading]:
    """Seal every home's records into envelopes, open and verify them as the platform does, store them in the
    SQLite platform database ``db`` and read every stored reading back."""
    platform = nacl.public.PrivateKey.generate()
    batches: list[EnvelopeToStore] = []
    keys = {}
    for home in homes:
        identity = HubIdentity.generate(home.hub_id)
        keys[home.hub_id] = identity.verify_key
        for n, start in enumerate(range(0, len(home.records), MAX_RECORDS_PER_ENVELOPE)):
            chunk = [r.to_cbor() for r in home.records[start : start + MAX_RECORDS_PER_ENVELOPE]]
            sealed = seal(identity, platform.public_key, n + 1, _dt.datetime.now(_dt.UTC), chunk)
            opened = open_envelope(sealed, platform, keys, expected_hub=home.hub_id)
            batches.append(EnvelopeToStore.from_opened(opened, received_at))
    async with SqliteStorage(db) as storage:
        await storage.store_batch(batches)
        return await storage.readings()
