"""Residents seen from the console: vital signs, upload rate, open alarms, devices and the risk tier (issue 18 item 2).

Everything here is a pure function of stored readings (:class:`community.storage.StoredReading`), a care plan
(:mod:`community.console.careplan`), a threshold set (:mod:`protocols.thresholds`) and an injected ``now``; nothing
reads a clock or a database. The rules are documented, with their sources, in ``docs/risk-tiers.md``.

When a reading was taken (:func:`taken_at`): the hub's corrected time when it corrected the meter's clock; otherwise
the meter's own stamp (local time, no zone) read in the home's zone, when one is known and the stamp is plausible
(not after the hub received it plus :data:`DEVICE_TIME_SLACK`, not more than :data:`DEVICE_TIME_MAX_AGE` before);
otherwise the hub's receive time. A meter read out of its memory hours later thus keeps the time it measured.

Upload rate (:func:`upload_rate`): received ÷ scheduled measurements over a window (7 days by default, or 30). A
scheduled slot is *met* by a reading of its kind, filed under the resident and not flagged unreliable, taken within
the slot's tolerance: from :attr:`Tolerance.before` before the due time to :attr:`Tolerance.after` after it (the
hub's own reminder window by default: 4 h before, 1 h after, ``gateway.rules.ScheduleEntry`` and
``gateway.config`` ``grace_s``); a count-per-day slot is met by a reading on that local day. Each reading meets at
most one slot. A slot is counted once its tolerance has ended (``closes <= now``) and when it falls due inside the
window and after the plan started. A home under 90 % is *failing* (the community programme's rule, issue 18).
Installation-test data (:func:`is_installation_test`, ``docs/protocol.md`` §3.10): what the hub recorded during
``carehub provision test`` (the installer's cuff reading, a control-solution strip, the test press) is never one of
the resident's readings: :func:`vital_readings` leaves it out, so it is in no risk tier, upload rate, trend, latest
value or chart. A glucose control-solution test outside the installation test is flagged unreliable by the hub.
"""

from __future__ import annotations

import datetime as _dt
import enum
import itertools
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import MappingProxyType
from typing import Any, Final

from community.console.careplan import CarePlan, KindPlan, MeasurementKind
from community.storage import StoredReading
from protocols import gatt
from protocols.errors import DecodeError, UnknownCharacteristicError
from protocols.record import AlarmState, AlarmTier, LinkState, RecordKind
from protocols.thresholds import SPECS, Key, Thresholds, Tier, resolve_thresholds

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEVICE_TIME_MAX_AGE",
    "DEVICE_TIME_SLACK",
    "FAILING_BELOW",
    "PROGRAMME_DIASTOLIC_CRISIS",
    "PROGRAMME_SYSTOLIC_CRISIS",
    "DeviceRole",
    "DeviceSummary",
    "LatestVitals",
    "Level",
    "MealContext",
    "MetSlot",
    "OpenAlarm",
    "Reason",
    "ReasonKind",
    "ResidentOverview",
    "RiskAssessment",
    "RiskTier",
    "Slot",
    "Tolerance",
    "UploadRate",
    "Vital",
    "VitalReading",
    "VitalValue",
    "assess_risk",
    "combine_upload_rates",
    "devices_summary",
    "is_installation_test",
    "latest_vitals",
    "open_alarms",
    "reading_level",
    "resident_overview",
    "scheduled_slots",
    "taken_at",
    "undecodable",
    "upload_rate",
    "vital_readings",
]

DEVICE_TIME_SLACK: Final = _dt.timedelta(minutes=5)
"""A meter stamp later than the hub's receive time by more than this is not believed (its clock runs ahead)."""
DEVICE_TIME_MAX_AGE: Final = _dt.timedelta(days=90)
"""A meter stamp older than this when the hub received it is not believed (a clock reset to its factory date)."""
FAILING_BELOW: Final = Fraction(9, 10)
"""A home whose upload rate is under 90 % is failing (the community programme's rule, issue 18)."""
# thresholds.md (top): community programmes' three-stage warning model, a home reading of BP > 180/110 mmHg triggers
# immediate community-doctor intervention. Applied to every resident whatever their own thresholds.
PROGRAMME_SYSTOLIC_CRISIS: Final = 180.0
PROGRAMME_DIASTOLIC_CRISIS: Final = 110.0


# --- readings as vital signs -----------------------------------------------------------------------------------------


class Vital(enum.StrEnum):
    """A vital sign in its canonical unit (the units of :mod:`protocols.thresholds`)."""

    SYSTOLIC = "systolic"
    DIASTOLIC = "diastolic"
    PULSE = "pulse"
    GLUCOSE = "glucose"
    SPO2 = "spo2"
    TEMPERATURE = "temperature"
    WEIGHT = "weight"

    @property
    def unit(self) -> str:
        """The unit values are in."""
        return _UNITS[self]


_UNITS: Final = MappingProxyType(
    {
        Vital.SYSTOLIC: "mmHg",
        Vital.DIASTOLIC: "mmHg",
        Vital.PULSE: "bpm",
        Vital.GLUCOSE: "mg/dL",
        Vital.SPO2: "%",
        Vital.TEMPERATURE: "°C",
        Vital.WEIGHT: "kg",
    }
)


class MealContext(enum.StrEnum):
    """A glucose reading's meal context (Glucose Measurement Context 0x2A34, GLS 1.0)."""

    PREPRANDIAL = "preprandial"
    POSTPRANDIAL = "postprandial"
    FASTING = "fasting"
    CASUAL = "casual"
    BEDTIME = "bedtime"


_MEALS: Final = {
    gatt.Meal.PREPRANDIAL: MealContext.PREPRANDIAL,
    gatt.Meal.POSTPRANDIAL: MealContext.POSTPRANDIAL,
    gatt.Meal.FASTING: MealContext.FASTING,
    gatt.Meal.CASUAL: MealContext.CASUAL,
    gatt.Meal.BEDTIME: MealContext.BEDTIME,
}

