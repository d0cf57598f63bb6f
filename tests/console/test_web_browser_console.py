"""Issue 18's done-means in a real headless Chromium (Playwright, the system's /usr/bin/chromium): a panic pressed in
a simulated home (the real hub with a signed pendant frame, its outbox and uplink, a real Mosquitto, the real ingest
worker) appears in the console's queue without a reload; a logged-in doctor acknowledges it and the hub receives
the ack (its call is answered, the resident hears it); a second doctor without access cannot see it, and the
attempt is audited."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import argon2
import pytest

from community.console.accounts import AccountStore, Role, Sharing, SharingLevel, accounts_path
from community.console.audit import SqliteAuditStore, audit_path, verify
from community.console.web import ConsoleSettings, open_console, serve_console
from community.ingest import IngestWorker, WorkerSettings
from community.storage import SqliteStorage
from community.wire import PlatformCodec
from gateway.app import open_gateway
from gateway.clock import ManualClock
from gateway.config import parse_config
from gateway.events import PendantFrame
from gateway.feedback import RecordingFeedback
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_pendant_key, save_platform_public_keys
from protocols.pendant import PendantEvent, PendantEventType
from sim.broker import MosquittoBroker

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)"
)
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

BOUND = 30  # seconds: an upper bound for awaiting events, never a sleep
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PENDANT = "C0:11:00:00:00:2A"
PENDANT_KEY = bytes(range(1, 33))
NOW = _dt.datetime(2026, 12, 1, 9, 30, tzinfo=_dt.UTC)
HUB_CONFIG = f"""
[hub]
id = "home-wang"
key_file = "hub.key"
timezone = "Asia/Shanghai"
[platform]
public_key_file = "platform.pub"
[broker]
url = "mqtt://127.0.0.1:{{port}}"
[storage]
path = "outbox.sqlite"
[[residents]]
id = "wang-fang"
language = "en"
[[devices]]
address = "{PENDANT}"
kind = "pendant"
resident = "wang-fang"
pendant_key_file = "pendant.key"
"""


async def until(event: asyncio.Event, predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        while not predicate():
            event.clear()
            if predicate():
                return
            await event.wait()


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def login(chromium: object, url: str, user: str, password: str) -> object:
    context = await chromium.new_context(locale="en-GB")  # type: ignore[attr-defined]
    page = await context.new_page()
    page.set_default_timeout(BOUND * 1000)
    await page.goto(f"{url}/login")
    await page.fill("#username", user)
    await page.fill("#password", password)
    await page.click("#submit")
    await page.wait_for_selector("#queue")
    return page


async def test_a_panic_reaches_the_doctor_live_is_acknowledged_to_the_hub_and_hidden_from_others(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    platform, hub = PlatformIdentity.generate(), HubIdentity.generate("home-wang")
    home = tmp_path / "home"
    home.mkdir()
    save_hub_identity(home / "hub.key", hub)
    save_platform_public_keys(home / "platform.pub", platform.public)
    save_pendant_key(home / "pendant.key", PENDANT, PENDANT_KEY)
    config = parse_config(HUB_CONFIG.format(port=mosquitto.port), home / "hub.toml")
    database = tmp_path / "platform" / "platform.db"
    database.parent.mkdir()
    with AccountStore(accounts_path(database), lambda: NOW, FAST) as accounts:
        accounts.add("dr-li", Role.DOCTOR, "correct horse", "Dr Li")
        accounts.add("dr-chen", Role.DOCTOR, "battery staple", "Dr Chen")
        accounts.set_sharing(Sharing("wang-fang", "dr-li", SharingLevel.OWN_DOCTOR))
    feedback = RecordingFeedback()
    async with (
        SqliteStorage(database) as storage,
        IngestWorker(WorkerSettings(mosquitto.host, mosquitto.port), storage, PlatformCodec(platform)) as worker,
        open_console(storage, worker, database, settings=ConsoleSettings(refresh_s=3600)) as console,
        serve_console(console, "127.0.0.1", 0) as port,
        open_gateway(config, feedback=feedback, ble=False, clock=ManualClock(NOW)) as gw,
        browser() as chromium,
        asyncio.TaskGroup() as tasks,
    ):
        await storage.enroll_hub(hub.public)

        async def offer_alarms() -> None:  # what `carehub platform run --console` does with the worker's alarms
            while True:
                await worker.alarms.get()
                console.feed.publish()

        pump = tasks.create_task(offer_alarms())
        async with asyncio.timeout(BOUND):
            await worker.connected.wait()
        url = f"http://127.0.0.1:{port}"
        doctor = await login(chromium, url, "dr-li", "correct horse")
        await doctor.wait_for_selector("#empty")  # type: ignore[attr-defined]
        await doctor.evaluate("window.notReloaded = true")  # type: ignore[attr-defined]

        frame = bytes(PendantEvent(PendantEventType.PRESS, 1, None, 1).sign(PENDANT, PENDANT_KEY))
        assert await gw.hub.pendant_frame(PendantFrame(config.devices[0], frame)) is not None
        row = await doctor.wait_for_selector('tr[data-hub="home-wang"]')  # type: ignore[attr-defined]
        assert await doctor.evaluate("window.notReloaded") is True  # type: ignore[attr-defined]
        text = await row.inner_text()
        assert "wang-fang" in text
        assert "Panic call" in text

        # While the call is open: a doctor without access to Wang Fang sees an empty queue, and is refused her page.
        other = await login(chromium, url, "dr-chen", "battery staple")
        await other.wait_for_selector("#empty")  # type: ignore[attr-defined]
        assert await other.query_selector('tr[data-hub="home-wang"]') is None  # type: ignore[attr-defined]
        response = await other.goto(f"{url}/residents/wang-fang")  # type: ignore[attr-defined]
        assert response.status == 403
        await other.wait_for_selector("#forbidden")  # type: ignore[attr-defined]
        assert not any(c.state.value == "answered" for c in gw.hub.panic_calls())  # still open then

        await doctor.click('tr[data-hub="home-wang"] button[value="ack"]')  # type: ignore[attr-defined]
        await until(worker.stored, lambda: any(c.state.value == "answered" for c in gw.hub.panic_calls()))
        assert "panic_answered" in feedback.messages()  # the resident hears that help is on the way
        pump.cancel()

    with SqliteAuditStore(audit_path(database)) as store:
        entries = list(store.entries())
    verify(entries)
    seen = [(e.actor, e.action, e.resident) for e in entries]
    assert ("dr-li", "alarm.ack", "wang-fang") in seen
    assert ("dr-chen", "access.denied", "wang-fang") in seen
    assert ("dr-chen", "view.queue", "wang-fang") not in seen
