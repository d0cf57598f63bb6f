"""`carehub doctor` names a meter that keeps refusing the hub (AUTH failures in a row: it lost its bond, or wants the
PIN it shows) with the command that pairs it again (issue 14 item 3; the ``auth:<address>`` cursor the BLE manager
keeps, `gateway.ble.BleManager`)."""

from __future__ import annotations

from pathlib import Path

from hub_files import new_hub
from provision_kit import device_check, write_test_report

from gateway.ble_errors import auth_cursor_key
from gateway.config import DeviceKind, load_config
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status
from gateway.provision.steps import add_device

CUFF = "C0:00:00:00:0A:51"


async def test_a_meter_refusing_the_hub_fails_its_check_with_the_re_pair_command(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    write_test_report(paths, {"address": CUFF, "ok": True, "battery": 90})
    storage = load_config(paths.config).storage_path
    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(auth_cursor_key(CUFF), 3)
    status, detail, fix = await device_check(paths.config, CUFF)
    assert status is Status.FAIL
    assert "refused the hub 3 time(s) in a row" in detail
    assert f"carehub provision pair {CUFF} --resident r1 --kind blood_pressure" in fix

    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(auth_cursor_key(CUFF), 0)  # a good session since
    status, detail, _ = await device_check(paths.config, CUFF)
    assert status is Status.OK
    assert "refused" not in detail
