"""Stored measurement records as FHIR R4 Observations (issue 18 item 6), and the facts an Observation carries back.

One measurement record becomes one ``Observation`` whose ``identifier`` is the record's carehub id (system
``urn:carehub:hub:<hub>:record``), so exporting the same record again produces the same resource with the same
logical id. What the Personal Health Device IG reports as separate observations of one device measurement (a cuff's
pulse rate, an oximeter's pulse rate, a scale's BMI and height) are ``component``\\ s of the record's Observation,
each coded with its own LOINC and MDC codes (:mod:`community.fhir.codes`). Values are exported exactly as the meter
sent them, in its unit (a UCUM code); an IEEE 11073 special value (NaN, NRes, +INF, -INF), or a value the meter left
out while naming its unit, keeps the unit and carries a ``data-absent-reason`` extension on the quantity's value.

:mod:`community.fhir.readback` reads an exported Observation back.
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from community.console.analytics import is_installation_test, taken_at
from community.fhir import codes
from community.fhir.codes import Concept, DeviceType
from community.storage import StoredReading
from protocols import gatt
from protocols.record import RecordKind

__all__ = [
    "ABSENT_URL",
    "DEVICE_TIME_URL",
    "SPECIAL_BY_REASON",
    "SPECS",
    "UNRELIABLE_URL",
    "ExportError",
    "Field",
    "Spec",
    "Special",
    "exportable",
    "fhir_string",
    "identifier",
    "observation",
    "reference",
    "resource_id",
    "system",
]

DEVICE_TIME_URL: Final = "urn:carehub:fhir:extension:device-time"
"""Extension: the meter's own time stamp exactly as it reported it (local time, no zone)."""
UNRELIABLE_URL: Final = "urn:carehub:fhir:extension:unreliable"
"""Extension: the hub or the meter flagged the reading as not trustworthy (movement, cuff fit, out of range)."""
ABSENT_URL: Final = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
"""Extension on a quantity's value: why there is no number (:class:`Special`, or ``unknown``)."""


class ExportError(ValueError):
    """A stored record cannot be exported as FHIR (its body is not what its kind promises)."""


class Special(enum.Enum):
    """An IEEE 11073 special value as decoded (``protocols/README.md``) and its FHIR data-absent reason."""

    NAN = ("NaN", "not-a-number")
    NRES = ("NRes", "error")
    POS_INF = ("+INF", "positive-infinity")
    NEG_INF = ("-INF", "negative-infinity")


_SPECIAL_BY_TEXT: Final = {s.value[0]: s for s in Special}
SPECIAL_BY_REASON: Final = {s.value[1]: s for s in Special}
"""A data-absent reason code -> the special value it stands for."""


def system(hub: str, what: str) -> str:
    """The identifier system of a hub's ``what`` (``record``, ``device``, ``resident``, ``alarm``)."""
    return f"urn:carehub:hub:{hub}:{what}"


def resource_id(prefix: str, hub: str, value: str) -> str:
    """A stable FHIR logical id (``[A-Za-z0-9.-]{1,64}``) for a hub's ``value``: the same input, the same id."""
    digest = hashlib.blake2b(f"{hub}\x1f{value}".encode(), digest_size=12, person=b"carehub-fhir").hexdigest()
    return f"{prefix}-{digest}"


_FHIR_STRING: Final = re.compile(r"[ \r\n\t\S]+")  # FHIR R4 ``string``: no control characters but tab, CR, LF


def fhir_string(value: str, what: str) -> str:
    """``value`` if a FHIR ``string`` can hold it.

    Raises:
        ExportError: ``value`` holds a character FHIR strings exclude (controls other than tab, CR and LF, and
            whitespace other than the space); such an id can come from a hub that does not check its names.
    """
    if _FHIR_STRING.fullmatch(value) is None:
        raise ExportError(f"{what} {value!r:.80} holds characters a FHIR string cannot carry")
    return value


def identifier(hub: str, what: str, value: str) -> dict[str, str]:
    """The carehub ``Identifier`` of a hub's ``what`` (``record``, ``device``, ``resident``, ``alarm``).

    Raises:
        ExportError: ``value`` is no FHIR string (:func:`fhir_string`).
    """
    return {"system": system(hub, what), "value": fhir_string(value, f"hub {hub}'s {what}")}


def reference(resource_type: str, hub: str, what: str, value: str, prefix: str) -> dict[str, Any]:
    """A ``Reference`` by logical id that also names the carehub identifier (so a reader can resolve either)."""
    return {
        "reference": f"{resource_type}/{resource_id(prefix, hub, value)}",
        "type": resource_type,
        "identifier": identifier(hub, what, value),
    }


