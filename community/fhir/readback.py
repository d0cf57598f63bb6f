"""Reading an exported Observation back (issue 18 item 7: the round trip export -> parse -> compare).

:func:`observation_facts` reads what an Observation made by :func:`community.fhir.mapping.observation` says about its
record; :func:`expected_facts` is what it must say, taken straight from the stored reading. ``tests/fhir`` compares
the two for every kind of meter.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from community.console.analytics import taken_at
from community.fhir import codes
from community.fhir.codes import Concept, DeviceType
from community.fhir.mapping import (
    ABSENT_URL,
    DEVICE_TIME_URL,
    SPECIAL_BY_REASON,
    SPECS,
    UNRELIABLE_URL,
    ExportError,
    Field,
    Spec,
)
from community.storage import StoredReading

__all__ = ["ObservationFacts", "expected_facts", "observation_facts"]


@dataclass(frozen=True, slots=True)
class ObservationFacts:
    """What an exported Observation says about its record (compared with :func:`expected_facts` in the tests).

    Attributes:
        hub: the hub of the record.
        record_id: the carehub record id.
        resident_id: whose reading (``None``: not filed under a resident).
        device: the meter's device id.
        values: the measured values by their ``values`` key, and their unit words (``unit``, ``height_unit``), with
            special values as decoded (``"NaN"``...); a value the meter did not send is ``None``.
        effective: when the reading was taken (UTC).
        issued: when the hub received it (UTC).
        device_time: the meter's own time stamp as reported.
        unreliable: flagged by the hub or the meter.
    """

    hub: str
    record_id: str
    resident_id: str | None
    device: str | None
    values: Mapping[str, Any]
    effective: _dt.datetime
    issued: _dt.datetime
    device_time: str | None
    unreliable: bool


def expected_facts(reading: StoredReading, zone: _dt.tzinfo | None = None) -> ObservationFacts:
    """The facts the Observation of ``reading`` must carry: taken straight from the stored record."""
    spec = SPECS[reading.body["uuid"]]
    values = reading.values or {}
    shown: dict[str, Any] = {}
    for f in spec.fields():
        shown[f.key] = values.get(f.key)
        if f.unit_key is not None:
            shown[f.unit_key] = values.get(f.unit_key)
    return ObservationFacts(
        hub=reading.hub,
        record_id=reading.record_id,
        resident_id=reading.resident_id,
        device=reading.device,
        values=shown,
        effective=taken_at(reading, zone),
        issued=reading.hub_time,
        device_time=reading.device_time,
        unreliable=bool(reading.body.get("unreliable")),
    )


def _number(quantity: Mapping[str, Any]) -> object:
    if "value" in quantity:
        return quantity["value"]
    for ext in quantity.get("_value", {}).get("extension", []):
        if ext.get("url") == ABSENT_URL and ext.get("valueCode") == "unknown":
            return None
        if ext.get("url") == ABSENT_URL and ext.get("valueCode") in SPECIAL_BY_REASON:
            return SPECIAL_BY_REASON[ext["valueCode"]].value[0]
    raise ExportError("a quantity without a value or a known data-absent reason")


def _ref_value(ref: Mapping[str, Any] | None) -> str | None:
    return None if ref is None else str(ref["identifier"]["value"])


def observation_facts(obs: Mapping[str, Any]) -> ObservationFacts:
    """Read back an Observation made by :func:`observation` (FHIR JSON, e.g. parsed from the NDJSON export).

    Raises:
        ExportError: not an Observation of this export (unknown code, identifier or quantity).
        KeyError: a required element is missing.
    """
    ident = obs["identifier"][0]
    prefix, suffix = "urn:carehub:hub:", ":record"
    sys_ = str(ident["system"])
    if not (sys_.startswith(prefix) and sys_.endswith(suffix)):
        raise ExportError(f"identifier system {sys_!r} is not a carehub record")
    codings = {(c["system"], c["code"]) for c in obs["code"]["coding"]}
    method = obs.get("method", {}).get("text")  # a CGM's reading shares its codes with a strip's ISF reading
    spec = next((s for s in SPECS.values() if _spec_codes(s) & codings and s.method == method), None)
    if spec is None:
        raise ExportError(f"Observation code {sorted(codings)} is not one of carehub's")
    found: dict[str, Any] = {}
    for f in spec.fields():
        found[f.key] = None
        if f.unit_key is not None:
            found.setdefault(f.unit_key, None)
    parts: list[tuple[Field, Mapping[str, Any]]] = []
    if spec.primary is not None and "valueQuantity" in obs:
        parts.append((spec.primary, obs["valueQuantity"]))
    for comp in obs.get("component", []):
        comp_codes = {(c["system"], c["code"]) for c in comp["code"]["coding"]}
        field = next((f for f in spec.components if f.concept and _concept_codes(f.concept) == comp_codes), None)
        if field is None:
            raise ExportError(f"component code {sorted(comp_codes)} is not one of carehub's")
        parts.append((field, comp["valueQuantity"]))
    for field, quantity in parts:
        found[field.key] = _number(quantity)
        if field.unit_key is not None:
            found[field.unit_key] = codes.DECODED_UNITS[quantity["code"]]
    extensions = {e["url"]: e for e in obs.get("extension", [])}
    device_time = extensions.get(DEVICE_TIME_URL)
    return ObservationFacts(
        hub=sys_[len(prefix) : -len(suffix)],
        record_id=str(ident["value"]),
        resident_id=_ref_value(obs.get("subject")),
        device=_ref_value(obs.get("device")),
        values=found,
        effective=_dt.datetime.fromisoformat(obs["effectiveDateTime"]),
        issued=_dt.datetime.fromisoformat(obs["issued"]),
        device_time=None if device_time is None else str(device_time["valueString"]),
        unreliable=bool(extensions.get(UNRELIABLE_URL, {}).get("valueBoolean", False)),
    )


def _concept_codes(concept: Concept) -> set[tuple[str, str]]:
    return {(c.system, c.code) for c in concept.codes}


def _spec_codes(spec: Spec) -> set[tuple[str, str]]:
    """The MDC codes that identify a characteristic's Observation (LOINC 8867-4 is shared by several)."""
    if spec.device is DeviceType.GLUCOSE:
        return {(codes.MDC, code) for code in codes.glucose_mdc_codes()}
    concept = spec.concept({})
    return {(c.system, c.code) for c in concept.codes if c.system == codes.MDC}