# The characteristic a measurement record came from -> the kind of meter.
_SOURCES: Final = MappingProxyType(
    {
        gatt.BloodPressureMeasurement.UUID: MeasurementKind.BLOOD_PRESSURE,
        gatt.GlucoseMeasurement.UUID: MeasurementKind.GLUCOSE,
        gatt.PlxSpotCheckMeasurement.UUID: MeasurementKind.SPO2,
        gatt.PlxContinuousMeasurement.UUID: MeasurementKind.SPO2,
        gatt.TemperatureMeasurement.UUID: MeasurementKind.TEMPERATURE,
        gatt.WeightMeasurement.UUID: MeasurementKind.WEIGHT,
        gatt.HeartRateMeasurement.UUID: MeasurementKind.PULSE,
        # A continuous glucose monitor's readings are charted and counted as glucose readings (interstitial fluid,
        # mg/dL; the hub judges them with its own cgm.* thresholds, the FHIR export names the method).
        gatt.CgmMeasurement.UUID: MeasurementKind.GLUCOSE,
    }
)
# Which vital a plan kind needs a reading to carry.
_KIND_VITAL: Final = MappingProxyType(
    {
        MeasurementKind.BLOOD_PRESSURE: Vital.SYSTOLIC,
        MeasurementKind.GLUCOSE: Vital.GLUCOSE,
        MeasurementKind.SPO2: Vital.SPO2,
        MeasurementKind.TEMPERATURE: Vital.TEMPERATURE,
        MeasurementKind.WEIGHT: Vital.WEIGHT,
        MeasurementKind.PULSE: Vital.PULSE,
    }
)


@dataclass(frozen=True, slots=True)
class VitalReading:
    """One measurement record as vital signs in canonical units.

    Attributes:
        record_id: the record's id (hex).
        hub: the hub that sent it.
        device: the meter.
        resident_id: whose reading it is (``None``: the hub could not file it under a resident).
        taken_at: when it was taken, UTC (:func:`taken_at`).
        source: the kind of meter it came from.
        values: the vital signs it carries (finite numbers only).
        meal: a glucose reading's meal context, if the meter sent one.
        unreliable: the hub or the meter flagged it (movement, cuff fit, control solution...): shown, never judged
            and never counted for the upload rate.
    """

    record_id: str
    hub: str
    device: str | None
    resident_id: str | None
    taken_at: _dt.datetime
    source: MeasurementKind
    values: Mapping[Vital, float]
    meal: MealContext | None = None
    unreliable: bool = False

    def value(self, vital: Vital) -> float | None:
        """The value of ``vital``, if the reading carries it."""
        return self.values.get(vital)

    @property
    def kinds(self) -> frozenset[MeasurementKind]:
        """The plan kinds this reading can meet: its meter's kind, and ``pulse`` when it carries a pulse."""
        return frozenset(kind for kind, vital in _KIND_VITAL.items() if vital in self.values)


def _parse_time(text: object) -> _dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def taken_at(reading: StoredReading, zone: _dt.tzinfo | None = None) -> _dt.datetime:
    """When ``reading`` was taken, UTC (see the module docstring); ``zone`` is the home's time zone, if known."""
    measurement = _decode(reading) if zone is not None and _is_vital_record(reading) else None
    return _taken_at(reading, zone, measurement)


def _taken_at(reading: StoredReading, zone: _dt.tzinfo | None, measurement: gatt.Measurement | None) -> _dt.datetime:
    if reading.body.get("clock_corrected"):
        corrected = _parse_time(reading.body.get("corrected_time"))
        if corrected is not None and corrected.utcoffset() is not None:
            return corrected.astimezone(_dt.UTC)
    if zone is not None:
        # The meter's own time as the hub reads it (``device_time``: a glucose base time plus its offset, nothing
        # when the meter says its clock is not set); the record's stamp text for anything else.
        if measurement is not None and hasattr(measurement, "device_time"):
            own = measurement.device_time
            stamp = own if isinstance(own, _dt.datetime) else None
        else:
            stamp = _parse_time(reading.device_time)
        if stamp is not None and stamp.tzinfo is None:
            at = stamp.replace(tzinfo=zone).astimezone(_dt.UTC)
            if reading.hub_time - DEVICE_TIME_MAX_AGE <= at <= reading.hub_time + DEVICE_TIME_SLACK:
                return at
    return reading.hub_time.astimezone(_dt.UTC)


def _decode(reading: StoredReading) -> gatt.Measurement | None:
    body = reading.body
    uuid, raw = body.get("uuid"), body.get("raw")
    if not isinstance(uuid, int) or not isinstance(raw, str):
        return None
    try:
        # As the hub decoded it (issue 14 item 5): padding and reserved flag bits are on record as `tolerated`.
        return gatt.decode_tolerant(uuid, bytes.fromhex(raw)).measurement
    except (DecodeError, UnknownCharacteristicError, ValueError):
        return None


