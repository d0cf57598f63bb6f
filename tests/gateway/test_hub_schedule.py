"""A running hub raises the doctor's missed-measurement alarm from its config, on the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.app import open_gateway
from gateway.ble import Reading
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
    config = parse_config(CONFIG.format(port=free_port()), tmp_path / "hub.toml")
    now = [datetime(2026, 11, 25, 6, 0, tzinfo=UTC)]
    recorder = RecordingFeedback()
    async with open_gateway(config, feedback=recorder, ble=False, now=lambda: now[0], tick_interval=3600) as gw:
        now[0] += timedelta(hours=4, minutes=59)  # 10:59: still within the hour of grace
        await gw.hub.tick()
        assert "measure_reminder" not in recorder.messages()
        now[0] += timedelta(minutes=2)  # 11:01
        await gw.hub.tick()
        assert "measure_reminder" in recorder.messages()
        assert gw.hub.counters.alarms["notice"] == 1
        stats = await gw.outbox.stats()
        assert stats.rows >= 1  # the alarm record waits in the outbox for the platform


async def test_caregiver_snooze_applies_below_critical_and_never_to_critical(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("sched-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    config = parse_config(CONFIG.format(port=free_port()), tmp_path / "hub.toml")
    now = [datetime(2026, 11, 25, 8, 0, tzinfo=UTC)]
    recorder = RecordingFeedback()
    cuff = config.devices[0]
    async with open_gateway(config, feedback=recorder, ble=False, now=lambda: now[0], tick_interval=3600) as gw:
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
        assert hub.alarm_by_id(warning.id).snoozed_until == now[0] + timedelta(hours=1)
        assert hub.counters.snoozes_refused == 0
        # A critical alarm: the snooze is refused and the alarm keeps being re-raised.
        bp_crisis = bytes(
            gatt.BloodPressureMeasurement(
                MderFloat.from_value(192), MderFloat.from_value(122), MderFloat.from_value(145)
            )
        )
        await hub.store_readings([Reading(cuff, 0x2A35, bp_crisis, now[0])])
        now[0] += timedelta(minutes=11)  # no re-measurement: the crisis is confirmed critical
        await hub.tick()
        (critical,) = [a for a in hub.open_alarms() if a.condition == "bp.high"]
        assert critical.tier.label == "critical"
        refused = DownMessage("sched-hub", 2, now[0], AlarmSnooze(critical.id, "nurse Li", 3600, now[0]))
        await hub.on_down(refused)
        assert hub.counters.snoozes_refused == 1
        assert hub.alarm_by_id(critical.id).snoozed_until is None
        before = recorder.messages().count("bp_crisis_confirmed")
        now[0] += timedelta(minutes=6)
        await hub.tick()
        assert recorder.messages().count("bp_crisis_confirmed") > before
