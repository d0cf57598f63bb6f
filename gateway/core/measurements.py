"""A meter reading -> its measurement record and the rule engine's observation (``docs/protocol.md`` §3.1, §3.7).

:func:`measure` decodes one :class:`gateway.events.Reading`, anchors its stable id (invariant 2: the meter's
sequence number, else its own timestamp, else the hub's receive time), corrects a wrong device clock with the
session's offset, and returns the routine-lane :class:`~gateway.core.sealer.Draft` with the
:class:`~gateway.rules.Observation` the rules judge (``None`` for a value with no vital sign). Pure: the caller
judges, shows and commits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.config import DeviceConfig
from gateway.core.sealer import Draft
from gateway.events import Reading
from gateway.outbox_rows import Lane
from gateway.rules import Observation, Vital
from protocols import gatt
from protocols.record import MeasurementBody, measurement_record_id

__all__ = ["Measured", "measure", "observation_of"]


@dataclass(frozen=True, slots=True)
class Measured:
    """A decoded reading: its record draft (with its stable id) and what the rules should judge."""

    draft: Draft
    record_id: bytes
    observation: Observation | None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def observation_of(
    device: DeviceConfig, measurement: gatt.Measurement, record_id: str, at: datetime
) -> Observation | None:
    """The rule engine's view of a decoded measurement, in canonical units; None for what has no vital sign."""
    values: dict[Vital, float] = {}
    unreliable = False

    def put(vital: Vital, value: float | None) -> None:
        v = _finite(value)
        if v is not None:
            values[vital] = v

    match measurement:
        case gatt.BloodPressureMeasurement():
            put(Vital.SYSTOLIC, measurement.systolic_mmhg)
            put(Vital.DIASTOLIC, measurement.diastolic_mmhg)
            put(Vital.MEAN_ARTERIAL, measurement.mean_arterial_mmhg)
            put(Vital.PULSE, measurement.pulse_rate_bpm)
            # Body movement, cuff too loose or improper position: the cuff says the reading is not trustworthy.
            status = measurement.measurement_status or 0
            unreliable = bool(status & (0x01 | 0x02 | 0x20))
        case gatt.GlucoseMeasurement():
            put(Vital.GLUCOSE, measurement.mg_dl)
            unreliable = bool(measurement.out_of_device_range) or bool(
                (measurement.sensor_status or 0) & ~0x0001  # anything but "battery low" makes the value doubtful
            )
        case gatt.PlxSpotCheckMeasurement() | gatt.PlxContinuousMeasurement():
            put(Vital.SPO2, measurement.spo2_percent)
            put(Vital.PULSE, measurement.pulse_bpm)
            unreliable = measurement.is_unreliable
        case gatt.TemperatureMeasurement():
            put(Vital.TEMPERATURE, measurement.celsius)
        case gatt.WeightMeasurement():
            put(Vital.WEIGHT, measurement.kg)
        case gatt.HeartRateMeasurement():
            put(Vital.PULSE, measurement.bpm)
            unreliable = bool(measurement.skin_contact_lost)
        case _:
            return None
    if not values and not unreliable:
        return None
    return Observation(
        resident=device.resident,
        device=device.address,
        kind=device.kind,
        record_id=record_id,
        at=at,
        values=values,
        unreliable=unreliable,
    )


def measure(reading: Reading, now: datetime) -> Measured:
    """Decode ``reading`` into its record draft (made at hub time ``now``) and observation.

    Raises:
        DecodeError: the value does not decode (the caller records it as the device's misbehaviour).
    """
    measurement = gatt.decode(reading.uuid, reading.data)
    values = measurement.as_dict()
    device_dt = getattr(measurement, "device_time", None)
    stamp = values.get("timestamp") or values.get("base_time")
    device_time = stamp if isinstance(stamp, str) else None
    corrected: datetime | None = None
    if reading.clock_offset is not None and isinstance(device_dt, datetime):
        corrected = (device_dt - reading.clock_offset).replace(tzinfo=UTC)
    sequence = values.get("sequence_number")
    record_id = measurement_record_id(
        reading.device.address,
        reading.uuid,
        reading.data,
        sequence if isinstance(sequence, int) else None,
        device_time,
        reading.received_at,
    )
    observation = observation_of(reading.device, measurement, record_id.hex(), corrected or reading.received_at)
    body = MeasurementBody(
        uuid=reading.uuid,
        raw=reading.data,
        values=values,
        resident_id=reading.device.resident,
        clock_corrected=corrected is not None,
        corrected_time=corrected,
        unreliable=bool(observation and observation.unreliable),
    )
    draft = Draft(body, Lane.ROUTINE, now, record_id, reading.device.address, device_time)
    return Measured(draft, record_id, observation)