def _put(values: dict[Vital, float], vital: Vital, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        # Rounded as protocols.thresholds rounds conversions: no binary noise decides a reading on a threshold.
        values[vital] = round(float(value), 6)


def _vitals_of(measurement: gatt.Measurement) -> dict[Vital, float]:
    values: dict[Vital, float] = {}
    match measurement:
        case gatt.BloodPressureMeasurement():
            _put(values, Vital.SYSTOLIC, measurement.systolic_mmhg)
            _put(values, Vital.DIASTOLIC, measurement.diastolic_mmhg)
            _put(values, Vital.PULSE, measurement.pulse_rate_bpm)
        case gatt.GlucoseMeasurement():
            _put(values, Vital.GLUCOSE, measurement.mg_dl)
        case gatt.PlxSpotCheckMeasurement() | gatt.PlxContinuousMeasurement():
            _put(values, Vital.SPO2, measurement.spo2_percent)
            _put(values, Vital.PULSE, measurement.pulse_bpm)
        case gatt.TemperatureMeasurement():
            _put(values, Vital.TEMPERATURE, measurement.celsius)
        case gatt.WeightMeasurement():
            _put(values, Vital.WEIGHT, measurement.kg)
        case gatt.HeartRateMeasurement():
            _put(values, Vital.PULSE, float(measurement.bpm))
        case gatt.CgmMeasurement():
            _put(values, Vital.GLUCOSE, measurement.mg_dl)
        case _:
            pass
    return values


def _is_vital_record(reading: StoredReading) -> bool:
    return reading.kind == RecordKind.MEASUREMENT.value and reading.body.get("uuid") in _SOURCES


def is_installation_test(reading: StoredReading) -> bool:
    """Recorded during the hub's installation test (``installation_test`` on its body, ``docs/protocol.md`` §3.10):
    not the resident's data. Records stored before the mark existed have no such key and are not test data."""
    return reading.body.get("installation_test") is True


def undecodable(readings: Iterable[StoredReading]) -> tuple[str, ...]:
    """Record ids of vital-sign measurement records whose raw value does not decode (left out of every figure)."""
    return tuple(r.record_id for r in readings if _is_vital_record(r) and _decode(r) is None)


def vital_readings(
    readings: Iterable[StoredReading], zone: _dt.tzinfo | None = None, *, resident_id: str | None = None
) -> tuple[VitalReading, ...]:
    """The vital-sign readings among ``readings`` (of ``resident_id`` only, if given), by time taken.

    Glucose readings get the meal context of the Glucose Measurement Context record with the same meter and
    sequence number. Records of other kinds, readings without any vital sign, raw values that do not decode
    (:func:`undecodable`) and installation-test readings (:func:`is_installation_test`) are left out.
    """
    stored = list(readings)
    meals: dict[tuple[str, str | None, int], MealContext] = {}
    for r in stored:
        if r.kind == RecordKind.MEASUREMENT.value and r.body.get("uuid") == gatt.GlucoseMeasurementContext.UUID:
            context = _decode(r)
            if isinstance(context, gatt.GlucoseMeasurementContext) and context.meal in _MEALS:
                meals[(r.hub, r.device, context.sequence_number)] = _MEALS[gatt.Meal(context.meal)]
    out: list[VitalReading] = []
    for r in stored:
        if not _is_vital_record(r) or (resident_id is not None and r.resident_id != resident_id):
            continue
        if is_installation_test(r):
            continue
        measurement = _decode(r)
        if measurement is None:
            continue
        values = _vitals_of(measurement)
        if not values:
            continue
        meal = None
        if isinstance(measurement, gatt.GlucoseMeasurement):
            meal = meals.get((r.hub, r.device, measurement.sequence_number))
        out.append(
            VitalReading(
                record_id=r.record_id,
                hub=r.hub,
                device=r.device,
                resident_id=r.resident_id,
                taken_at=_taken_at(r, zone, measurement),
                source=_SOURCES[r.body["uuid"]],
                values=MappingProxyType(values),
                meal=meal,
                unreliable=bool(r.body.get("unreliable")),
            )
        )
    out.sort(key=lambda v: (v.taken_at, v.record_id))
    return tuple(out)


# --- upload rate -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far from its due time a reading still meets a fixed-time slot (both ends included)."""

    before: _dt.timedelta = _dt.timedelta(hours=4)
    after: _dt.timedelta = _dt.timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.before < _dt.timedelta(0) or self.after < _dt.timedelta(0):
            raise ValueError("tolerance must not be negative")


DEFAULT_TOLERANCE: Final = Tolerance()
"""The hub's own reminder window: ``gateway.rules.ScheduleEntry.window`` (4 h) before, the default ``grace_s``
(1 h, ``gateway.config``) after."""


@dataclass(frozen=True, slots=True)
class Slot:
    """One scheduled measurement.

    Attributes:
        kind: what to measure.
        day: the local day it belongs to.
        due: when it falls due (UTC): the local due time, or the start of the local day for a count-per-day slot.
        opens: the earliest time a reading meets it (UTC).
        closes: the latest (UTC); the slot is judged once this has passed.
        local_time: the due time of day; ``None`` for a count-per-day slot.
        index: 0-based number among the day's count-per-day slots of its kind (0 for fixed-time slots).
    """

    kind: MeasurementKind
    day: _dt.date
    due: _dt.datetime
    opens: _dt.datetime
    closes: _dt.datetime
    local_time: _dt.time | None = None
    index: int = 0

    @property
    def label(self) -> str:
        """``blood_pressure 2025-03-01 08:00`` or ``weight 2025-03-01 #1``."""
        when = f"{self.local_time:%H:%M}" if self.local_time is not None else f"#{self.index + 1}"
        return f"{self.kind.value} {self.day.isoformat()} {when}"


@dataclass(frozen=True, slots=True)
class MetSlot:
    """A slot and the reading that met it."""

    slot: Slot
    record_id: str
    taken_at: _dt.datetime


@dataclass(frozen=True, slots=True)
class UploadRate:
    """Received ÷ scheduled measurements of one resident (or a home, :func:`combine_upload_rates`).

    Attributes:
        resident_ids: whose slots are counted.
        window_start: the window's start (UTC).
        window_end: its end, the ``now`` it was computed at.
        met: the slots met, by due time.
        missed: the slots missed, by due time.
    """

    resident_ids: tuple[str, ...]
    window_start: _dt.datetime
    window_end: _dt.datetime
    met: tuple[MetSlot, ...]
    missed: tuple[Slot, ...]

    @property
    def scheduled(self) -> int:
        """Slots counted."""
        return len(self.met) + len(self.missed)

    @property
    def received(self) -> int:
        """Slots met."""
        return len(self.met)

    @property
    def fraction(self) -> Fraction | None:
        """Exactly received ÷ scheduled; ``None`` when nothing was scheduled."""
        return Fraction(self.received, self.scheduled) if self.scheduled else None

    @property
    def rate(self) -> float | None:
        """received ÷ scheduled in 0..1; ``None`` when nothing was scheduled."""
        fraction = self.fraction
        return None if fraction is None else float(fraction)

    @property
    def percent(self) -> float | None:
        """The rate in percent, to one decimal (13 of 14: 92.9)."""
        fraction = self.fraction
        return None if fraction is None else round(float(fraction * 100), 1)

    @property
    def failing(self) -> bool:
        """Under 90 % (nothing scheduled is not failing)."""
        fraction = self.fraction
        return fraction is not None and fraction < FAILING_BELOW


def _local(day: _dt.date, at: _dt.time, zone: _dt.tzinfo) -> _dt.datetime:
    # As the hub reads a due time (gateway.rules.RuleEngine._slot): PEP 495 fold 0 in a gap or a repeated hour.
    return _dt.datetime.combine(day, at, tzinfo=zone).astimezone(_dt.UTC)


def _kind_slots(kind_plan: KindPlan, day: _dt.date, zone: _dt.tzinfo, tolerance: Tolerance) -> Iterable[Slot]:
    if kind_plan.times:
        for at in kind_plan.times:
            due = _local(day, at, zone)
            yield Slot(kind_plan.kind, day, due, due - tolerance.before, due + tolerance.after, at)
        return
    start = _local(day, _dt.time(0), zone)
    end = _local(day + _dt.timedelta(days=1), _dt.time(0), zone)
    for index in range(kind_plan.per_day):
        yield Slot(kind_plan.kind, day, start, start, end, None, index)


def scheduled_slots(
    plan: CarePlan, start: _dt.datetime, end: _dt.datetime, tolerance: Tolerance = DEFAULT_TOLERANCE
) -> tuple[Slot, ...]:
    """The plan's slots counted over ``[start, end)``: due at or after ``start`` and the plan's start, and closed
    by ``end``; by due time, then kind."""
    zone = plan.zone
    first = start.astimezone(zone).date() - _dt.timedelta(days=1)
    last = end.astimezone(zone).date() + _dt.timedelta(days=1)
    slots: list[Slot] = []
    day = first
    while day <= last:
        for kind_plan in plan.measurements:
            slots.extend(
                slot
                for slot in _kind_slots(kind_plan, day, zone, tolerance)
                if start <= slot.due < end and slot.due >= plan.starts and slot.closes <= end
            )
        day += _dt.timedelta(days=1)
    order = {kind: i for i, kind in enumerate(MeasurementKind)}
    slots.sort(key=lambda s: (s.due, order[s.kind], s.index))
    return tuple(slots)


def _match(slots: Sequence[Slot], readings: Sequence[VitalReading]) -> dict[Slot, VitalReading]:
    """A largest matching of slots to readings (each at most once) with ``opens <= taken_at <= closes``: slots by
    closing time, each taking the earliest unused reading it can (the classic greedy, optimal for intervals)."""
    times = sorted(readings, key=lambda r: (r.taken_at, r.record_id))
    used = [False] * len(times)
    matched: dict[Slot, VitalReading] = {}
    for slot in sorted(slots, key=lambda s: (s.closes, s.opens, s.index)):
        for i, reading in enumerate(times):
            if used[i] or reading.taken_at < slot.opens:
                continue
            if reading.taken_at > slot.closes:
                break
            used[i] = True
            matched[slot] = reading
            break
    return matched


def upload_rate(
    plan: CarePlan,
    readings: Iterable[VitalReading],
    *,
    now: _dt.datetime,
    days: int = 7,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> UploadRate:
    """The resident's upload rate over the ``days`` before ``now`` (see the module docstring).

    Raises:
        ValueError: ``days`` not positive or ``now`` naive.
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    end = now.astimezone(_dt.UTC)
    start = end - _dt.timedelta(days=days)
    slots = scheduled_slots(plan, start, end, tolerance)
    usable = [r for r in readings if r.resident_id == plan.resident_id and not r.unreliable]
    matched: dict[Slot, VitalReading] = {}
    for kind_plan in plan.measurements:
        kind_slots = [s for s in slots if s.kind is kind_plan.kind]
        kind_readings = [r for r in usable if kind_plan.kind in r.kinds]
        matched.update(_match(kind_slots, kind_readings))
    met = tuple(MetSlot(s, matched[s].record_id, matched[s].taken_at) for s in slots if s in matched)
    missed = tuple(s for s in slots if s not in matched)
    return UploadRate((plan.resident_id,), start, end, met, missed)


def combine_upload_rates(rates: Sequence[UploadRate]) -> UploadRate:
    """One home's upload rate from its residents' (same window): their slots together.

    Raises:
        ValueError: no rates, or rates over different windows.
    """
    if not rates:
        raise ValueError("no upload rates to combine")
    windows = {(r.window_start, r.window_end) for r in rates}
    if len(windows) != 1:
        raise ValueError("upload rates over different windows cannot be combined")
    met = tuple(sorted((m for r in rates for m in r.met), key=lambda m: m.slot.due))
    missed = tuple(sorted((s for r in rates for s in r.missed), key=lambda s: s.due))
    ids = tuple(i for r in rates for i in r.resident_ids)
    return UploadRate(ids, rates[0].window_start, rates[0].window_end, met, missed)


# --- alarms ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """An alarm whose latest step leaves it open.

    Attributes:
        hub: the hub that raised it.
        alarm_id: its id.
        resident_id: whose it is, if named.
        condition: the condition (``"bp.high"``, ``"panic"``...).
        tier: its current tier.
        state: its latest step.
        raised_at: the first step's hub time seen.
        updated_at: the latest step's hub time.
        acknowledged: a caregiver acknowledged it (the hub keeps a vital-sign alarm open until its condition clears).
        value: the measured value of the latest step that named one.
        threshold: the threshold of that step.
        trigger_record_ids: the records that triggered its steps (hex), in order.
    """

    hub: str
    alarm_id: str
    resident_id: str | None
    condition: str
    tier: AlarmTier
    state: AlarmState
    raised_at: _dt.datetime
    updated_at: _dt.datetime
    acknowledged: bool = False
    value: float | None = None
    threshold: float | None = None
    trigger_record_ids: tuple[str, ...] = ()

    @property
    def is_panic(self) -> bool:
        """A pendant call for help."""
        return self.condition == "panic"


_CLOSED: Final = frozenset({AlarmState.CLEARED, AlarmState.CANCELLED})
_TIER_RANK: Final = {AlarmTier.NOTICE: 1, AlarmTier.WARNING: 2, AlarmTier.CRITICAL: 3}


def open_alarms(
    readings: Iterable[StoredReading],
    *,
    resident_id: str | None = None,
    resolved: Mapping[tuple[str, str], int] | Collection[tuple[str, str]] = (),
) -> tuple[OpenAlarm, ...]:
    """The open alarms among the alarm records of ``readings`` (of ``resident_id`` only, if given), most urgent
    first, then oldest first.

    An alarm's latest step is its highest revision. It is closed when that step is ``cleared`` or ``cancelled``, when
    a panic call was ``acknowledged`` (the hub answers the call then), or when its ``(hub, alarm_id)`` is in
    ``resolved`` (marked resolved in the console). Given as a mapping to the revision the console saw when it was
    resolved, a later step from the hub (re-raised, escalated) opens the alarm again. Records whose body cannot be
    read as an alarm step are skipped.
    """
    steps: dict[tuple[str, str], list[tuple[int, StoredReading]]] = defaultdict(list)
    for r in readings:
        if r.kind != RecordKind.ALARM.value:
            continue
        alarm_id, revision = r.body.get("alarm_id"), r.body.get("revision")
        if not isinstance(alarm_id, str) or not isinstance(revision, int):
            continue
        steps[(r.hub, alarm_id)].append((revision, r))
    out: list[OpenAlarm] = []
    for (hub, alarm_id), history in steps.items():
        history.sort(key=lambda item: (item[0], item[1].hub_time))
        if (hub, alarm_id) in resolved:
            upto = resolved[(hub, alarm_id)] if isinstance(resolved, Mapping) else None
            if upto is None or history[-1][0] <= upto:
                continue
        latest = history[-1][1]
        try:
            state = AlarmState(latest.body.get("state"))
            tier = AlarmTier(latest.body.get("tier"))
        except ValueError:
            continue
        condition = str(latest.body.get("condition", ""))
        resident = latest.resident_id or next((h.resident_id for _, h in history if h.resident_id), None)
        if resident_id is not None and resident != resident_id:
            continue
        if state in _CLOSED or (condition == "panic" and state is AlarmState.ACKNOWLEDGED):
            continue
        valued = [h for _, h in history if isinstance(h.body.get("value"), int | float)]
        value = valued[-1].body.get("value") if valued else None
        threshold = valued[-1].body.get("threshold") if valued else None
        triggers = tuple(t for _, h in history for t in h.body.get("trigger_record_ids", ()) if isinstance(t, str))
        out.append(
            OpenAlarm(
                hub=hub,
                alarm_id=alarm_id,
                resident_id=resident,
                condition=condition,
                tier=tier,
                state=state,
                raised_at=min(h.hub_time for _, h in history),
                updated_at=latest.hub_time,
                acknowledged=any(h.body.get("state") == AlarmState.ACKNOWLEDGED.value for _, h in history),
                value=float(value) if isinstance(value, int | float) else None,
                threshold=float(threshold) if isinstance(threshold, int | float) else None,
                trigger_record_ids=tuple(dict.fromkeys(triggers)),
            )
        )
    out.sort(key=lambda a: (-_TIER_RANK[a.tier], not a.is_panic, a.raised_at, a.hub, a.alarm_id))
    return tuple(out)


# --- risk tier -------------------------------------------------------------------------------------------------------


class RiskTier(enum.StrEnum):
    """A resident's risk stratum (community programmes' red / yellow / green, issue 18)."""

    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        """0 green, 1 yellow, 2 red."""
        return _RISK_RANK[self]


_RISK_RANK: Final = {RiskTier.GREEN: 0, RiskTier.YELLOW: 1, RiskTier.RED: 2}


class ReasonKind(enum.StrEnum):
    """Why a resident has the tier they have (``docs/risk-tiers.md``)."""

    OPEN_PANIC = "open_panic"
    OPEN_ALARM = "open_alarm"
    CRITICAL_READING = "critical_reading"
    """The latest reading of a vital is at the critical level."""
    WARNING_READING = "warning_reading"
    NOTICE_READING = "notice_reading"
    PAST_CRITICAL_READING = "past_critical_reading"
    """A reading in the window was critical, though the latest of that vital is not."""
    GLUCOSE_SWING = "glucose_swing"
    WEIGHT_GAIN = "weight_gain"
    UPLOAD_FAILING = "upload_failing"
    NO_CARE_PLAN = "no_care_plan"
    NO_READINGS = "no_readings"


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason for a risk tier, typed so the console can show it in any language.

    Attributes:
        kind: what it is.
        tier: the tier it calls for (``green``: shown, raises nothing).
        vital: the vital sign concerned, if any.
        value: the reading's value (vital's unit), the swing in percent, the weight gain in kg, or the upload rate
            in percent.
        threshold: the line it was compared with, in the same unit.
        threshold_key: the resident's threshold key used, if any.
        programme_rule: the line is the community programme's BP > 180/110 rule (thresholds.md, top).
        at: when the reading was taken or the alarm last changed.
        record_id: the reading concerned, if any.
        alarm_id: the alarm concerned, if any.
        alarm_tier: the alarm's tier, for alarm reasons.
        condition: the alarm's condition (``"bp.high"``, ``"panic"``...), for alarm reasons.
    """

    kind: ReasonKind
    tier: RiskTier
    vital: Vital | None = None
    value: float | None = None
    threshold: float | None = None
    threshold_key: Key | None = None
    programme_rule: bool = False
    at: _dt.datetime | None = None
    record_id: str | None = None
    alarm_id: str | None = None
    alarm_tier: AlarmTier | None = None
    condition: str | None = None

    @property
    def text(self) -> str:
        """A short English sentence (the console translates from the typed fields)."""
        return _reason_text(self)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _reason_text(r: Reason) -> str:
    vital = r.vital.value if r.vital else ""
    unit = r.vital.unit if r.vital else ""
    match r.kind:
        case ReasonKind.OPEN_PANIC:
            return f"panic call {r.alarm_id} unanswered"
        case ReasonKind.OPEN_ALARM:
            tier = r.alarm_tier.value if r.alarm_tier else ""
            return f"open {tier} alarm {r.alarm_id} ({r.condition})"
        case ReasonKind.CRITICAL_READING | ReasonKind.WARNING_READING | ReasonKind.NOTICE_READING:
            level = r.kind.value.removesuffix("_reading")
            line = "programme line" if r.programme_rule else (r.threshold_key.value if r.threshold_key else "")
            return f"latest {vital} {_num(r.value)} {unit} is {level} ({line} {_num(r.threshold)})"
        case ReasonKind.PAST_CRITICAL_READING:
            return f"{vital} {_num(r.value)} {unit} was critical in the window"
        case ReasonKind.GLUCOSE_SWING:
            return f"glucose swung {_num(r.value)}% between readings (over {_num(r.threshold)}%)"
        case ReasonKind.WEIGHT_GAIN:
            return f"weight up {_num(r.value)} kg (over {_num(r.threshold)} kg)"
        case ReasonKind.UPLOAD_FAILING:
            return f"upload rate {_num(r.value)}% is under {_num(r.threshold)}%"
        case ReasonKind.NO_CARE_PLAN:
            return "no care plan: adherence is not judged"
        case ReasonKind.NO_READINGS:
            return "no readings in the window"


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """A resident's tier and every reason for it, most serious first."""

    tier: RiskTier
    reasons: tuple[Reason, ...]


_LEVEL_TIER: Final = {Tier.CRITICAL: RiskTier.RED, Tier.WARNING: RiskTier.YELLOW, Tier.NOTICE: RiskTier.GREEN}
_LEVEL_REASON: Final = {
    Tier.CRITICAL: ReasonKind.CRITICAL_READING,
    Tier.WARNING: ReasonKind.WARNING_READING,
    Tier.NOTICE: ReasonKind.NOTICE_READING,
}

# Per vital: the threshold keys that grade a reading, most urgent first (protocols.thresholds, sources there and in
# thresholds.md §1-§5, §8).
_GRADES: Final[Mapping[Vital, tuple[tuple[Key, Tier], ...]]] = MappingProxyType(
    {
        Vital.SYSTOLIC: (
            (Key.BP_SYS_CRITICAL_HIGH, Tier.CRITICAL),
            (Key.BP_SYS_CRITICAL_LOW, Tier.CRITICAL),
            (Key.BP_SYS_WARNING_HIGH, Tier.WARNING),
            (Key.BP_SYS_WARNING_LOW, Tier.WARNING),
            (Key.BP_SYS_NOTICE_HIGH, Tier.NOTICE),
        ),
        Vital.DIASTOLIC: (
            (Key.BP_DIA_CRITICAL_HIGH, Tier.CRITICAL),
            (Key.BP_DIA_WARNING_HIGH, Tier.WARNING),
            (Key.BP_DIA_NOTICE_HIGH, Tier.NOTICE),
        ),
        Vital.GLUCOSE: (
            (Key.GLUCOSE_LOW_CRITICAL, Tier.CRITICAL),
            (Key.GLUCOSE_HIGH_CRITICAL, Tier.CRITICAL),
            (Key.GLUCOSE_LOW_WARNING, Tier.WARNING),
            (Key.GLUCOSE_HIGH_WARNING, Tier.WARNING),
            (Key.GLUCOSE_LOW_NOTICE, Tier.NOTICE),
            (Key.GLUCOSE_HIGH_NOTICE, Tier.NOTICE),
        ),
        Vital.SPO2: (
            (Key.SPO2_LOW_CRITICAL, Tier.CRITICAL),
            (Key.SPO2_LOW_WARNING, Tier.WARNING),
            (Key.SPO2_LOW_NOTICE, Tier.NOTICE),
        ),
        Vital.PULSE: (
            (Key.PULSE_LOW_CRITICAL, Tier.CRITICAL),
            (Key.PULSE_HIGH_CRITICAL, Tier.CRITICAL),
            (Key.PULSE_HIGH_WARNING, Tier.WARNING),
            (Key.PULSE_LOW_NOTICE, Tier.NOTICE),
            (Key.PULSE_HIGH_NOTICE, Tier.NOTICE),
        ),
        Vital.TEMPERATURE: (
            (Key.TEMP_LOW_CRITICAL, Tier.CRITICAL),
            (Key.TEMP_HIGH_WARNING, Tier.WARNING),
            (Key.TEMP_LOW_NOTICE, Tier.NOTICE),
            (Key.TEMP_HIGH_NOTICE, Tier.NOTICE),
        ),
        Vital.WEIGHT: (),
    }
)
_PROGRAMME: Final = {Vital.SYSTOLIC: PROGRAMME_SYSTOLIC_CRISIS, Vital.DIASTOLIC: PROGRAMME_DIASTOLIC_CRISIS}


@dataclass(frozen=True, slots=True)
class Level:
    """How a value grades against a threshold set: the tier, and the line it crossed."""

    tier: Tier
    threshold: float | None = None
    key: Key | None = None
    programme_rule: bool = False


def reading_level(vital: Vital, value: float, thresholds: Thresholds) -> Level:
    """The tier of ``value`` under ``thresholds`` (``INFO``: in range). Systolic above 180 or diastolic above 110
    mmHg is critical whatever the resident's thresholds (the programme's rule, thresholds.md top); the resident's
    own critical line is named instead when it fires too."""
    graded = next(((key, tier) for key, tier in _GRADES[vital] if SPECS[key].cmp.fires(value, thresholds[key])), None)
    if graded is not None and graded[1] is Tier.CRITICAL:
        return Level(Tier.CRITICAL, thresholds[graded[0]], graded[0])
    line = _PROGRAMME.get(vital)
    if line is not None and value > line:
        return Level(Tier.CRITICAL, line, None, programme_rule=True)
    if graded is not None:
        return Level(graded[1], thresholds[graded[0]], graded[0])
    return Level(Tier.INFO)


def _reading_reasons(
    readings: Sequence[VitalReading], thresholds: Thresholds, start: _dt.datetime, end: _dt.datetime
) -> list[Reason]:
    reasons: list[Reason] = []
    for vital in Vital:
        series = [(r, v) for r in readings if start <= r.taken_at <= end and (v := r.value(vital)) is not None]
        if not series:
            continue
        latest, latest_value = series[-1]
        level = reading_level(vital, latest_value, thresholds)
        if level.tier in _LEVEL_TIER:
            reasons.append(
                Reason(
                    _LEVEL_REASON[level.tier],
                    _LEVEL_TIER[level.tier],
                    vital,
                    latest_value,
                    level.threshold,
                    level.key,
                    level.programme_rule,
                    latest.taken_at,
                    latest.record_id,
                )
            )
        if level.tier is not Tier.CRITICAL:
            past = [
                (r, v, lv) for r, v in series[:-1] if (lv := reading_level(vital, v, thresholds)).tier is Tier.CRITICAL
            ]
            if past:
                r, v, lv = past[-1]
                reasons.append(
                    Reason(
                        ReasonKind.PAST_CRITICAL_READING,
                        RiskTier.YELLOW,
                        vital,
                        v,
                        lv.threshold,
                        lv.key,
                        lv.programme_rule,
                        r.taken_at,
                        r.record_id,
                    )
                )
    return reasons


def _swing_reasons(readings: Sequence[VitalReading], thresholds: Thresholds, start: _dt.datetime) -> list[Reason]:
    # Community programme (thresholds.md top): a glucose swing > 30 % between readings prompts a medication review;
    # the hub's rule (gateway.rules glucose.swing) compares consecutive readings within glucose.swing.window_s.
    if not thresholds.enabled(Key.GLUCOSE_SWING_ENABLED):
        return []
    percent = thresholds[Key.GLUCOSE_SWING_PERCENT]
    window = _dt.timedelta(seconds=thresholds[Key.GLUCOSE_SWING_WINDOW_S])
    series = [(r, v) for r in readings if (v := r.value(Vital.GLUCOSE)) is not None]
    worst: Reason | None = None
    for (a, va), (b, vb) in itertools.pairwise(series):
        if b.taken_at < start or b.taken_at - a.taken_at > window or va <= 0:
            continue
        swing = abs(vb - va) / va * 100.0
        if swing > percent and (worst is None or worst.value is None or swing > worst.value):
            worst = Reason(
                ReasonKind.GLUCOSE_SWING,
                RiskTier.YELLOW,
                Vital.GLUCOSE,
                round(swing, 1),
                percent,
                Key.GLUCOSE_SWING_PERCENT,
                at=b.taken_at,
                record_id=b.record_id,
            )
    return [] if worst is None else [worst]


def _weight_reasons(readings: Sequence[VitalReading], thresholds: Thresholds, start: _dt.datetime) -> list[Reason]:
    # ESC HFA self-care (thresholds.md §6): > 2 kg in 3 days; "> 1 kg/day" telemonitoring convention. As the hub's
    # rule: the newest weight minus the lowest of the previous 1 / 3 days (window ends included).
    if not thresholds.enabled(Key.WEIGHT_TREND_ENABLED):
        return []
    series = [(r, v) for r in readings if (v := r.value(Vital.WEIGHT)) is not None]
    if not series or series[-1][0].taken_at < start:
        return []
    latest, value = series[-1]
    for days, key, tier in (
        (3, Key.WEIGHT_GAIN_3D_WARNING_KG, RiskTier.YELLOW),
        (1, Key.WEIGHT_GAIN_1D_NOTICE_KG, RiskTier.GREEN),
    ):
        since = latest.taken_at - _dt.timedelta(days=days)
        earlier = [v for r, v in series[:-1] if since <= r.taken_at]
        if earlier and value - min(earlier) > thresholds[key]:
            gain = round(value - min(earlier), 3)
            return [Reason(ReasonKind.WEIGHT_GAIN, tier, Vital.WEIGHT, gain, thresholds[key], key, at=latest.taken_at)]
    return []


def assess_risk(
    readings: Sequence[VitalReading],
    alarms: Sequence[OpenAlarm],
    *,
    thresholds: Thresholds | None = None,
    upload: UploadRate | None,
    now: _dt.datetime,
    recent: _dt.timedelta = _dt.timedelta(days=7),
) -> RiskAssessment:
    """A resident's risk tier from their open alarms, their readings of the last ``recent`` and their upload rate
    (``None``: no care plan). ``readings`` and ``alarms`` must be the resident's own (:func:`vital_readings`,
    :func:`open_alarms` with ``resident_id``); unreliable readings are never judged. Rules: ``docs/risk-tiers.md``.
    """
    limits = thresholds if thresholds is not None else resolve_thresholds()
    end = now.astimezone(_dt.UTC)
    start = end - recent
    judged = [r for r in readings if not r.unreliable and r.taken_at <= end]
    reasons: list[Reason] = []
    for alarm in alarms:
        tier = {AlarmTier.CRITICAL: RiskTier.RED, AlarmTier.WARNING: RiskTier.YELLOW}.get(alarm.tier, RiskTier.GREEN)
        kind = ReasonKind.OPEN_PANIC if alarm.is_panic else ReasonKind.OPEN_ALARM
        if alarm.is_panic:
            tier = RiskTier.RED
        reasons.append(
            Reason(
                kind,
                tier,
                value=alarm.value,
                threshold=alarm.threshold,
                at=alarm.updated_at,
                alarm_id=alarm.alarm_id,
                alarm_tier=alarm.tier,
                condition=alarm.condition,
            )
        )
    reasons += _reading_reasons(judged, limits, start, end)
    reasons += _swing_reasons(judged, limits, start)
    reasons += _weight_reasons(judged, limits, start)
    if upload is None:
        reasons.append(Reason(ReasonKind.NO_CARE_PLAN, RiskTier.GREEN))
    elif upload.failing and upload.percent is not None:
        reasons.append(
            Reason(
                ReasonKind.UPLOAD_FAILING, RiskTier.YELLOW, value=upload.percent, threshold=float(FAILING_BELOW * 100)
            )
        )
    if not any(start <= r.taken_at <= end for r in judged):
        reasons.append(Reason(ReasonKind.NO_READINGS, RiskTier.GREEN))
    order = list(ReasonKind)
    reasons.sort(key=lambda r: (-r.tier.rank, order.index(r.kind)))
    tier = reasons[0].tier if reasons else RiskTier.GREEN
    return RiskAssessment(tier, tuple(reasons))


# --- latest vitals and devices ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VitalValue:
    """The latest value of one vital sign."""

    vital: Vital
    value: float
    at: _dt.datetime
    record_id: str
    device: str | None
    meal: MealContext | None = None


@dataclass(frozen=True, slots=True)
class LatestVitals:
    """The latest reliable value of each vital sign (absent: never measured)."""

    values: Mapping[Vital, VitalValue] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, vital: Vital) -> VitalValue | None:
        """The latest value of ``vital``, if any."""
        return self.values.get(vital)

    @property
    def blood_pressure(self) -> tuple[VitalValue, VitalValue] | None:
        """Systolic and diastolic of the latest reading that had both."""
        sys, dia = self.values.get(Vital.SYSTOLIC), self.values.get(Vital.DIASTOLIC)
        if sys is None or dia is None or sys.record_id != dia.record_id:
            return None
        return sys, dia