@dataclass(frozen=True, slots=True)
class Field:
    """One measured value of a characteristic: its key in ``values``, its code, and where its unit comes from."""

    key: str
    concept: Concept | None  # a component's code; ``None`` for the Observation's own value (coded by the spec)
    unit_key: str | None = None  # the key of ``values`` that holds the unit word
    fixed_unit: str | None = None  # or the unit word when the characteristic fixes it


@dataclass(frozen=True, slots=True)
class Spec:
    """How a characteristic's values map: the Observation code, its own value (if any) and its components."""

    concept: Callable[[Mapping[str, Any]], Concept]
    primary: Field | None
    components: tuple[Field, ...]
    category: str
    device: DeviceType
    method: str | None = None  # ``Observation.method`` text, where the code alone does not tell the method

    def fields(self) -> tuple[Field, ...]:
        return self.components if self.primary is None else (self.primary, *self.components)


def _fixed(concept: Concept) -> Callable[[Mapping[str, Any]], Concept]:
    return lambda _values: concept


def _glucose(values: Mapping[str, Any]) -> Concept:
    return codes.glucose_concept(values.get("type"), str(values.get("unit")))


_OXIMETRY = Spec(
    _fixed(codes.SPO2),
    Field("spo2", None, fixed_unit="%"),
    (Field("pulse_rate", codes.PULSE_OXIMETER, fixed_unit="/min"),),
    "vital-signs",
    DeviceType.OXIMETER,
)
SPECS: Final[Mapping[int, Spec]] = MappingProxyType(
    {
        gatt.BloodPressureMeasurement.UUID: Spec(
            _fixed(codes.BP_PANEL),
            None,
            (
                Field("systolic", codes.BP_SYSTOLIC, unit_key="unit"),
                Field("diastolic", codes.BP_DIASTOLIC, unit_key="unit"),
                Field("mean_arterial", codes.BP_MEAN, unit_key="unit"),
                Field("pulse_rate", codes.PULSE_CUFF, fixed_unit="/min"),
            ),
            "vital-signs",
            DeviceType.BLOOD_PRESSURE,
        ),
        gatt.GlucoseMeasurement.UUID: Spec(
            _glucose, Field("concentration", None, unit_key="unit"), (), "laboratory", DeviceType.GLUCOSE
        ),
        gatt.PlxSpotCheckMeasurement.UUID: _OXIMETRY,
        gatt.PlxContinuousMeasurement.UUID: _OXIMETRY,
        gatt.TemperatureMeasurement.UUID: Spec(
            _fixed(codes.BODY_TEMPERATURE),
            Field("value", None, unit_key="unit"),
            (),
            "vital-signs",
            DeviceType.THERMOMETER,
        ),
        gatt.WeightMeasurement.UUID: Spec(
            _fixed(codes.BODY_WEIGHT),
            Field("weight", None, unit_key="unit"),
            (Field("bmi", codes.BMI, fixed_unit="kg/m2"), Field("height", codes.BODY_HEIGHT, unit_key="height_unit")),
            "vital-signs",
            DeviceType.SCALE,
        ),
        gatt.CgmMeasurement.UUID: Spec(
            _fixed(codes.CGM_GLUCOSE),
            Field("glucose", None, unit_key="unit"),  # the latest record of the value (protocols.gatt.cgm)
            (),
            "laboratory",
            DeviceType.CGM,
            method=codes.CGM_METHOD,
        ),
        gatt.HeartRateMeasurement.UUID: Spec(
            _fixed(codes.HEART_RATE),
            Field("heart_rate", None, fixed_unit="/min"),
            (),
            "vital-signs",
            DeviceType.HEART_RATE,
        ),
    }
)
"""Exported characteristics. Others measurement records (Glucose Measurement Context 0x2A34 and any other) are
not Observations of their own; :func:`exportable` says why."""


