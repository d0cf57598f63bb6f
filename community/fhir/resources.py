"""All of a platform's stored records as FHIR R4 resources (issue 18 items 6 and 7).

:func:`build_export` turns stored records (:class:`community.storage.StoredReading`, oldest first, as
``Storage.readings()`` returns them) into:

- ``Observation``: one per exportable measurement record (:mod:`community.fhir.mapping`);
- ``Patient``: one per resident named by a measurement or alarm record (identifier system
  ``urn:carehub:hub:<hub>:resident``);
- ``Device``: one per device named by a record (identifier system ``urn:carehub:hub:<hub>:device``), typed by the
  characteristics it sent (MDC device specialisation) or as the panic pendant, ``patient`` set when all its readings
  are of one resident;
- ``Communication``: one per panic press (short or long) of a pendant, ``priority`` ``stat``, ``category`` alert;
- ``Flag``: one per panic alarm, ``active`` while the call is unanswered and ``inactive`` (with ``period.end``) once
  the alarm was acknowledged, cleared or cancelled.

Every resource's logical id is derived from what identifies it (:func:`community.fhir.mapping.resource_id`), so an
export made again is the same export. Records that are no resource of their own (alarm steps, device status,
evictions, refusals, glucose context, check-ins) are counted by reason in :attr:`FhirExport.skipped`.
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from community.console.analytics import is_installation_test
from community.fhir import codes
from community.fhir.codes import DeviceType
from community.fhir.mapping import SPECS, exportable, fhir_string, identifier, observation, reference, resource_id
from community.storage import StoredReading
from protocols import gatt
from protocols.record import AlarmState, PanicEventType, RecordKind

__all__ = ["RESOURCE_TYPES", "FhirExport", "build_export"]

RESOURCE_TYPES: Final = ("Patient", "Device", "Observation", "Communication", "Flag")
"""The resource types of an export, in the order they are written (referenced before referencing)."""

_ANSWERED: Final = frozenset({AlarmState.ACKNOWLEDGED.value, AlarmState.CLEARED.value, AlarmState.CANCELLED.value})
_PRESSES: Final = frozenset({PanicEventType.PRESS.value, PanicEventType.LONG_PRESS.value})


@dataclass(frozen=True, slots=True)
class FhirExport:
    """An export: FHIR JSON resources per type (see :data:`RESOURCE_TYPES`) and what was not a resource.

    Attributes:
        resources: resource type -> resources (JSON-ready dicts), in a stable order.
        skipped: reason -> how many records are no resource of their own for that reason.
    """

    resources: Mapping[str, tuple[dict[str, Any], ...]]
    skipped: Mapping[str, int]

    def count(self, resource_type: str) -> int:
        """How many resources of ``resource_type``."""
        return len(self.resources.get(resource_type, ()))


@dataclass(slots=True)
class _Call:
    """One panic alarm as the records tell it."""

    hub: str
    alarm_id: str
    raised: _dt.datetime
    answered: _dt.datetime | None = None
    resident: str | None = None
    pendant: str | None = None
    presses: list[StoredReading] = field(default_factory=list)

    def seen(self, at: _dt.datetime) -> None:
        self.raised = min(self.raised, at)

    def answer(self, at: _dt.datetime) -> None:
        self.answered = at if self.answered is None else min(self.answered, at)


def _iso(at: _dt.datetime) -> str:
    return at.astimezone(_dt.UTC).isoformat()


def _device_kind(reading: StoredReading) -> DeviceType | None:
    if reading.kind == RecordKind.PANIC.value:
        return DeviceType.PENDANT
    uuid = reading.body.get("uuid") if reading.kind == RecordKind.MEASUREMENT.value else None
    if uuid == gatt.GlucoseMeasurementContext.UUID:
        return DeviceType.GLUCOSE
    spec = SPECS.get(uuid) if isinstance(uuid, int) else None
    return None if spec is None else spec.device


class _Builder:
    def __init__(self, zone: _dt.tzinfo | None) -> None:
        self.zone = zone
        self.observations: list[dict[str, Any]] = []
        self.patients: set[tuple[str, str]] = set()
        self.device_kinds: dict[tuple[str, str], DeviceType | None] = {}
        self.device_residents: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
        self.calls: dict[tuple[str, str], _Call] = {}
        self.loose_presses: list[StoredReading] = []  # presses that named no alarm
        self.skipped: Counter[str] = Counter()

    def add(self, r: StoredReading) -> None:
        if is_installation_test(r):  # not the resident's: no Observation, no call (community.fhir.mapping.exportable)
            self.skipped[f"installation-test {r.kind}"] += 1
            return
        if r.device is not None:
            key = (r.hub, r.device)
            kind = _device_kind(r)
            if kind is not None or key not in self.device_kinds:
                self.device_kinds[key] = kind if kind is not None else self.device_kinds.get(key)
            if r.resident_id is not None and r.kind == RecordKind.MEASUREMENT.value:
                self.device_residents[key].add(r.resident_id)
        if r.resident_id is not None:
            self.patients.add((r.hub, r.resident_id))
        if r.kind == RecordKind.PANIC.value:
            self._panic(r)
        elif r.kind == RecordKind.ALARM.value and r.body.get("condition") == "panic" and r.alarm_id is not None:
            call = self._call(r.hub, r.alarm_id, r.hub_time)
            call.resident = call.resident or r.resident_id
            call.pendant = call.pendant or r.device
            if r.body.get("state") in _ANSWERED:
                call.answer(r.hub_time)
            self.skipped["alarm record (in its Flag)"] += 1
        else:
            why = exportable(r)
            if why is None:
                self.observations.append(observation(r, self.zone))
            else:
                self.skipped[why] += 1

    def _call(self, hub: str, alarm_id: str, at: _dt.datetime) -> _Call:
        call = self.calls.get((hub, alarm_id))
        if call is None:
            call = self.calls[(hub, alarm_id)] = _Call(hub, alarm_id, at)
        call.seen(at)
        return call

    def _panic(self, r: StoredReading) -> None:
        event = r.body.get("event")
        call = None if r.alarm_id is None else self._call(r.hub, r.alarm_id, r.hub_time)
        if call is not None:
            call.pendant = call.pendant or r.device
        if event in _PRESSES:
            (self.loose_presses if call is None else call.presses).append(r)
        elif event == PanicEventType.CANCEL.value and call is not None:
            call.answer(r.hub_time)
            self.skipped["panic cancel (closes its Flag)"] += 1
        else:
            self.skipped[f"panic {event}"] += 1

    def build(self) -> FhirExport:
        communications = [_communication(press, call) for call in self.calls.values() for press in call.presses] + [
            _communication(press, None) for press in self.loose_presses
        ]
        for call in self.calls.values():
            if call.resident is not None:
                self.patients.add((call.hub, call.resident))
            if call.pendant is not None and call.resident is not None:
                self.device_residents[(call.hub, call.pendant)].add(call.resident)
        by_id = lambda resource: resource["id"]  # noqa: E731 - a sort key
        resources = {
            "Patient": tuple(sorted((_patient(h, r) for h, r in self.patients), key=by_id)),
            "Device": tuple(
                sorted(
                    (
                        _device(h, d, kind, self.device_residents.get((h, d), set()))
                        for (h, d), kind in self.device_kinds.items()
                    ),
                    key=by_id,
                )
            ),
            "Observation": tuple(self.observations),
            "Communication": tuple(sorted(communications, key=lambda c: (c["sent"], c["id"]))),
            "Flag": tuple(
                sorted((_flag(c) for c in self.calls.values()), key=lambda f: (f["period"]["start"], f["id"]))
            ),
        }
        return FhirExport(MappingProxyType(resources), MappingProxyType(dict(self.skipped)))


def _patient(hub: str, resident: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": resource_id("pat", hub, resident),
        "identifier": [identifier(hub, "resident", resident)],
        "active": True,
    }


def _device(hub: str, device: str, kind: DeviceType | None, residents: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Device",
        "id": resource_id("dev", hub, device),
        "identifier": [identifier(hub, "device", device)],
        "status": "active",
    }
    if kind is not None:
        out["type"] = kind.to_json()
    if len(residents) == 1:
        out["patient"] = reference("Patient", hub, "resident", next(iter(residents)), "pat")
    return out


def _patient_ref(hub: str, resident: str | None, unnamed: str) -> dict[str, Any]:
    if resident is not None:
        return reference("Patient", hub, "resident", resident, "pat")
    return {
        "type": "Patient",
        "display": fhir_string(f"the resident of {unnamed} (not named by hub {hub})", "a display"),
    }


def _communication(press: StoredReading, call: _Call | None) -> dict[str, Any]:
    long = press.body.get("event") == PanicEventType.LONG_PRESS.value
    what = "long press" if long else "press"
    out: dict[str, Any] = {
        "resourceType": "Communication",
        "id": resource_id("com", press.hub, press.record_id),
        "identifier": [identifier(press.hub, "record", press.record_id)],
        "status": "completed",
        "category": [{"coding": [{"system": codes.COMMUNICATION_CATEGORY, "code": "alert"}]}],
        "priority": "stat",
        "subject": _patient_ref(press.hub, None if call is None else call.resident, f"pendant {press.device}"),
        "sent": _iso(press.hub_time),
        "payload": [{"contentString": fhir_string(f"Panic call: pendant {press.device} {what}.", "a payload")}],
    }
    if call is not None:
        out["about"] = [reference("Flag", call.hub, "alarm", call.alarm_id, "flag")]
    if press.device is not None:
        out["sender"] = reference("Device", press.hub, "device", press.device, "dev")
    return out


def _flag(call: _Call) -> dict[str, Any]:
    period = {"start": _iso(call.raised)}
    if call.answered is not None:
        period["end"] = _iso(call.answered)
    out: dict[str, Any] = {
        "resourceType": "Flag",
        "id": resource_id("flag", call.hub, call.alarm_id),
        "identifier": [identifier(call.hub, "alarm", call.alarm_id)],
        "status": "inactive" if call.answered is not None else "active",
        "category": [{"coding": [{"system": codes.FLAG_CATEGORY, "code": "safety", "display": "Safety"}]}],
        "code": {"text": "Panic call not answered" if call.answered is None else "Panic call (answered)"},
        "subject": _patient_ref(call.hub, call.resident, f"pendant {call.pendant or '-'}, alarm {call.alarm_id}"),
        "period": period,
    }
    if call.pendant is not None:
        out["author"] = reference("Device", call.hub, "device", call.pendant, "dev")
    return out


def build_export(readings: Iterable[StoredReading], zone: _dt.tzinfo | None = None) -> FhirExport:
    """Every stored record as FHIR resources (see the module docstring).

    Args:
        readings: stored records, oldest first (``Storage.readings()``).
        zone: the homes' time zone, for readings' own time stamps (see :func:`community.fhir.mapping.observation`).

    Raises:
        community.fhir.mapping.ExportError: a measurement record whose values are not what its characteristic sends.
    """
    builder = _Builder(zone)
    for r in readings:
        builder.add(r)
    return builder.build()
