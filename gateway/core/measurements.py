"""A meter reading -> its measurement record and the rule engine's observation (``docs/protocol.md`` §3.1, §3.7).

:func:`measure` decodes one :class:`gateway.events.Reading`, anchors its stable id (invariant 2: the meter's
sequence number, else its own timestamp, else the hub's receive time), corrects a wrong device clock with the
session's offset, and returns the routine-lane :class:`~gateway.core.sealer.Draft` with the
:class:`~gateway.observations.Observation` the rules judge (``None`` for a value with no vital sign). Pure: the caller
judges, shows and commits.

What a reading means (issue 14 item 6, ``docs/ble.md``):

* whose it is (:func:`filing_of`): a meter provisioned with a ``user_id`` files under its resident only the readings
  stamped with that User ID; another user's readings, and those of the unknown user 0xFF, are kept unassigned
  (``resident_id`` None) and never judged. A meter provisioned without ``user_id`` files everything under its resident;
* a glucose control-solution test (type 10 or sample location 4) is kept as it was sent (``values.type``), flagged
  ``unreliable`` and never judged;
* how strictly it is read (issue 14 item 5, ``protocols.gatt.tolerant``): the hub decodes tolerantly, so padding after
  the last field and reserved flag bits are accepted, and the record names what was tolerated (``tolerated``); a
  value that does not decode even so is kept as a raw reading (:func:`raw_reading`: its bytes, device,
  characteristic and receive time), sealed and sent like any reading, never only logged;
* installation-test data (issue 16 item 2, ``docs/protocol.md`` §3.10): while ``carehub provision test`` runs the
  hub, :func:`measure` and :func:`raw_reading` mark every record ``installation_test`` and :func:`measure` returns no
  observation, so the rules never judge the installer's test reading (a cuff tried on whoever is at hand, a
  control-solution strip); :func:`installation_test_event` records a test press of the pendant without a call for help;
* which readings a session's clock offset applies to (:class:`ClockFinding`): only those stamped on the meter's
  current clock, i.e. not later than the meter's clock when the hub read it, and not followed by an earlier stamp
  (a clock reset between them). The device's own time stays on the record either way.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.config import DeviceConfig
from gateway.core.sealer import Draft
from gateway.events import Reading
from gateway.observations import Observation
from gateway.outbox_rows import Lane
from protocols import gatt
from protocols.errors import DecodeError
from protocols.profiles import profile_of_characteristic
from protocols.record import (
    MAX_RAW_BYTES,
    MeasurementBody,
    PanicBody,
    PanicEventType,
    RawReadingBody,
    measurement_record_id,
    panic_record_id,
    raw_reading_record_id,
)

__all__ = [
    "ClockFinding",
    "Filing",
    "Measured",
    "filing_of",
    "installation_test_event",
    "is_control_solution",
    "measure",
    "observation_of",
    "raw_reading",
]
_REASON_MAX = 256  # protocols.record's text limit for a raw reading's reason

#: The User ID a multi-user meter sends when it does not know who measured (BLS 1.0 / WSS 1.0 "unknown user").
UNKNOWN_USER = 0xFF
#: Glucose Type 10 and Sample Location 4 both mean "control solution" (GLS 1.0, ``/work/shared/gatt-formats.md``).
_CONTROL_TYPE = gatt.GlucoseType.CONTROL_SOLUTION
_CONTROL_LOCATION = 4


class Filing(enum.Enum):
    """Whose a reading is."""

    RESIDENT = "resident"  # the provisioned resident's
    OTHER_USER = "other_user"  # a multi-user meter's other user: kept unassigned, never judged
    UNKNOWN_USER = "unknown_user"  # User ID 0xFF on a meter provisioned for one user: kept unassigned, never judged


def filing_of(device: DeviceConfig, measurement: gatt.Measurement) -> Filing:
    """Whose `measurement` is: a meter provisioned with ``user_id`` files only that user's readings under its
    resident; one without files everything (a single-user meter may send no User ID, or 0xFF)."""
    if device.user_id is None:
        return Filing.RESIDENT
    user = getattr(measurement, "user_id", None)
    if not isinstance(user, int):
        return Filing.RESIDENT  # the meter names no user on this reading: it has only the one
    if user == UNKNOWN_USER:
        return Filing.UNKNOWN_USER
    return Filing.RESIDENT if user == device.user_id else Filing.OTHER_USER


def is_control_solution(measurement: gatt.Measurement) -> bool:
    """A glucose meter's control-solution test (a check of the meter and strips, not of the resident)."""
    if not isinstance(measurement, gatt.GlucoseMeasurement):
        return False
    return measurement.type == _CONTROL_TYPE or measurement.sample_location == _CONTROL_LOCATION


