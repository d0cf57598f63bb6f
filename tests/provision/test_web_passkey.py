"""The installer page pairs a meter that shows a 6-digit PIN (issue 14 item 3), in a real headless Chromium
(Playwright, the system's /usr/bin/chromium): the PIN field appears only when the meter asks; a wrong PIN is one
message, nothing saved and no bond kept; the right one pairs it. The routes' refusals are checked without a browser."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from provision_kit import BOUND

import sim.ble
from gateway.ble_passkey import PasskeyDesk
from gateway.config import load_config
from gateway.provision.files import HubPaths
from gateway.provision.pin import issue_pin
from gateway.provision.steps import init_hub, set_resident
from gateway.provision.web import WebSettings, make_app
from protocols.keys import PlatformIdentity
from sim.clock import ManualClock
from sim.devices.options import DeviceOptions
from sim.devices.quirks import PasskeyCuff

CHROMIUM = Path("/usr/bin/chromium")
CUFF = "C0:00:00:00:64:01"
PIN = 630_518
_links = itertools.count()
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _hub(tmp_path: Path, link: str) -> HubPaths:
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-pin",
        platform=PlatformIdentity.generate().public,
        broker_url="mqtt://127.0.0.1:9",
        username=None,
        password=None,
        link=link,
    )
    set_resident(paths, "r1", name="Wang Fang")
    return paths


def _bonds(paths: HubPaths) -> list[str]:
    if not paths.bonds.exists():
        return []
    return [peer for ns in json.loads(paths.bonds.read_text(encoding="utf-8")).values() for peer in ns]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[HubPaths, PasskeyCuff, str, str]]:
    """The page on 127.0.0.1 for a hub whose radio has the passkey cuff on it: (paths, cuff, url, installer PIN)."""
    link = f"local:web-passkey-{next(_links)}"
    paths = _hub(tmp_path, link)
    pin = issue_pin(paths)
    options = DeviceOptions(id="cuff", address=CUFF, name="Cuff", advertise_seconds=3600)
    cuff = PasskeyCuff(options, ManualClock(datetime(2024, 3, 4, 7, 0, tzinfo=UTC)), passkey=PIN)
    desk = PasskeyDesk()
    async with (
        sim.ble.open_central(link, keystore=str(paths.bonds)) as central,
        sim.ble.open_peripheral_device(link, CUFF, "Cuff") as radio,
        cuff.attach(radio),
    ):
        sim.ble.world.answer_pairing_with(central.device, desk)
        app = make_app(WebSettings(paths, link=link, scan_seconds=2.0), radio=sim.ble.backend_for(link), desk=desk)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield paths, cuff, f"http://127.0.0.1:{runner.addresses[0][1]}", pin
        finally:
            await runner.cleanup()


async def test_the_passkey_routes_refuse_what_they_cannot_use(served: tuple[HubPaths, PasskeyCuff, str, str]) -> None:
    _paths, _cuff, url, pin = served
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{url}/api/login", json={"pin": pin}) as r:
            csrf = (await r.json())["csrf"]
        headers = {"X-CSRF-Token": csrf}
        async with http.get(f"{url}/api/passkey", headers=headers) as r:
            assert await r.json() == {"waiting": None}
        async with http.post(f"{url}/api/passkey", json={"passkey": "12345"}, headers=headers) as r:
            assert r.status == 400
            assert "6 digits" in (await r.json())["error"]
        async with http.post(f"{url}/api/passkey", json={"passkey": "123456"}, headers=headers) as r:
            assert r.status == 400
            assert (await r.json())["error"] == "no meter is asking for a PIN now"
        body = {"address": CUFF, "resident": "r1", "passkey": "12 45"}
        async with http.post(f"{url}/api/pair", json=body, headers=headers) as r:
            assert r.status == 400  # refused before the radio is used
        async with http.get(f"{url}/api/passkey") as r:
            assert r.status == 403  # the session's page token is missing


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)")
async def test_the_page_asks_for_the_pin_the_meter_shows(served: tuple[HubPaths, PasskeyCuff, str, str]) -> None:
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    paths, cuff, url, pin = served
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            page.set_default_timeout(BOUND * 1000)
            await page.goto(url + "/")
            await page.fill("#pin", pin)
            await page.click("#login-btn")
            await page.wait_for_selector("#hub:has-text('hub-pin')")
            cuff.wake()
            await page.click("#scan-btn")
            await page.wait_for_selector(f"button.choose[data-address='{CUFF}']")
            await page.wait_for_selector("#pair-msg:has-text('scan done')")  # the radio is free again
            await page.click(f"button.choose[data-address='{CUFF}']")
            assert await page.is_hidden("#mpin-form")  # no PIN field until the meter asks

            await page.click("#pair-btn")
            await page.wait_for_selector(f"#mpin-what:has-text('{CUFF} shows a 6-digit PIN')")
            await page.fill("#mpin", f"{PIN + 1:06d}")  # mistyped
            await page.click("#mpin-btn")
            await page.wait_for_selector(f"#pair-msg:has-text('{CUFF} refused the PIN {PIN + 1:06d}')")
            assert "nothing was saved" in await page.inner_text("#pair-msg")
            await page.wait_for_selector("#mpin-form", state="hidden")
            assert load_config(paths.config).devices == ()
            assert _bonds(paths) == []

            await page.click("#pair-btn")  # again, with the right PIN
            await page.wait_for_selector(f"#mpin-what:has-text('{CUFF} shows a 6-digit PIN')")
            await page.fill("#mpin", f"{PIN:06d}")
            await page.click("#mpin-btn")
            await page.wait_for_selector(f"#pair-msg:has-text('Paired {CUFF}')")
            assert f"blood_pressure {CUFF}" in await page.inner_text("#paired")
        finally:
            await browser.close()
    assert cuff.shown == [PIN, PIN]
    assert [d.address for d in load_config(paths.config).devices] == [CUFF]
    assert len(_bonds(paths)) == 1
