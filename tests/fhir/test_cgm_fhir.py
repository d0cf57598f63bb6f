"""CGM readings as FHIR Observations (issue 14 item 7): interstitial glucose in mg/dL, coded LOINC 99504-3 and
MDC_CONC_GLU_ISF (the codes carehub's FHIR sources give interstitial fluid, community/fhir/codes.py [HDDT]) with the
method naming continuous monitoring, validated as R4B and read back exactly; the device is typed
MDC_DEV_SPEC_PROFILE_CGM."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from cgm_strategies import cgm_measurement
from fhir_data import T0, measurement_record, stored, validate
from hypothesis import HealthCheck, given, settings

from community.fhir import codes
from community.fhir.mapping import exportable, observation
from community.fhir.readback import expected_facts, observation_facts
from protocols.gatt.cgm import CgmMeasurement


def _round_trip(obs: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(json.dumps(obs, allow_nan=False))
    return parsed


def test_a_hypo_reading_is_coded_as_interstitial_glucose_by_cgm() -> None:
    reading = stored(measurement_record(CgmMeasurement.of(52, 35), T0))
    assert exportable(reading) is None
    obs = observation(reading)
    validate(obs)
    codings = {(c["system"], c["code"]) for c in obs["code"]["coding"]}
    assert codings == {(codes.LOINC, "99504-3"), (codes.MDC, "160212")}
    assert obs["valueQuantity"] == {"unit": "mg/dL", "system": codes.UCUM, "code": "mg/dL", "value": 52}
    assert obs["method"] == {"text": codes.CGM_METHOD}
    facts = observation_facts(_round_trip(obs))
    assert facts.values == {"glucose": 52, "unit": "mg/dL"}


def test_the_cgm_device_type_is_its_own() -> None:
    assert codes.DeviceType.CGM.to_json()["coding"] == [
        {"system": codes.MDC, "code": "528409", "display": "MDC_DEV_SPEC_PROFILE_CGM"}
    ]
    assert codes.DeviceType.HEART_RATE.value[1] == 8 * 65536 + 4137


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=cgm_measurement())
def test_round_trip_is_exact(m: CgmMeasurement) -> None:
    at = _dt.datetime(2026, 3, 2, 7, 5, tzinfo=_dt.UTC)
    reading = stored(measurement_record(m, at))
    obs = observation(reading)
    validate(obs)
    facts = observation_facts(_round_trip(obs))
    assert facts == expected_facts(reading, None)
    assert facts.values == {"glucose": m.as_dict()["glucose"], "unit": "mg/dL"}