@dataclass(frozen=True, slots=True)
class ClockFinding:
    """What a session learnt of a meter's clock: its offset, and which readings were stamped on that clock.

    Attributes:
        offset: the meter's clock (local time, no zone) minus the hub's UTC time, when the hub read it: a stamp
            on that clock minus the offset is the UTC time it was made (the reading's ``clock_offset``).
        device_now: the meter's clock then (local, no zone).
        read_at: the hub's time then (UTC-aware).
        slack: how far a stamp may run past the clock the hub read (whole-second stamps, the meter's rounding).
        session_start: for a device that stamps readings relative to its session (a CGM: ``protocols.profiles``
            ``session_clock``), when that session started on the hub's clock (UTC-aware); None otherwise.
    """

    offset: timedelta
    device_now: datetime
    read_at: datetime
    slack: timedelta
    session_start: datetime | None = None

    def offset_for(
        self, device_time: datetime | None, received_at: datetime, later: Sequence[datetime] = ()
    ) -> timedelta | None:
        """The offset correcting a reading stamped `device_time` and received at hub time `received_at`; None when
        it was not made on the clock the hub read. That clock could have stamped at most ``device_now`` plus the
        time from the read to the reception: a later stamp comes from another clock (the meter's clock before a
        reset, or the clock the hub has just set). A stamp followed (`later`: the stamps of the meter's later
        readings) by an earlier one was made before a reset, on the old clock."""
        if device_time is None:
            return None
        if device_time > self.device_now + (received_at - self.read_at) + self.slack:
            return None
        if any(stamp < device_time for stamp in later):
            return None
        return self.offset


@dataclass(frozen=True, slots=True)
class Measured:
    """A decoded reading: its record draft (with its stable id) and what the rules should judge."""

    draft: Draft
    record_id: bytes
    observation: Observation | None
    tolerated: frozenset[gatt.DecodeTolerance] = frozenset()


def observation_of(
    device: DeviceConfig, measurement: gatt.Measurement, record_id: str, at: datetime
) -> Observation | None:
    """The rule engine's view of a decoded measurement, in canonical units; None for what has no vital sign."""
    if filing_of(device, measurement) is not Filing.RESIDENT or is_control_solution(measurement):
        return None  # not the resident's body: another user's reading or a check of the meter
    profile = profile_of_characteristic(measurement)
    reading = None if profile is None else profile.observe(measurement)  # the kind's own mapping (its profile)
    if reading is None:
        return None
    values, unreliable = dict(reading.values), reading.unreliable
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


