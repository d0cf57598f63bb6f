"""The doctor's console shows a continuous glucose monitor's readings as glucose readings (issue 14 item 7), read
from a real SQLite platform database."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from analytics_data import Home, store

from community.console.analytics import MeasurementKind, Vital, vital_readings
from protocols.gatt.cgm import CgmMeasurement

T = _dt.datetime(2026, 3, 2, 7, 5, tzinfo=_dt.UTC)


async def test_cgm_readings_are_glucose_readings_in_mg_dl(tmp_path: Path) -> None:
    home = Home()
    for mg, offset in [(110, 0), (52, 5)]:
        home._measurement("cgm-1", CgmMeasurement.of(mg, offset), T + _dt.timedelta(minutes=offset), device_time=None)
    shown = vital_readings(await store(tmp_path / "platform.sqlite", [home]))
    assert [dict(v.values) for v in shown] == [{Vital.GLUCOSE: 110.0}, {Vital.GLUCOSE: 52.0}]
    assert {v.source for v in shown} == {MeasurementKind.GLUCOSE}
    assert Vital.GLUCOSE.unit == "mg/dL"
