"""The installer page pairs a meter that shows a 6-digit PIN (issue 14 item 3), in a real headless Chromium
(Playwright, the system's /usr/bin/chromium): the PIN field appears only when the meter asks; a wrong PIN is one
message, nothing saved and no bond kept; the right one pairs it. The routes' refusals are checked without a browser."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hub_files import bonded_peers, new_hub, passkey_cuff
from provision_kit import BOUND, pairing_page

from gateway.config import load_config
from gateway.provision.files import HubPaths
from gateway.provision.pin import issue_pin
from sim.devices.quirks import PasskeyCuff

CHROMIUM = Path("/usr/bin/chromium")
CUFF = "C0:00:00:00:64:01"
PIN = 630_518
_links = itertools.count()
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[HubPaths, PasskeyCuff, str, str]]:
    """The page on 127.0.0.1 for a hub whose radio has the passkey cuff on it: (paths, cuff, url, installer PIN)."""
    link = f"local:web-passkey-{next(_links)}"
    paths = new_hub(tmp_path, link, hub_id="hub-pin")
    pin = issue_pin(paths)
    cuff = passkey_cuff(CUFF, PIN)
    async with pairing_page(paths, link, cuff) as url:
        yield paths, cuff, url, pin


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
            assert bonded_peers(paths) == []

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
    assert len(bonded_peers(paths)) == 1
