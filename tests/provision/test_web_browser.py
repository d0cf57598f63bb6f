"""The installer page in a real headless Chromium (Playwright, the system's /usr/bin/chromium): wrong PIN, log in,
scan, pair the simulated cuff, run the installation test through the real gateway, read the signed report."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from provision_kit import BOUND, CUFF, Platform, make_home, serving

import sim.ble
from gateway.config import load_config
from gateway.provision.files import HubPaths
from gateway.provision.pin import issue_pin
from gateway.provision.steps import (
    ReferencePlatformEnroller,
    apply_thresholds,
    effective_thresholds,
    enroll_hub,
    init_hub,
    set_resident,
)
from gateway.provision.web import WebSettings, make_app
from gateway.thresholds import Key

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (apt-get install chromium)"
)
playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

_links = itertools.count()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_pair_and_test_from_a_phone(tmp_path: Path, platform: Platform, browser: object) -> None:
    link = f"local:web{next(_links)}"
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-web",
        platform=platform.identity.public,
        broker_url=platform.broker_url,
        username="hub-web",
        password=None,
        link=link,
    )
    await enroll_hub(paths, ReferencePlatformEnroller(platform.config))
    set_resident(paths, "r1", name="Wang Fang")
    pin = issue_pin(paths)
    home = make_home(link)
    async with sim.ble.open_central(link, keystore=str(paths.bonds)), home.stack:
        await home.attach(home.cuff)
        app = make_app(
            WebSettings(paths, link=link, scan_seconds=2.0, test_timeout=BOUND), radio=sim.ble.backend_for(link)
        )
        async with serving(app) as url:
            page = await browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
            page.set_default_timeout(BOUND * 1000)
            await page.goto(url + "/")

            wrong = "000000" if pin != "000000" else "111111"
            await page.fill("#pin", wrong)
            await page.click("#login-btn")
            await page.wait_for_selector("#login-msg:has-text('wrong PIN')")
            await page.fill("#pin", pin)
            await page.click("#login-btn")
            await page.wait_for_selector("#hub:has-text('hub-web')")

            home.cuff.wake()
            await page.click("#scan-btn")
            await page.wait_for_selector(f"button.choose[data-address='{CUFF}']")
            await page.wait_for_selector("#pair-msg:has-text('scan done')")
            await page.click(f"button.choose[data-address='{CUFF}']")
            await page.wait_for_selector("#pair-how:has-text('P')")
            await page.fill("#puser", "1")
            await page.click("#pair-btn")
            await page.wait_for_selector("#pair-msg:has-text('Paired C0:00:00:00:00:01')")
            assert "blood_pressure C0:00:00:00:00:01" in await page.inner_text("#paired")

            await page.fill("#installer", "Li Wei")
            await page.click("#test-btn")
            await page.wait_for_selector("#log li:has-text('Put the cuff on')")
            await home.cuff.measure(131, 84, 66)
            await page.wait_for_selector("#report:has-text('PASSED')")
            report = await page.inner_text("#report")
            assert "Li Wei" in report
            assert CUFF in report
            assert (paths.reports / "latest.json").exists()


async def test_thresholds_keep_the_doctors_profile_and_steps_show_done(
    tmp_path: Path, platform: Platform, browser: object
) -> None:
    """Issue 16.1: applying one override from the page kept ``profiles = ["hypertension"]`` only if the page showed
    it ticked; it did not, so the profile was dropped and diastolic critical went from 110 to 120. Step 2 never
    showed as done after enrolment."""
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id="hub-thr",
        platform=platform.identity.public,
        broker_url=platform.broker_url,
        username="hub-thr",
        password=None,
        link="local:web-thr",
    )
    await enroll_hub(paths, ReferencePlatformEnroller(platform.config))
    set_resident(paths, "r1", name="Wang Fang")
    apply_thresholds(paths, "r1", profiles=["hypertension"])
    before = effective_thresholds(load_config(paths.config), "r1")
    assert before[Key.BP_DIA_CRITICAL_HIGH] == 110.0  # the hypertension profile (shared/thresholds.md)
    pin = issue_pin(paths)
    app = make_app(WebSettings(paths, link="local:web-thr", scan_seconds=1.0, test_timeout=BOUND))
    async with serving(app) as url:
        page = await browser.new_page(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
        page.set_default_timeout(BOUND * 1000)
        await page.goto(url + "/")
        await page.fill("#pin", pin)
        await page.click("#login-btn")
        await page.wait_for_selector("#hub:has-text('hub-thr')")
        for section in ("init-sec", "enroll-sec", "residents-sec", "thr-sec"):
            assert (await page.inner_text(f"#{section} h2")).endswith("(done)"), section
        assert not (await page.inner_text("#pair-sec h2")).endswith("(done)")
        assert await page.is_checked(".profile[value='hypertension']")
        await page.fill("#tset", "bp.systolic.critical_high=175")
        await page.click("#thr-btn")
        await page.wait_for_selector("#thr-msg:has-text('saved')")
        assert await page.is_checked(".profile[value='hypertension']")
    config = load_config(paths.config)
    assert config.resident("r1").profiles == ("hypertension",)
    after = effective_thresholds(config, "r1")
    assert after[Key.BP_SYS_CRITICAL_HIGH] == 175.0
    assert after[Key.BP_DIA_CRITICAL_HIGH] == 110.0
