"""Issue 14 item 7, end to end: a simulated continuous glucose monitor (CGM Service 0x181F) on the relayed bumble
radio, the hub daemon as its service runs it (``python -m gateway``), real Mosquitto and the reference platform.

The sensor measures 110 mg/dL before the hub knows it (a stored record, read through the RACP with CGMS's time-offset
filter) and 52 mg/dL at time offset 5 (ADA level 2 hypoglycaemia, < 54 mg/dL, ``/work/shared/thresholds.md`` §2).
The platform stores both as CGM measurements (uuid 0x2AA7, mg/dL, time offsets 0 and 5) filed under the resident,
taken five minutes apart by the session clock the hub read from CGM Status, and a critical ``cgm.low`` alarm raised
for the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from relay_process import running_relay

from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage, StoredReading
from community.wire import PlatformCodec
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from sim import ble as sim_ble
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


def config_text(broker: MosquittoBroker, link: str, tmp: Path) -> str:
    return "\n".join(
        [
            "[hub]",
            f'id = "{HUB_ID}"',
            'key_file = "hub.key"',
            'timezone = "UTC"',
            "[platform]",
            'public_key_file = "platform.pub"',
            "[broker]",
            f'url = "{broker.url}"',
            "[storage]",
            f'path = "{tmp / "outbox.sqlite"}"',
            "[ble]",
            f'link = "{link}"',
            "[[residents]]",
            'id = "r1"',
            'name = "Resident"',
            "[[devices]]",
            f'address = "{SENSOR}"',
            'kind = "cgm"',
            'resident = "r1"',
        ]
    )


async def until(predicate: Callable[[], Awaitable[object]], what: str, log: Path) -> None:
    """Poll the platform's database (another process's progress has no event to await here) until it holds."""
    try:
        async with asyncio.timeout(BOUND):
            while True:
                if await predicate():
                    return
                await asyncio.sleep(0.05)  # another process's progress has no event to await here
    except TimeoutError:
        pytest.fail(f"waited {BOUND} s for {what}; hub log:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def cgm(readings: list[StoredReading]) -> list[StoredReading]:
    return [r for r in readings if r.kind == "measurement" and r.body.get("uuid") == 0x2AA7]


async def test_cgm_readings_reach_the_platform_and_a_level_2_hypo_is_critical(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    hub = HubIdentity.generate(HUB_ID)
    platform = PlatformIdentity.generate()
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    sensor = CgmSensor(DeviceOptions(id="cgm-1", address=SENSOR, name="CGM", bonding_required=True), RealClock())
    log = tmp_path / "hub.log"
    async with contextlib.AsyncExitStack() as stack:
        link = await stack.enter_async_context(running_relay(BOUND))
        (tmp_path / "hub.toml").write_text(config_text(mosquitto, link, tmp_path), encoding="utf-8")
        storage = await stack.enter_async_context(SqliteStorage(tmp_path / "platform.sqlite"))
        await storage.enroll_hub(hub.public)
        settings = WorkerSettings(mosquitto.host, mosquitto.port, client_id="cgm-test-platform")
        await stack.enter_async_context(IngestWorker(settings, storage, PlatformCodec(platform)))
        device = await stack.enter_async_context(sim_ble.open_peripheral_device(link, SENSOR, "CGM"))
        await stack.enter_async_context(sensor.attach(device))
        await sensor.measure(110, time_offset=0)  # stored before any hub listens: read through the RACP
        daemon = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(tmp_path / "hub.toml"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stack.enter_context(log.open("wb")),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stack.push_async_callback(daemon.wait)
        stack.callback(daemon.kill)

        async def first() -> bool:
            return len(cgm(await storage.readings(HUB_ID))) >= 1

        await until(first, "the stored CGM record at the platform", log)
        await sensor.measure(52, time_offset=5)

        async def hypo() -> bool:
            readings = await storage.readings(HUB_ID)
            alarms = [r for r in readings if r.kind == "alarm" and r.body.get("condition") == "cgm.low"]
            return len(cgm(readings)) >= 2 and bool(alarms)

        await until(hypo, "the hypo reading and its alarm at the platform", log)
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