def latest_vitals(readings: Iterable[VitalReading]) -> LatestVitals:
    """The latest value of each vital among ``readings`` that are not flagged unreliable."""
    latest: dict[Vital, VitalValue] = {}
    for r in sorted(readings, key=lambda r: (r.taken_at, r.record_id)):
        if r.unreliable:
            continue
        for vital, value in r.values.items():
            latest[vital] = VitalValue(vital, value, r.taken_at, r.record_id, r.device, r.meal)
    # Systolic and diastolic come from the same cuff reading; keep them paired.
    sys = latest.get(Vital.SYSTOLIC)
    if sys is not None and Vital.DIASTOLIC in latest and latest[Vital.DIASTOLIC].record_id != sys.record_id:
        latest.pop(Vital.DIASTOLIC)
        for r in readings:
            if r.record_id == sys.record_id and (dia := r.value(Vital.DIASTOLIC)) is not None:
                latest[Vital.DIASTOLIC] = VitalValue(Vital.DIASTOLIC, dia, r.taken_at, r.record_id, r.device)
    return LatestVitals(MappingProxyType({v: latest[v] for v in Vital if v in latest}))


class DeviceRole(enum.StrEnum):
    """What a device is, as far as its records tell."""

    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    OXIMETER = "oximeter"
    THERMOMETER = "thermometer"
    SCALE = "scale"
    HEART_RATE = "heart_rate"
    PENDANT = "pendant"
    UNKNOWN = "unknown"


