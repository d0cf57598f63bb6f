"""`carehub doctor` names a meter that keeps refusing the hub (AUTH failures in a row: it lost its bond, or wants the
PIN it shows) with the command that pairs it again (issue 14 item 3; the ``auth:<address>`` cursor the BLE manager
keeps, `gateway.ble.BleManager`)."""

from __future__ import annotations

import json
from pathlib import Path

from test_radio_doctor import hub

from gateway.ble_errors import auth_cursor_key
from gateway.config import DeviceKind, load_config
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status, run_doctor
from gateway.provision.steps import add_device

CUFF = "C0:00:00:00:0A:51"


async def _device_check(config: Path) -> tuple[Status, str, str]:
    checks = {c.name: c for c in await run_doctor(config, broker_limit_s=0.2)}
    check = checks[f"device {CUFF}"]
    return check.status, check.detail, check.fix


async def test_a_meter_refusing_the_hub_fails_its_check_with_the_re_pair_command(tmp_path: Path) -> None:
    paths = hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    paths.reports.mkdir(parents=True, exist_ok=True)
    report = {"finished_at": "2026-12-03T09:00:00+00:00", "devices": [{"address": CUFF, "ok": True, "battery": 90}]}
    (paths.reports / "latest.json").write_text(json.dumps(report), encoding="utf-8")
    storage = load_config(paths.config).storage_path
    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(auth_cursor_key(CUFF), 3)
    status, detail, fix = await _device_check(paths.config)
    assert status is Status.FAIL
    assert "refused the hub 3 time(s) in a row" in detail
    assert f"carehub provision pair {CUFF} --resident r1 --kind blood_pressure" in fix

    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(auth_cursor_key(CUFF), 0)  # a good session since
    status, detail, _ = await _device_check(paths.config)
    assert status is Status.OK
    assert "refused" not in detail
