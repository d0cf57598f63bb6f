"""How fast stored readings become FHIR: Observations exported per second on one core (``carehub bench fhir``).

The figure covers what the bulk export does per record after reading the database: map every stored reading to its
resources (:func:`community.fhir.resources.build_export`) and serialise each Observation as an NDJSON line. The
readings are real records of six kinds of meter (blood pressure, glucose, oximeter, thermometer, scale, heart rate),
built before the clock starts. The goal (issue 18) is at least :data:`GOAL_PER_S` per core; it is reported, never
asserted.
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Final

from community.fhir.ndjson import ndjson_line
from community.fhir.resources import build_export
from community.storage import StoredReading
from protocols import gatt
from protocols.datetime_ import DateTime
from protocols.ieee11073 import MderFloat
from protocols.record import MeasurementBody, Record, measurement_record_id

__all__ = ["GOAL_PER_S", "fhir_figures", "observations_per_s", "sample_readings"]

GOAL_PER_S: Final = 5000.0
_T0: Final = _dt.datetime(2026, 3, 2, 1, 0, tzinfo=_dt.UTC)


def _measurement(n: int) -> tuple[str, gatt.Measurement]:
    stamp = DateTime(2026, 3, 2, 9, n % 60, n % 60)
    match n % 6:
        case 0:
            return "bp", gatt.BloodPressureMeasurement(
                MderFloat(110 + n % 40),
                MderFloat(70 + n % 20),
                MderFloat(85),
                timestamp=stamp,
                pulse_rate=MderFloat(66),
            )
        case 1:
            return "glucose", gatt.GlucoseMeasurement(
                n % 65536,
                stamp,
                concentration=MderFloat(90 + n % 50, -5),
                unit=gatt.GlucoseUnit.KG_PER_L,
                type=gatt.GlucoseType.CAPILLARY_WHOLE_BLOOD,
                sample_location=gatt.SampleLocation.FINGER,
            )
        case 2:
            return "oxi", gatt.PlxSpotCheckMeasurement(MderFloat(94 + n % 5), MderFloat(60 + n % 30))
        case 3:
            return "thermo", gatt.TemperatureMeasurement(MderFloat(360 + n % 15, -1), gatt.TemperatureUnit.CELSIUS)
        case 4:
            return "scale", gatt.WeightMeasurement.of(55 + (n % 200) * 0.005, gatt.WeightUnit.SI, bmi=22.1, height=1.6)
        case _:
            return "hr", gatt.HeartRateMeasurement(60 + n % 40, sensor_contact=True)


def sample_readings(count: int, homes: int = 50) -> list[StoredReading]:
    """``count`` stored measurement readings spread over ``homes`` hubs, one resident and six meters each."""
    out: list[StoredReading] = []
    for n in range(count):
        hub = f"hub-{n % homes:04d}"
        kind, m = _measurement(n)
        raw = bytes(m)
        at = _T0 + _dt.timedelta(seconds=n)
        device = f"{kind}-{n % homes}"
        record = Record(
            record_id=measurement_record_id(device, m.UUID, raw, n, None, at),
            hub_id=hub,
            seq=n,
            hub_time=at,
            body=MeasurementBody(m.UUID, raw, m.as_dict(), resident_id=f"resident-{n % homes}"),
            device_id=device,
        )
        out.append(StoredReading.from_record(record, n, 1.7e9))
    return out


def observations_per_s(count: int = 30_000, rounds: int = 3) -> float:
    """Best of ``rounds``: Observations mapped and serialised as NDJSON per second, on this core."""
    readings = sample_readings(count)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        export = build_export(readings)
        lines = [ndjson_line(o) for o in export.resources["Observation"]]
        elapsed = time.perf_counter() - start
        if len(lines) != count:
            raise RuntimeError(f"the FHIR bench exported {len(lines)} Observations of {count} readings")
        best = max(best, count / elapsed)
    return best


def fhir_figures(*, quick: bool = False) -> dict[str, float]:
    """``fhir_observations_per_s`` and ``fhir_goal_ratio`` (the figure over :data:`GOAL_PER_S`; >= 1 meets it)."""
    per_s = observations_per_s(3000 if quick else 30_000, 1 if quick else 3)
    return {"fhir_observations_per_s": round(per_s, 1), "fhir_goal_ratio": round(per_s / GOAL_PER_S, 2)}