def measure(reading: Reading, *, installation_test: bool = False) -> Measured:
    """Decode ``reading`` (tolerantly: ``protocols.gatt.tolerant``) into its record draft and observation.

    With ``installation_test`` (the hub is running ``carehub provision test``) the record is marked as
    installation-test data and there is no observation: nothing of it is judged.

    The record's ``hub_time`` is when the hub received the reading (``reading.received_at``), the same time a
    reading with neither sequence number nor device timestamp takes its id from (``docs/protocol.md`` §3.7), so a
    platform can recompute every measurement id from the record alone.

    Raises:
        DecodeError: the value does not decode even tolerantly (the caller keeps it with :func:`raw_reading`).
    """
    tolerated = gatt.decode_tolerant(reading.uuid, reading.data)
    measurement = tolerated.measurement
    values = measurement.as_dict()
    device_dt = getattr(measurement, "device_time", None)
    stamp = values.get("timestamp") or values.get("base_time")
    device_time = stamp if isinstance(stamp, str) else None
    corrected: datetime | None = None
    if reading.clock_offset is not None and isinstance(device_dt, datetime):
        corrected = (device_dt - reading.clock_offset).replace(tzinfo=UTC)
    session = profile_of_characteristic(measurement)
    session_clock = None if session is None else session.session_clock
    minutes = None if session_clock is None else session_clock.minutes_of(measurement)
    if reading.session_start is not None and minutes is not None:
        # A CGM record: taken its time offset after the session start the hub worked out when it connected.
        corrected = reading.session_start + timedelta(minutes=minutes)
    # The record's place in the meter's store anchors its id: a glucose meter's sequence number, a CGM's time
    # offset (its profile's record_position); else a sequence number the value itself names.
    profile = profile_of_characteristic(measurement)
    position = None if profile is None else profile.record_position(measurement)
    sequence = position if position is not None else values.get("sequence_number")
    record_id = measurement_record_id(
        reading.device.address,
        reading.uuid,
        reading.data,
        sequence if isinstance(sequence, int) else None,
        device_time,
        reading.received_at,
    )
    judged = observation_of(reading.device, measurement, record_id.hex(), corrected or reading.received_at)
    observation = None if installation_test else judged
    body = MeasurementBody(
        uuid=reading.uuid,
        raw=reading.data,
        values=values,
        resident_id=reading.device.resident if filing_of(reading.device, measurement) is Filing.RESIDENT else None,
        clock_corrected=corrected is not None,
        corrected_time=corrected,
        unreliable=bool(judged and judged.unreliable) or is_control_solution(measurement),
        tolerated=tolerated.tolerances,
        installation_test=installation_test,
    )
    draft = Draft(body, Lane.ROUTINE, reading.received_at, record_id, reading.device.address, device_time)
    return Measured(draft, record_id, observation, tolerated.tolerances)


def raw_reading(reading: Reading, error: DecodeError, *, installation_test: bool = False) -> Draft:
    """The record draft keeping a reading that does not decode: its bytes as received, the characteristic, the device
    and its resident, the receive time as ``hub_time`` and the decoder's reason. Its id derives from those
    (:func:`protocols.record.raw_reading_record_id`), so a reading replayed from the journal is stored once.
    ``installation_test`` marks it as received during ``carehub provision test``."""
    reason = " ".join(str(error).split()) or "does not decode"
    if len(reason) > _REASON_MAX:
        reason = reason[: _REASON_MAX - 1] + "…"
    raw = reading.data[:MAX_RAW_BYTES]  # a GATT value is at most 512 bytes: nothing is cut from a real one
    body = RawReadingBody(
        uuid=reading.uuid,
        raw=raw,
        reason=reason,
        resident_id=reading.device.resident,
        installation_test=installation_test,
    )
    record_id = raw_reading_record_id(reading.device.address, reading.uuid, raw, reading.received_at)
    return Draft(body, Lane.ROUTINE, reading.received_at, record_id, reading.device.address, None)


def installation_test_event(
    pendant: str, event: PanicEventType, counter: int, battery: int | None, received_at: datetime
) -> Draft:
    """A pendant event during ``carehub provision test``: a priority-lane ``panic`` record marked
    ``installation_test``, with no alarm (the installer's press is no call for help, a check-in none of the
    resident's). Its id is the event's own (:func:`protocols.record.panic_record_id`), so a re-sent frame is stored
    once."""
    body = PanicBody(pendant_id=pendant, event=event, counter=counter, battery=battery, installation_test=True)
    return Draft(body, Lane.PRIORITY, received_at, panic_record_id(pendant, counter, event), pendant)
