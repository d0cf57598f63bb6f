"""The installer page's pairing route with a multi-user UDS scale (issue 14 item 6): a consent code is checked with
the user before the radio, tried on the scale while it pairs, and saved with it; a code the scale refuses is one
message and nothing is saved. Through the real aiohttp app on 127.0.0.1 and the simulated radio."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hub_files import family_scale, new_hub
from provision_kit import pairing_page

from gateway.config import load_config
from gateway.provision.files import HubPaths
from gateway.provision.pin import issue_pin
from sim.devices.uds_scale import UdsScale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SCALE = "C0:00:00:00:65:01"
_links = itertools.count()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[HubPaths, UdsScale, str, str]]:
    """The page for a hub whose radio has a two-user scale on it: (paths, scale, url, installer PIN)."""
    link = f"local:web-consent-{next(_links)}"
    paths = new_hub(tmp_path, link, hub_id="hub-uds")
    pin = issue_pin(paths)
    scale = family_scale(SCALE)
    async with pairing_page(paths, link, scale) as url:
        scale.wake()
        yield paths, scale, url, pin


async def test_the_pair_route_tries_and_saves_the_consent_code(served: tuple[HubPaths, UdsScale, str, str]) -> None:
    paths, scale, url, pin = served
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(f"{url}/api/login", json={"pin": pin}) as r:
            headers = {"X-CSRF-Token": (await r.json())["csrf"]}
        pair = {"address": SCALE, "resident": "r1", "kind": "scale"}
        for bad, words in (
            ({"consent_code": "1234"}, "a consent code belongs to one user of the scale"),
            ({"user_id": "1", "consent_code": "12345"}, "consent code 12345 is not 0 to 9999"),
            ({"user_id": "1", "consent_code": "abc"}, "the consent code must be a number"),
        ):
            async with http.post(f"{url}/api/pair", json=pair | bad, headers=headers) as r:
                assert r.status == 400  # refused before the radio is used
                assert (await r.json())["error"].startswith(words)
        assert scale.answers == []
        async with http.post(
            f"{url}/api/pair", json=pair | {"user_id": "1", "consent_code": "4321"}, headers=headers
        ) as r:
            assert r.status >= 400
            assert f"{SCALE} refused the consent code for user 1 (user not authorized)" in (await r.json())["error"]
        assert load_config(paths.config).devices == ()
        async with http.post(
            f"{url}/api/pair", json=pair | {"user_id": "1", "consent_code": "1234"}, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
    (device,) = load_config(paths.config).devices
    assert (device.user_id, device.consent_code) == (1, 1234)
