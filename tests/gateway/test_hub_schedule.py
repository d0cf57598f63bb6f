"""A running hub raises the doctor's missed-measurement alarm from its config, on the injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.app import open_gateway
from gateway.config import parse_config
from gateway.feedback import RecordingFeedback
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
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
