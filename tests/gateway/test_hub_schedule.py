"""A running hub raises the doctor's missed-measurement alarm from its config, in the home's zone, on the injected
clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.app import open_gateway
from gateway.ble import Reading
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.feedback import RecordingFeedback
from protocols import gatt
from protocols.ieee11073 import MderFloat
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.messages import AlarmSnooze, DownMessage
from sim.broker import free_port

CONFIG = """
[hub]
id = "sched-hub"
key_file = "hub.key"
timezone = "{zone}"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{port}"
[storage]
path = "outbox.sqlite"
[[residents]]
id = "r1"
language = "en"
schedule = [{{ vital = "blood_pressure", due = "10:00", grace_s = 3600 }}]
[[devices]]
address = "C0:11:00:00:00:01"
kind = "blood_pressure"
resident = "r1"
"""


async def test_missed_morning_blood_pressure_raises_a_reminder(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("sched-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    # No broker listens on this port: local safety never waits for the network.
    config = parse_config(CONFIG.format(port=free_port(), zone="UTC"), tmp_path / "hub.toml")
    clock = ManualClock(datetime(2026, 11, 25, 6, 0, tzinfo=UTC))
    recorder = RecordingFeedback()
    async with open_gateway(config, feedback=recorder, ble=False, clock=clock, tick_interval=3600) as gw:
        clock.advance(timedelta(hours=4, minutes=59))  # 10:59: still within the hour of grace
        await gw.hub.tick()
        assert "measure_reminder" not in recorder.messages()
        clock.advance(timedelta(minutes=2))  # 11:01
        await gw.hub.tick()
        assert "measure_reminder" in recorder.messages()
        assert gw.hub.counters.alarms["notice"] == 1
        stats = await gw.outbox.stats()
        assert stats.rows >= 1  # the alarm record waits in the outbox for the platform


async def test_caregiver_snooze_applies_below_critical_and_never_to_critical(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("sched-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = parse_config(CONFIG.format(port=free_port(), zone="UTC"), tmp_path / "hub.toml")
    clock = ManualClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    now = [clock.now()]
    recorder = RecordingFeedback()
    cuff = config.devices[0]
    async with open_gateway(config, feedback=recorder, ble=False, clock=clock, tick_interval=3600) as gw:
        hub = gw.hub
        # 165/95: a warning (bp_very_high); then a glucose level 2 hypo would be critical: build both alarms.
        bp = bytes(
            gatt.BloodPressureMeasurement(
                MderFloat.from_value(165), MderFloat.from_value(95), MderFloat.from_value(118)
            )
        )
        await hub.store_readings([Reading(cuff, 0x2A35, bp, now[0])])
        (warning,) = [a for a in hub.open_alarms() if a.condition == "bp.high"]
        snooze = DownMessage("sched-hub", 1, now[0], AlarmSnooze(warning.id, "nurse Li", 3600, now[0]))
        await hub.on_down(snooze)
        snoozed = hub.alarm_by_id(warning.id)
        assert snoozed is not None
        assert snoozed.snoozed_until == now[0] + timedelta(hours=1)
        assert hub.counters.snoozes_refused == 0
        # A critical alarm: the snooze is refused and the alarm keeps being re-raised.
        bp_crisis = bytes(
            gatt.BloodPressureMeasurement(
                MderFloat.from_value(192), MderFloat.from_value(122), MderFloat.from_value(145)
            )
        )
        await hub.store_readings([Reading(cuff, 0x2A35, bp_crisis, now[0])])
        clock.advance(timedelta(minutes=11))  # no re-measurement: the crisis is confirmed critical
        now[0] = clock.now()
        await hub.tick()
        (critical,) = [a for a in hub.open_alarms() if a.condition == "bp.high"]
        assert critical.tier.label == "critical"
        refused = DownMessage("sched-hub", 2, now[0], AlarmSnooze(critical.id, "nurse Li", 3600, now[0]))
        await hub.on_down(refused)
        assert hub.counters.snoozes_refused == 1
        still = hub.alarm_by_id(critical.id)
        assert still is not None
        assert still.snoozed_until is None
        before = recorder.messages().count("bp_crisis_confirmed")
        clock.advance(timedelta(minutes=6))
        await hub.tick()
        assert recorder.messages().count("bp_crisis_confirmed") > before


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        # Beijing time, UTC+8: the 10:00 slot's hour of grace ends at 03:00 UTC (a UTC hub would wait until 19:00).
        ("Asia/Shanghai", datetime(2026, 11, 25, 6, 0, tzinfo=ZoneInfo("Asia/Shanghai"))),
        # Berlin, across the night the clocks go forward (02:00 CET -> 03:00 CEST): 11:00 CEST is 09:00 UTC.
        ("Europe/Berlin", datetime(2026, 3, 29, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))),
        # New York, across the night the clocks go back (02:00 EDT -> 01:00 EST): 11:00 EST is 16:00 UTC.
        ("America/New_York", datetime(2026, 11, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))),
    ],
)
async def test_the_10_00_slot_is_judged_at_10_00_local_in_the_homes_zone(
    tmp_path: Path, zone: str, start: datetime
) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("sched-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = parse_config(CONFIG.format(port=free_port(), zone=zone), tmp_path / "hub.toml")
    assert config.timezone == ZoneInfo(zone)
    clock = ManualClock(start)
    recorder = RecordingFeedback()
    local = ZoneInfo(zone)
    async with open_gateway(config, feedback=recorder, ble=False, clock=clock, tick_interval=3600) as gw:
        # Elapsed time, in UTC: subtracting two times of one zone would give the wall clock's difference.
        clock.advance(datetime(2026, start.month, start.day, 9, 59, tzinfo=local).astimezone(UTC) - clock.now())
        await gw.hub.tick()
        assert "measure_due" not in recorder.messages()
        clock.advance(timedelta(minutes=1))  # 10:00 local: the resident is reminded, once
        await gw.hub.tick()
        assert recorder.messages().count("measure_due") == 1
        assert gw.hub.open_alarms() == ()  # a reminder is a cue, not an alarm
        clock.advance(datetime(2026, start.month, start.day, 10, 59, tzinfo=local).astimezone(UTC) - clock.now())
        await gw.hub.tick()
        assert recorder.messages().count("measure_due") == 1
        assert "measure_reminder" not in recorder.messages()
        clock.advance(timedelta(minutes=2))  # 11:01 local: the hour of grace after 10:00 local is over
        await gw.hub.tick()
        assert "measure_reminder" in recorder.messages()
        (alarm,) = [a for a in gw.hub.open_alarms() if a.condition == "schedule.missed"]
        assert alarm.opened_at == clock.now()
        assert alarm.opened_at.utcoffset() == timedelta(0)  # records keep UTC


async def test_a_wall_clock_step_neither_confirms_nor_delays_a_bp_crisis(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("sched-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = parse_config(CONFIG.format(port=free_port(), zone="Asia/Shanghai"), tmp_path / "hub.toml")
    clock = ManualClock(datetime(2026, 11, 25, 8, 0, tzinfo=UTC))
    recorder = RecordingFeedback()
    crisis = bytes(
        gatt.BloodPressureMeasurement(MderFloat.from_value(192), MderFloat.from_value(122), MderFloat.from_value(145))
    )
    async with open_gateway(config, feedback=recorder, ble=False, clock=clock, tick_interval=3600) as gw:
        await gw.hub.store_readings([Reading(config.devices[0], 0x2A35, crisis, clock.now())])
        clock.advance(timedelta(minutes=1))
        clock.step_wall(timedelta(hours=12))  # NTP steps the clock while the hub waits for the re-measurement
        await gw.hub.tick()
        (waiting,) = [a for a in gw.hub.open_alarms() if a.condition == "bp.high"]
        assert waiting.tier.label == "warning"  # not confirmed by the step
        clock.step_wall(timedelta(hours=-24))
        clock.advance(timedelta(minutes=9))  # ten minutes after the reading, whatever the wall clock says
        await gw.hub.tick()
        (confirmed,) = [a for a in gw.hub.open_alarms() if a.condition == "bp.high"]
        assert confirmed.tier.label == "critical"
