"""The hub's latency counters stay with the input they measure while other inputs interleave at its awaits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from gateway.app import open_gateway
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.events import PendantFrame
from gateway.feedback import RecordingFeedback
from protocols.keys import (
    HubIdentity,
    PlatformIdentity,
    save_hub_identity,
    save_pendant_key,
    save_platform_public_keys,
)
from protocols.pendant import PendantEvent, PendantEventType
from sim.broker import free_port

PENDANT = "C0:11:00:00:00:0A"
KEY = bytes(range(32))
CONFIG = f"""
[hub]
id = "lat-hub"
key_file = "hub.key"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{{port}}"
[storage]
path = "outbox.sqlite"
[[residents]]
id = "r1"
language = "en"
[[devices]]
address = "{PENDANT}"
kind = "pendant"
resident = "r1"
pendant_key_file = "pendant.key"
"""


async def test_a_tick_during_the_pendant_write_does_not_lose_the_press_latency(tmp_path: Path) -> None:
    save_hub_identity(tmp_path / "hub.key", HubIdentity.generate("lat-hub"))
    save_platform_public_keys(tmp_path / "platform.pub", PlatformIdentity.generate().public)
    save_pendant_key(tmp_path / "pendant.key", PENDANT, KEY)
    # No broker listens on this port: the press is handled locally either way.
    config = parse_config(CONFIG.format(port=free_port()), tmp_path / "hub.toml")
    pendant = config.devices[0]
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    writing = asyncio.Event()
    release = asyncio.Event()

    async def slow_writer(address: str, frame: bytes) -> bool:
        del address, frame
        writing.set()
        await release.wait()
        return True

    async with open_gateway(
        config, feedback=RecordingFeedback(), ble=False, clock=ManualClock(now), tick_interval=3600
    ) as gw:
        gw.hub.set_pendant_writer(slow_writer)
        press = bytes(PendantEvent(PendantEventType.PRESS, 1, 90, 10).sign(PENDANT, KEY))
        handling = asyncio.create_task(gw.hub.pendant_frame(PendantFrame(pendant, press)))
        await writing.wait()  # the hub has shown the cue and is writing the pendant's "help called" state
        await gw.hub.tick()  # another input (the timer) runs meanwhile
        release.set()
        confirm = await handling
        assert confirm is not None
        assert len(gw.hub.counters.panic_local_s) == 1
        assert 0 <= gw.hub.counters.panic_local_s[0] < 60
