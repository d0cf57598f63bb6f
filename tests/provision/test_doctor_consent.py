"""`carehub doctor` names a multi-user scale that keeps refusing its UDS consent code (issue 14 item 6; the
``consent:<address>`` cursor the BLE sessions keep, `gateway.ble_steps`) with the command that pairs it again with
the right code."""

from __future__ import annotations

from pathlib import Path

from hub_files import new_hub
from provision_kit import device_check, write_test_report

from gateway.ble_steps import consent_cursor_key
from gateway.config import DeviceKind, load_config
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status
from gateway.provision.steps import add_device

SCALE = "C0:00:00:00:0A:52"


async def test_a_scale_refusing_its_consent_code_fails_its_check_with_the_fix(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=SCALE, kind=DeviceKind.SCALE, resident="r1", user_id=1, consent_code=4321)
    write_test_report(paths, {"address": SCALE, "ok": True, "battery": 90})
    config = load_config(paths.config)
    assert config.devices[0].consent_code == 4321
    async with open_outbox(config.storage_path) as outbox:
        await outbox.set_cursor(consent_cursor_key(SCALE), 2)
    status, detail, fix = await device_check(paths.config, SCALE)
    assert status is Status.FAIL
    assert "refused the consent for user 1 2 time(s) in a row (a wrong consent code)" in detail
    assert f"carehub provision pair {SCALE} --resident r1 --kind scale --user 1 --consent-code NNNN" in fix

    async with open_outbox(config.storage_path) as outbox:
        await outbox.set_cursor(consent_cursor_key(SCALE), 0)  # the scale accepted the consent since
    status, detail, _ = await device_check(paths.config, SCALE)
    assert status is Status.OK
    assert "consent" not in detail