_ROLES: Final = {
    MeasurementKind.BLOOD_PRESSURE: DeviceRole.BLOOD_PRESSURE,
    MeasurementKind.GLUCOSE: DeviceRole.GLUCOSE,
    MeasurementKind.SPO2: DeviceRole.OXIMETER,
    MeasurementKind.TEMPERATURE: DeviceRole.THERMOMETER,
    MeasurementKind.WEIGHT: DeviceRole.SCALE,
    MeasurementKind.PULSE: DeviceRole.HEART_RATE,
}


@dataclass(frozen=True, slots=True)
class DeviceSummary:
    """One device: what it is, its battery and when it was last heard of.

    Attributes:
        hub: the hub it belongs to.
        device: its id (address).
        role: what it is.
        last_seen: the hub time of the newest record about it.
        battery: the battery percentage last reported (device status or pendant event), if any.
        battery_at: when that was reported.
        battery_tier: how low it is (thresholds ``battery.*``: engineering choices, not clinical): ``INFO`` when fine
            or unknown.
        link: the last link state reported, if any.
    """

    hub: str
    device: str
    role: DeviceRole
    last_seen: _dt.datetime
    battery: int | None = None
    battery_at: _dt.datetime | None = None
    battery_tier: Tier = Tier.INFO
    link: LinkState | None = None


