"""Issue 14 item 7, end to end: a simulated continuous glucose monitor (CGM Service 0x181F) on the relayed bumble
radio, the hub daemon as its service runs it (``python -m gateway``), real Mosquitto and the reference platform.

The sensor measures 110 mg/dL before the hub knows it (a stored record, read through the RACP with CGMS's time-offset
filter) and 52 mg/dL at time offset 5 (ADA level 2 hypoglycaemia, < 54 mg/dL, ``/work/shared/thresholds.md`` §2).
The platform stores both as CGM measurements (uuid 0x2AA7, mg/dL, time offsets 0 and 5) filed under the resident,
taken five minutes apart by the session clock the hub read from CGM Status, and a critical ``cgm.low`` alarm raised
for the second.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pytest
from home_setup import running_home

from community.storage import StoredReading
from sim.broker import MosquittoBroker, mosquitto_available
from sim.clock import RealClock
from sim.devices.cgm import CgmSensor
from sim.devices.options import DeviceOptions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed"),
]

HUB_ID = "cgm-hub"
SENSOR = "C0:47:00:00:00:01"
BOUND = 90.0  # seconds for any one step: an upper bound on an awaited outcome, never a wait


def cgm(readings: list[StoredReading]) -> list[StoredReading]:
    return [r for r in readings if r.kind == "measurement" and r.body.get("uuid") == 0x2AA7]


async def test_cgm_readings_reach_the_platform_and_a_level_2_hypo_is_critical(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    sensor = CgmSensor(DeviceOptions(id="cgm-1", address=SENSOR, name="CGM", bonding_required=True), RealClock())
    async with running_home(tmp_path, mosquitto, sensor, hub_id=HUB_ID, kind="cgm", bound=BOUND) as home:
        storage = home.storage
        await sensor.measure(110, time_offset=0)  # stored before any hub listens: read through the RACP
        await home.start_hub()

        async def first() -> bool:
            return len(cgm(await storage.readings(HUB_ID))) >= 1

        await home.until_stored(first, "the stored CGM record at the platform")
        await sensor.measure(52, time_offset=5)

        async def hypo() -> bool:
            readings = await storage.readings(HUB_ID)
            alarms = [r for r in readings if r.kind == "alarm" and r.body.get("condition") == "cgm.low"]
            return len(cgm(readings)) >= 2 and bool(alarms)

        await home.until_stored(hypo, "the hypo reading and its alarm at the platform")
        readings = await storage.readings(HUB_ID)

    measured = cgm(readings)
    assert sorted((r.body["values"]["glucose"], r.body["values"]["time_offset_min"]) for r in measured) == [
        (52, 5),
        (110, 0),
    ]
    assert all(r.body["values"]["unit"] == "mg/dL" and r.resident_id == "r1" for r in measured)
    assert len({r.record_id for r in measured}) == 2  # each reading stored once
    # Taken at the session start (the hub read CGM Status: how long the session had run) plus each time offset.
    taken = {r.body["values"]["time_offset_min"]: r.body["corrected_time"] for r in measured}
    assert all(r.body["clock_corrected"] for r in measured)
    assert _dt.datetime.fromisoformat(taken[5]) - _dt.datetime.fromisoformat(taken[0]) == _dt.timedelta(minutes=5)
    alarms = [r for r in readings if r.kind == "alarm" and r.body.get("condition") == "cgm.low"]
    assert alarms[0].body["tier"] == "critical"
    assert alarms[0].body["state"] == "raised"
    assert all(r.body.get("condition") != "glucose.swing" for r in readings if r.kind == "alarm")
