"""The installation test names the real cause when the pendant's presses do not verify (issue 16 item 3): a pendant
holding another key than the one paired for it was reported as "no press within N s", with the cause ("event tag
does not verify") only in the hub's log. Over the simulated radio, through the real hub under test."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub_files import new_hub
from provision_kit import BOUND, PENDANT, Home, installation_test_prompting

from gateway.config import DeviceKind, load_config
from gateway.provision.radio import open_radio
from gateway.provision.steps import add_device
from protocols.keys import save_pendant_key

OTHER_KEY = bytes(range(1, 33))  # the hub's key file; the simulated pendant holds provision_kit.PENDANT_KEY


async def test_a_pendant_with_another_key_fails_the_test_with_the_tag_cause(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    key_file = paths.keys / "pendant.key"
    save_pendant_key(key_file, PENDANT, OTHER_KEY)
    add_device(paths, address=PENDANT, kind=DeviceKind.PENDANT, resident="r1", pendant_key_file=key_file)
    config = load_config(paths.config)
    async with open_radio(home.link, keystore=paths.bonds) as (scanner, client):
        test = await installation_test_prompting(config, scanner, client)
        await home.pendant.press()
        async with asyncio.timeout(BOUND * 2):
            report = await test
    (outcome,) = report.devices
    assert not outcome.ok
    assert "event tag does not verify" in outcome.detail
    assert "no press within" not in outcome.detail
    assert f"carehub provision pair {PENDANT}" in outcome.detail