def _battery_tier(role: DeviceRole, battery: int | None, thresholds: Thresholds) -> Tier:
    if battery is None:
        return Tier.INFO
    if role is DeviceRole.PENDANT:
        grades = ((Key.BATTERY_PENDANT_CRITICAL, Tier.CRITICAL), (Key.BATTERY_PENDANT_WARNING, Tier.WARNING))
    else:
        grades = ((Key.BATTERY_METER_WARNING, Tier.WARNING), (Key.BATTERY_METER_NOTICE, Tier.NOTICE))
    for key, tier in grades:
        if SPECS[key].cmp.fires(battery, thresholds[key]):
            return tier
    return Tier.INFO


def devices_summary(
    readings: Iterable[StoredReading], *, thresholds: Thresholds | None = None
) -> tuple[DeviceSummary, ...]:
    """Every device named by ``readings``, by hub then device: its role, battery (``device_status`` and pendant
    records) and last seen (any record about it)."""
    limits = thresholds if thresholds is not None else resolve_thresholds()
    seen: dict[tuple[str, str], _dt.datetime] = {}
    roles: dict[tuple[str, str], DeviceRole] = {}
    battery: dict[tuple[str, str], tuple[_dt.datetime, int]] = {}
    link: dict[tuple[str, str], tuple[_dt.datetime, LinkState]] = {}
    for r in readings:
        if r.device is None:
            continue
        key = (r.hub, r.device)
        seen[key] = max(seen.get(key, r.hub_time), r.hub_time)
        body: Mapping[str, Any] = r.body
        if r.kind == RecordKind.MEASUREMENT.value:
            uuid = body.get("uuid")
            source = _SOURCES.get(uuid) if isinstance(uuid, int) else None
            if source is not None:
                roles[key] = _ROLES[source]
            elif body.get("uuid") == gatt.GlucoseMeasurementContext.UUID:
                roles.setdefault(key, DeviceRole.GLUCOSE)
        elif r.kind == RecordKind.PANIC.value:
            roles[key] = DeviceRole.PENDANT
        if r.kind in (RecordKind.DEVICE_STATUS.value, RecordKind.PANIC.value):
            level = body.get("battery")
            if (
                isinstance(level, int)
                and not isinstance(level, bool)
                and (key not in battery or battery[key][0] <= r.hub_time)
            ):
                battery[key] = (r.hub_time, level)
        if r.kind == RecordKind.DEVICE_STATUS.value and isinstance(body.get("link"), str):
            try:
                state = LinkState(body["link"])
            except ValueError:
                continue
            if key not in link or link[key][0] <= r.hub_time:
                link[key] = (r.hub_time, state)
    out: list[DeviceSummary] = []
    for key in sorted(seen):
        role = roles.get(key, DeviceRole.UNKNOWN)
        at, level = battery.get(key, (None, None))
        out.append(
            DeviceSummary(
                hub=key[0],
                device=key[1],
                role=role,
                last_seen=seen[key],
                battery=level,
                battery_at=at,
                battery_tier=_battery_tier(role, level, limits),
                link=link[key][1] if key in link else None,
            )
        )
    return tuple(out)


