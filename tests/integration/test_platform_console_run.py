"""``carehub platform run --console`` (issue 18): a real worker process serves the console; an alarm frame a hub
publishes wakes the doctor's open event stream, and the doctor's ack goes down to the hub, platform-signed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import aiomqtt
import argon2
import pytest
from test_platform_supervision import BOUND, enroll, frame, spawn, stop, write_platform

from community.console.accounts import AccountStore, Role, Sharing, SharingLevel, accounts_path
from community.samples import T0, alarm_record
from gateway.wire import HubWire
from protocols.keys import HubIdentity, PlatformIdentity
from protocols.messages import AlarmAcknowledgement
from sim.broker import MosquittoBroker

FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


async def next_event(stream: aiohttp.StreamReader) -> str:
    lines = []
    async with asyncio.timeout(BOUND):
        while (line := (await stream.readline()).decode()) != "\n":
            lines.append(line)
    return "".join(lines)


@pytest.mark.integration
async def test_platform_run_serves_the_console_live_and_sends_the_doctors_ack(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("hub-a")
    cfg = write_platform(tmp_path, mosquitto, platform)
    await enroll(tmp_path / "platform.db", hub)
    with AccountStore(accounts_path(tmp_path / "platform.db"), lambda: T0, FAST) as accounts:
        accounts.add("dr-li", Role.DOCTOR, "correct horse", "Dr Li")
        accounts.set_sharing(Sharing("resident-1", "dr-li", SharingLevel.OWN_DOCTOR))
    proc = await spawn(["platform", "run", "-c", str(cfg), "--console", "127.0.0.1:0", "--escalate-after", "60"])
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(BOUND):
            announced = (await proc.stdout.readline()).decode()
        match = re.search(r"console on (http://127\.0\.0\.1:\d+)/", announced)
        assert match, announced
        base = match.group(1)
        async with asyncio.timeout(BOUND):
            assert b"ingesting from" in await proc.stdout.readline()
        wire = HubWire(hub, platform.public)
        async with (
            aiohttp.ClientSession(headers={"Origin": base}, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
            aiomqtt.Client(mosquitto.host, mosquitto.port) as client,
        ):
            login = await http.post(f"{base}/login", data={"username": "dr-li", "password": "correct horse"})
            assert login.status == 200  # after the redirect to the queue
            csrf = (await login.text()).split('name="csrf" value="', 1)[1].split('"', 1)[0]
            events = await http.get(f"{base}/events")
            assert "alarm-9" not in await next_event(events.content)
            await client.subscribe("carehub/v1/hub-a/down", qos=1)
            await client.publish("carehub/v1/hub-a/alarm", frame(wire, 1, [alarm_record("hub-a", "alarm-9", 1)]), qos=1)
            live = await next_event(events.content)
            assert 'data-alarm="alarm-9"' in live  # no reload: the stream woke
            assert "escalated" in live  # critical, raised (T0) far more than 60 s ago, unanswered
            events.close()
            ack = await http.post(f"{base}/alarms/hub-a/alarm-9/ack", data={"csrf": csrf}, allow_redirects=False)
            assert ack.status == 303
            async with asyncio.timeout(BOUND):
                message = await anext(aiter(client.messages))
            down = wire.open_down(bytes(message.payload))
            assert isinstance(down.body, AlarmAcknowledgement)
            assert (down.body.alarm_id, down.body.by) == ("alarm-9", "Dr Li")
    finally:
        await stop(proc)


async def test_platform_run_refuses_a_bad_console_address_in_one_line(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = write_platform(tmp_path, mosquitto, PlatformIdentity.generate())
    proc = await spawn(["platform", "run", "-c", str(cfg), "--console", "nowhere"])
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert len(err.decode().strip().splitlines()) == 1
    assert "--console" in err.decode()