def exportable(reading: StoredReading) -> str | None:
    """``None`` when ``reading`` becomes an Observation; otherwise why not (a short reason, for the export's count).

    Installation-test data (``docs/protocol.md`` §3.10) is never exported: it is not the resident's. It is left out
    rather than exported with a ``meta.tag`` or a ``status``, because a FHIR client that does not look at tags would
    chart it as the patient's (security labels such as v3-ActReason ``HTEST`` are not honoured by every client), and
    no Observation status means "a check of the device" (``entered-in-error`` would claim a mistake). The platform
    keeps the record; ``carehub platform readings`` shows it with its mark.
    """
    if is_installation_test(reading):
        return f"installation-test {reading.kind}"
    if reading.kind != RecordKind.MEASUREMENT.value:
        return f"{reading.kind} record"
    uuid = reading.body.get("uuid")
    if uuid not in SPECS:
        return f"measurement 0x{uuid:04X}" if isinstance(uuid, int) else "measurement without a characteristic"
    values = reading.values or {}
    if uuid == gatt.GlucoseMeasurement.UUID and values.get("type") == codes.GLUCOSE_CONTROL_SOLUTION:
        return "glucose control-solution test"
    return None


def _unit(field: Field, values: Mapping[str, Any]) -> str | None:
    word = field.fixed_unit if field.fixed_unit is not None else values.get(field.unit_key or "")
    return word if isinstance(word, str) else None


def _quantity(field: Field, value: object, values: Mapping[str, Any], record_id: str) -> dict[str, Any]:
    word = _unit(field, values)
    ucum = codes.UCUM_UNITS.get(word or "")
    if ucum is None:
        raise ExportError(f"record {record_id}: {field.key} has no known unit ({word!r})")
    quantity: dict[str, Any] = {"unit": word, "system": codes.UCUM, "code": ucum}
    if value is None or isinstance(value, str):
        special = None if value is None else _SPECIAL_BY_TEXT.get(value)
        if value is not None and special is None:
            raise ExportError(f"record {record_id}: {field.key} is {value!r}, not a number")
        reason = "unknown" if special is None else special.value[1]
        quantity["_value"] = {"extension": [{"url": ABSENT_URL, "valueCode": reason}]}
    elif isinstance(value, int | float) and not isinstance(value, bool):
        quantity["value"] = value
    else:
        raise ExportError(f"record {record_id}: {field.key} is {value!r}, not a number")
    return quantity


def _component_code(field: Field) -> dict[str, object]:
    if field.concept is None:
        raise ExportError(f"component {field.key} has no code")
    return field.concept.to_json()


def _iso(at: _dt.datetime) -> str:
    return at.astimezone(_dt.UTC).isoformat()


def observation(reading: StoredReading, zone: _dt.tzinfo | None = None) -> dict[str, Any]:
    """The Observation of an exportable measurement record (:func:`exportable`), as FHIR JSON.

    ``zone`` is the home's time zone: with it, ``effectiveDateTime`` is the meter's own time when it is plausible
    (:func:`community.console.analytics.taken_at`); without, the hub's corrected or receive time.

    Raises:
        ExportError: the record is not exportable, or a value or unit is not what its characteristic sends.
    """
    why = exportable(reading)
    if why is not None:
        raise ExportError(f"record {reading.record_id}: {why} is not an Observation")
    values = reading.values or {}
    spec = SPECS[reading.body["uuid"]]
    hub = reading.hub
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": resource_id("obs", hub, reading.record_id),
        "identifier": [identifier(hub, "record", reading.record_id)],
        "status": "final",
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": spec.category}]}],
        "code": spec.concept(values).to_json(),
    }
    extensions: list[dict[str, Any]] = []
    if reading.device_time is not None:
        device_time = fhir_string(reading.device_time, f"record {reading.record_id}'s device time")
        extensions.append({"url": DEVICE_TIME_URL, "valueString": device_time})
    if reading.body.get("unreliable"):
        extensions.append({"url": UNRELIABLE_URL, "valueBoolean": True})
    if extensions:
        obs["extension"] = extensions
    if reading.resident_id is not None:
        obs["subject"] = reference("Patient", hub, "resident", reading.resident_id, "pat")
    if spec.method is not None:
        obs["method"] = {"text": spec.method}
    obs["effectiveDateTime"] = _iso(taken_at(reading, zone))
    obs["issued"] = _iso(reading.hub_time)
    if spec.primary is not None:
        value = values.get(spec.primary.key)
        if value is None and _unit(spec.primary, values) is None:
            obs["dataAbsentReason"] = {"coding": [{"system": codes.DATA_ABSENT_REASON, "code": "unknown"}]}
        else:
            obs["valueQuantity"] = _quantity(spec.primary, value, values, reading.record_id)
    if reading.device is not None:
        obs["device"] = reference("Device", hub, "device", reading.device, "dev")
    components = [
        {"code": _component_code(f), "valueQuantity": _quantity(f, values[f.key], values, reading.record_id)}
        for f in spec.components
        if values.get(f.key) is not None
    ]
    if components:
        obs["component"] = components
    return obs