# --- one resident at a glance ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResidentOverview:
    """Everything the residents panel shows for one resident."""

    resident_id: str
    risk: RiskAssessment
    upload: UploadRate | None
    latest: LatestVitals
    alarms: tuple[OpenAlarm, ...]
    devices: tuple[DeviceSummary, ...]


def resident_overview(
    resident_id: str,
    readings: Sequence[StoredReading],
    *,
    plan: CarePlan | None,
    thresholds: Thresholds | None = None,
    now: _dt.datetime,
    days: int = 7,
    resolved: Mapping[tuple[str, str], int] | Collection[tuple[str, str]] = (),
) -> ResidentOverview:
    """The resident's risk tier, upload rate over ``days``, latest vitals, open alarms and devices, from the
    stored records of their hub(s). ``plan``'s time zone, when given, reads the meters' own time stamps."""
    if plan is not None and plan.resident_id != resident_id:
        raise ValueError(f"the care plan is {plan.resident_id!r}'s, not {resident_id!r}'s")
    vitals = vital_readings(readings, plan.zone if plan is not None else None, resident_id=resident_id)
    alarms = open_alarms(readings, resident_id=resident_id, resolved=resolved)
    upload = None if plan is None else upload_rate(plan, vitals, now=now, days=days)
    risk = assess_risk(vitals, alarms, thresholds=thresholds, upload=upload, now=now, recent=_dt.timedelta(days=days))
    own_devices = {(v.hub, v.device) for v in vitals}
    own_alarms = {
        (r.hub, r.alarm_id) for r in readings if r.kind == RecordKind.ALARM.value and r.resident_id == resident_id
    }
    for r in readings:
        if r.kind == RecordKind.PANIC.value and r.device is not None and (r.hub, r.alarm_id) in own_alarms:
            own_devices.add((r.hub, r.device))
    devices = tuple(d for d in devices_summary(readings, thresholds=thresholds) if (d.hub, d.device) in own_devices)
    return ResidentOverview(resident_id, risk, upload, latest_vitals(vitals), alarms, devices)
